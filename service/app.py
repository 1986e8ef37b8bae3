"""`create_app(settings)`: the FastAPI app, its lifespan and its wiring (HTTP -> batcher -> runtime).

Start-up (the lifespan): load and validate the bundle, open the ONNX Runtime session, warm it
up, start the batcher; only then does /readyz say ready. A bundle that cannot be served stops
the start with one error line naming the file and the problem. Shutdown (after uvicorn has
stopped accepting connections and finished those in flight): /readyz turns 503, new requests
get 503, the queued items are finished, the batcher stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .batcher import Batcher, BatchingConfig
from .bundle import Bundle, BundleError, load_bundle
from .config import Settings
from .metrics import Metrics
from .routes import atomize, embeddings, explorer, meta
from .routes.deps import ServiceState
from .routes.handlers import install_exception_handlers
from .routes.middleware import RequestContextMiddleware
from .runtime import DeviceError, Runtime

log = logging.getLogger(__name__)


def batching_config(settings: Settings) -> BatchingConfig:
    return BatchingConfig(
        max_batch_items=settings.max_batch_items,
        max_batch_components=settings.max_batch_components,
        max_wait_ms=settings.max_wait_ms,
        max_queue_items=settings.max_queue_items,
    )


def start_runtime(settings: Settings, metrics: Metrics, bundle: Bundle | None, state: ServiceState) -> Runtime:
    """Blocking start-up work, run in a thread: load, validate, open the session, warm up."""
    if bundle is None:
        bundle = load_bundle(settings.bundle)
    state.started["bundle_loaded"] = True
    state.started["bank_loaded"] = True  # load_bundle validated and loaded atoms.npz
    runtime = Runtime(
        bundle, device=settings.device, precision=settings.precision, max_components_per_input=settings.max_components_per_input, metrics=metrics
    )
    runtime.warm_up()
    state.started["session_warmed_up"] = True
    return runtime


def create_app(settings: Settings | None = None, *, bundle: Bundle | None = None) -> FastAPI:
    """The service for `settings`; pass an already loaded `bundle` to skip loading it again."""
    settings = settings or Settings()
    metrics = Metrics()
    state = ServiceState(settings=settings, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = await asyncio.to_thread(start_runtime, settings, metrics, bundle, state)
        except (BundleError, DeviceError) as exc:
            log.error("cannot start: %s", exc)
            raise
        manifest = runtime.manifest
        metrics.model_info.labels(name=manifest.name, version=manifest.version, provider=runtime.provider).set(1)
        metrics.bank_atoms.set(len(runtime.index))
        batcher = Batcher(runtime.run, batching_config(settings), metrics)
        batcher.start()
        state.runtime, state.batcher = runtime, batcher
        log.info("ready: %s %s at http://%s:%d", manifest.name, manifest.version, settings.host, settings.port)
        try:
            yield
        finally:
            state.stopping = True
            await batcher.stop()
            log.info("stopped")

    app = FastAPI(
        title="Atomizer",
        summary="Atomized embeddings: component roles, composition and nearest atoms, over HTTP.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own pages load their assets from a CDN; routes/explorer.py serves them
        redoc_url=None,
    )
    app.state.atom = state
    install_exception_handlers(app, metrics)
    routers = [module.router for module in (atomize, embeddings, meta, explorer)]
    for router in routers:
        app.include_router(router)
    # Known paths label the request metrics; anything else is "other", so label values stay bounded.
    own = [route for router in routers for route in router.routes]
    route_paths = frozenset(route.path for route in [*app.routes, *own] if isinstance(getattr(route, "path", None), str))
    app.add_middleware(
        RequestContextMiddleware,
        max_request_bytes=settings.max_request_bytes,
        metrics=metrics,
        route_paths=route_paths,
    )
    return app
