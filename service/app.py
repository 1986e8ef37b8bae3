"""`create_app(settings)`: the FastAPI app, its lifespan and its wiring (HTTP -> batcher -> runtime).

Start-up (the lifespan): load and validate the bundle, open the ONNX Runtime session, warm it
up, build the request models of the served bundle, start the batcher; only then does /readyz
say ready. A bundle that cannot be served stops the start with one error line naming the file
and the problem. SIGTERM under `atomize serve` (service/server.py) first drains: /readyz turns
503 while requests are still served. Shutdown (after uvicorn has stopped accepting connections
and finished those in flight): new requests get 503, the queued items are finished, the batcher
stops.

The OpenAPI document is built from the served bundle and the settings: the request bodies are
the app's own request models (service/schemas.py), a numeric model has no /v1/embeddings, and
with ATOM_METRICS_PORT /metrics is not on the API port.
SIGHUP reloads the bank (`--bank` or the bundle's own) without dropping requests: the bank's
life cycle is service/banks.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from contract.bank import Bank, BankError, open_bank
from contract.bundle import Bundle, BundleError, load_bundle

from .banks import ReloadOnSighup, index_own_bank, own_bank_pending
from .batcher import Batcher, BatchingConfig
from .config import Settings
from .metrics import Metrics
from .routes import atomize, bank_map, embeddings, meta, pages
from .routes.deps import ServiceState
from .routes.handlers import install_exception_handlers
from .routes.middleware import RequestContextMiddleware
from .runtime import CPU, DeviceError, Runtime
from .schemas import RequestModels, request_models

log = logging.getLogger(__name__)


CPU_BATCH_PADDING = 0.1  # auto on CPU; benchmarks/results/batch_padding.md


def batching_config(settings: Settings, provider: str = CPU) -> BatchingConfig:
    padding = settings.max_batch_padding
    if padding is None:  # auto: bounded where compute follows padded components (CPU), not on a GPU
        padding = CPU_BATCH_PADDING if provider == CPU else float("inf")
    return BatchingConfig(
        max_batch_items=settings.max_batch_items,
        max_batch_components=settings.max_batch_components,
        max_wait_ms=settings.max_wait_ms,
        max_queue_items=settings.max_queue_items,
        max_batch_padding=padding,
        max_round_items=settings.max_round_items,
    )


def start_runtime(settings: Settings, metrics: Metrics, bundle: Bundle | None, bank: Bank | None,
                  state: ServiceState) -> Runtime:
    """Blocking start-up work, run in a thread: load, validate, open the session, warm up."""
    if bundle is None:
        bundle = load_bundle(settings.bundle, digest=settings.pinned_digest)
    elif settings.pinned_digest is not None and bundle.digest != settings.pinned_digest:
        raise BundleError(bundle.path / "manifest.json",
                          f"bundle digest {bundle.digest} is not the pinned {settings.pinned_digest}")
    state.started["bundle_loaded"] = True
    if bank is None:
        bank = open_bank(bundle, settings.bank)
    state.started["bank_loaded"] = True
    runtime = Runtime(
        bundle, device=settings.device, precision=settings.precision,
        max_components_per_input=settings.max_components_per_input, metrics=metrics, bank=bank,
        threads=settings.inference_threads,
    )
    runtime.warm_up()
    state.started["session_warmed_up"] = True
    return runtime


def models_for(runtime: Runtime, settings: Settings) -> RequestModels:
    spec = runtime.manifest.input
    return request_models(
        runtime.manifest,
        max_inputs=settings.max_inputs_per_request,
        max_components=min(spec.max_components, settings.max_components_per_input),
        max_neighbors=settings.max_neighbors,
        max_text_chars=settings.max_request_bytes,  # a character is at least one byte of the body
    )


def start_metrics_server(settings: Settings, metrics: Metrics) -> Any:
    """/metrics alone on ATOM_METRICS_PORT (prometheus-client's own small HTTP server, in a thread)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    log.info("metrics at http://%s:%d/metrics", settings.host, settings.metrics_port)
    return server


def openapi_document(app: FastAPI, state: ServiceState) -> dict[str, Any]:
    """FastAPI's document, with the request bodies of the served bundle and only its routes."""
    if app.openapi_schema is not None and state.models is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    paths = document["paths"]
    if state.models is None:  # not loaded yet: say only that a JSON object is expected
        components.update(AtomizeRequest={"type": "object"}, EmbeddingsRequest={"type": "object"})
        return document
    for model in (state.models.atomize, state.models.embeddings):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    if state.runtime is not None and state.runtime.manifest.input.modality != "text":
        paths.pop("/v1/embeddings", None)
        components.pop("EmbeddingsRequest", None)
    if state.settings.metrics_port is not None:
        paths.pop("/metrics", None)
    if state.settings.api_key is not None:
        components_root = document["components"]
        components_root["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in paths.items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
    app.openapi_schema = document
    return document


def create_app(settings: Settings | None = None, *, bundle: Bundle | None = None,
               bank: Bank | None = None) -> FastAPI:
    """The service for `settings`; pass an already loaded `bundle` (and `bank`) to skip loading again."""
    settings = settings or Settings()
    metrics = Metrics()
    state = ServiceState(settings=settings, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = await asyncio.to_thread(start_runtime, settings, metrics, bundle, bank, state)
        except (BundleError, BankError, DeviceError) as exc:
            log.error("cannot start: %s", exc)
            raise
        manifest = runtime.manifest
        metrics.model_info.labels(name=manifest.name, version=manifest.version, provider=runtime.provider,
                                  digest=runtime.bundle.digest).set(1)
        metrics.set_bank(len(runtime.bank), runtime.bank.version, runtime.bank.index.spec.kind)
        reloads = ReloadOnSighup(settings, runtime, metrics)
        metrics_server = start_metrics_server(settings, metrics) if settings.metrics_port is not None else None
        batcher = Batcher(runtime.run, batching_config(settings, runtime.provider), metrics)
        batcher.start()
        state.prepare_pool = ThreadPoolExecutor(settings.prepare_threads, thread_name_prefix="atom-prepare")
        state.models = models_for(runtime, settings)
        state.runtime, state.batcher = runtime, batcher
        job = own_bank_pending(runtime) if settings.bank_search == "auto" else None
        indexing = asyncio.get_running_loop().create_task(index_own_bank(runtime, metrics, job)) if job else None
        log.info("ready: %s %s (%s) at http://%s:%d", manifest.name, manifest.version, runtime.bundle.digest,
                 settings.host, settings.port)
        try:
            yield
        finally:
            reloads.close()
            if indexing is not None:
                indexing.cancel()
            state.stopping = True
            await batcher.stop()
            state.prepare_pool.shutdown(wait=False, cancel_futures=True)
            if metrics_server is not None:
                metrics_server.shutdown()
            log.info("stopped")

    app = FastAPI(
        title="Atomizer",
        summary="Atomized embeddings: component roles, composition and nearest atoms, over HTTP.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own pages load their assets from a CDN; routes/pages.py serves them
        redoc_url=None,
    )
    app.state.atom = state
    app.openapi = lambda: openapi_document(app, state)  # type: ignore[method-assign]
    install_exception_handlers(app, metrics)
    routers = [module.router for module in (atomize, embeddings, meta, bank_map, pages)]
    for router in routers:
        app.include_router(router)
    # Known paths label the request metrics; anything else is "other", so label values stay bounded.
    own = [route for router in routers for route in router.routes]
    route_paths = frozenset(route.path for route in [*app.routes, *own] if isinstance(getattr(route, "path", None), str))
    app.add_middleware(
        RequestContextMiddleware,
        max_request_bytes=settings.max_request_bytes,
        max_concurrent_requests=settings.max_concurrent_requests,
        metrics=metrics,
        route_paths=route_paths,
        draining=lambda: state.draining or state.closing,
    )
    return app
