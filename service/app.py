"""`create_app(settings)`: the FastAPI app, its lifespan and its wiring (HTTP -> batcher -> runtime).

Start-up (the lifespan), for each bundle served (service/served.py: one or several, each under
its name): load and validate the bundle, open the ONNX Runtime session, warm it up, build the
request models of the bundle, start its batcher; only then does /readyz say ready. A bundle that cannot be served stops the start with one error line naming the file
and the problem. SIGTERM under `atomize serve` (service/server.py) first drains: /readyz turns
503 while requests are still served. Shutdown (after uvicorn has stopped accepting connections
and finished those in flight): new requests get 503, the queued items are finished, the batcher
stops.

The OpenAPI document is built from the served bundles and the settings: the request bodies are
the app's own request models (service/schemas.py; with several models, one of each model's), a
numeric model has no /v1/embeddings, and with ATOM_METRICS_PORT /metrics is not on the API port.
SIGHUP (every model's) and POST /v1/models/NAME/bank/reload (one model's) reload the bank (`--bank`
or the bundle's own) without dropping requests: the bank's life cycle is service/banks.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from contract.bank import Bank, BankError, open_bank
from contract.bundle import Bundle, BundleError

from .banks import BankReloads
from .batcher import Batcher, BatchingConfig
from .config import Settings
from .metrics import Metrics, ModelMetrics
from .priority import process_threads, set_priority
from .routes import atomize, bank_map, embeddings, meta, pages
from .routes.deps import ServiceState
from .routes.handlers import install_exception_handlers
from .routes.middleware import RequestContextMiddleware
from .runtime import CPU, DeviceError, Runtime
from .schemas import RequestModels, request_models
from .served import Loaded, Served, ServeSetupError, load_served
from .tracing import Tracing

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


def preloaded(settings: Settings, bundle: Bundle, bank: Bank | None) -> list[Loaded]:
    """An already loaded bundle (one model: tests, `atomize serve` after its own checks)."""
    ref = settings.bundle_refs()[0]
    pin = settings.pinned_digest
    if pin is not None and bundle.digest != pin:
        raise BundleError(bundle.path / "manifest.json", f"bundle digest {bundle.digest} is not the pinned {pin}")
    return [Loaded(ref.name or bundle.manifest.name, bundle, bank if bank is not None else open_bank(bundle, ref.bank),
                   ref.bank)]


def start_runtime(settings: Settings, loaded: Loaded, metrics: ModelMetrics) -> Runtime:
    """Blocking start-up work, run in a thread: open the session, warm up; the threads that the
    session started take the model's nice value (`inference_nice`)."""
    before = process_threads()
    runtime = Runtime(
        loaded.bundle, device=settings.device, precision=settings.precision,
        max_components_per_input=settings.max_components_per_input, metrics=metrics, bank=loaded.bank,
        threads=settings.workers_for(loaded.name)[1],
    )
    runtime.warm_up()
    priority = settings.nice_for(loaded.name)
    if priority:
        started = process_threads() - before - {threading.get_native_id()}
        log.info("model %s: %d ONNX Runtime threads at %s", loaded.name, set_priority(started, priority),
                 f"nice {priority}" if isinstance(priority, int) else "SCHED_IDLE")
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
    if len(state.served) == 1:
        for model in (state.models.atomize, state.models.embeddings):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        if state.runtime is not None and state.runtime.manifest.input.modality != "text":
            paths.pop("/v1/embeddings", None)
            components.pop("EmbeddingsRequest", None)
    else:
        several_models_bodies(state, components, paths)
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


def several_models_bodies(state: ServiceState, components: dict[str, Any], paths: dict[str, Any]) -> None:
    """With several models, a request body is one of theirs: AtomizeRequest is `oneOf` each served
    model's own (its `model` a required constant, its inputs what that model takes), and so is
    EmbeddingsRequest over the text models (no /v1/embeddings when none is)."""
    choices: dict[str, list[dict[str, str]]] = {"AtomizeRequest": [], "EmbeddingsRequest": []}
    for i, served in enumerate(state.served.values()):
        bodies = [served.models.atomize]
        if served.runtime.manifest.input.modality == "text":
            bodies.append(served.models.embeddings)
        prefix = f"{i}_{re.sub(r'[^A-Za-z0-9._-]', '_', served.name)}."  # the component names OpenAPI allows
        for model in bodies:
            schema = model.model_json_schema(ref_template=f"#/components/schemas/{prefix}{{model}}")
            components.update({prefix + name: sub for name, sub in schema.pop("$defs", {}).items()})
            schema["properties"]["model"] = {"const": served.name, "type": "string",
                                             "description": "the model to run, as GET /v1/models lists it"}
            schema["required"] = [*schema.get("required", []), "model"]
            schema["title"] = f"{model.__name__} for {served.name}"
            components[prefix + model.__name__] = schema
            choices[model.__name__].append({"$ref": f"#/components/schemas/{prefix}{model.__name__}"})
    for name, refs in choices.items():
        components[name] = {"oneOf": refs}
    if not choices["EmbeddingsRequest"]:
        paths.pop("/v1/embeddings", None)
        components.pop("EmbeddingsRequest", None)


def create_app(settings: Settings | None = None, *, bundle: Bundle | None = None,
               bank: Bank | None = None, loaded: list[Loaded] | None = None) -> FastAPI:
    """The service for `settings`; pass the bundles already loaded (`loaded`, from
    service.served.load_served, or one `bundle` and its `bank`) to skip loading them again."""
    settings = settings or Settings()
    metrics = Metrics()
    state = ServiceState(settings=settings, metrics=metrics)
    tracing = Tracing(settings.otlp_endpoint, sample_ratio=settings.otlp_sample_ratio) if settings.otlp_endpoint else None

    async def start(item: Loaded) -> Served:
        model_metrics = metrics.for_model(item.name)
        runtime = await asyncio.to_thread(start_runtime, settings, item, model_metrics)
        manifest = runtime.manifest
        model_metrics.set_info(manifest.name, manifest.version, runtime.provider, runtime.bundle.digest)
        model_metrics.set_bank(len(runtime.bank), runtime.bank.version, runtime.bank.index.spec.kind)
        batcher = Batcher(runtime.run, batching_config(settings, runtime.provider), model_metrics,
                          thread_priority=settings.nice_for(item.name),
                          workers=settings.workers_for(item.name, runtime.provider)[0])
        batcher.start()
        log.info("model %s: %s %s (%s)", item.name, manifest.name, manifest.version, runtime.bundle.digest)
        return Served(item.name, runtime, batcher, models_for(runtime, settings), model_metrics, item.bank_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        switch_interval = sys.getswitchinterval()  # process-wide: given back when the service stops
        sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
        try:
            async with serving_lifespan(app):
                yield
        finally:
            sys.setswitchinterval(switch_interval)

    @asynccontextmanager
    async def serving_lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            items = loaded
            if items is None:
                items = (preloaded(settings, bundle, bank) if bundle is not None
                         else await asyncio.to_thread(load_served, settings))
            state.started["bundle_loaded"] = state.started["bank_loaded"] = True
            for item in items:  # one after the other: each warm-up has the cores to itself
                state.served[item.name] = await start(item)
            state.started["session_warmed_up"] = True
        except (BundleError, BankError, DeviceError, ServeSetupError) as exc:
            log.error("cannot start: %s", exc)
            for served in state.served.values():
                await served.batcher.stop()
            raise
        reloads = state.reloads = BankReloads(settings, list(state.served.values()))
        metrics_server = start_metrics_server(settings, metrics) if settings.metrics_port is not None else None
        state.prepare_pools = {name: ThreadPoolExecutor(settings.prepare_threads, thread_name_prefix=f"atom-prepare-{name}")
                               for name in state.served}
        for served in state.served.values():
            reloads.index_in_background(served)
        log.info("ready: %s at http://%s:%d", ", ".join(state.served), settings.host, settings.port)
        try:
            yield
        finally:
            reloads.close()  # cancels the index builds still running
            state.stopping = True
            await asyncio.gather(*(served.batcher.stop() for served in state.served.values()))
            for pool in state.prepare_pools.values():
                pool.shutdown(wait=False, cancel_futures=True)
            if metrics_server is not None:
                metrics_server.shutdown()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # sends the spans still buffered
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
        tracing=tracing,
        state=state,
        # the serving routes themselves (POST, the `Serving` dependency and nothing else), called past FastAPI's layers
        direct={route.path: route for route in [*atomize.router.routes, *embeddings.router.routes]
                if isinstance(route, APIRoute) and "POST" in route.methods} if settings.direct_routes else None,
    )
    return app
