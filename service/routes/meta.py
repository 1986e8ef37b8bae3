"""GET /v1/model(s), /healthz, /readyz, /metrics: what is served, and whether it is alive and ready;
POST /v1/models/NAME/bank/reload: one model's bank loaded again."""

from __future__ import annotations

from datetime import datetime

import onnxruntime as ort
from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from ..errors import BankReloadFailed, ModelNotFound
from ..schemas import BankReloaded, Health, ModelCard, ModelInfo, ModelList, Readiness
from ..served import Served
from .deps import Serving, State
from .handlers import MODEL_INFO_ERRORS, error_responses

router = APIRouter(tags=["meta"])


@router.get("/v1/model", response_model=ModelInfo, responses={**MODEL_INFO_ERRORS, **error_responses(ModelNotFound)})
async def model_info(
    serving: Serving,
    model: str = Query("", max_length=128, description="a served model's name (empty: the first served)"),
) -> ModelInfo:
    """Everything about one served model: its bundle, runtime, bank, batching and limits."""
    serving = serving.named(model or None)
    runtime, settings = serving.runtime, serving.settings
    manifest = runtime.manifest
    return ModelInfo(
        id=serving.served.name,
        name=manifest.name,
        version=manifest.version,
        created_at=manifest.created_at,
        digest=runtime.bundle.digest,
        modality=manifest.input.modality,
        input=manifest.input.model_dump(),
        embedding_dim=manifest.embedding_dim,
        role_names=manifest.role_names,
        composition_fields=manifest.composition_fields,
        label_names=manifest.label_names,
        potential=manifest.potential.model_dump(),
        radius_range=manifest.radius_range,
        training=manifest.training.model_dump(),
        precisions=manifest.precisions,
        graph=manifest.graph,
        runtime={
            "device": "cuda" if runtime.provider == "CUDAExecutionProvider" else "cpu",
            "provider": runtime.provider,
            "model_file": runtime.model_file,
            "precision": runtime.precision,
            "batching": "per input" if runtime.per_input else "batched",  # see Runtime.per_input
            "workers": serving.batcher.workers,  # batches that run at once
            "threads_per_worker": runtime.session.get_session_options().intra_op_num_threads,
            "onnxruntime_version": ort.__version__,
        },
        bank=runtime.bank.info,
        batching=serving.batcher.config.described(),
        limits=settings.model_dump(
            include={"max_inputs_per_request", "max_components_per_input", "max_neighbors", "max_request_bytes",
                     "request_timeout_ms"}
        ),
    )


def model_card(served: Served) -> ModelCard:
    manifest = served.runtime.manifest
    created = int(datetime.fromisoformat(manifest.created_at).timestamp())
    return ModelCard(id=served.name, created=created)


@router.get("/v1/models", response_model=ModelList, responses=MODEL_INFO_ERRORS)
async def models(serving: Serving) -> ModelList:
    """The served models as OpenAI's `client.models.list()` reads them, the default one first."""
    return ModelList(data=[model_card(served) for served in serving.choices.values()])


@router.get("/v1/models/{model_id}", response_model=ModelCard,
            responses={**MODEL_INFO_ERRORS, **error_responses(ModelNotFound)})
async def model(model_id: str, serving: Serving) -> ModelCard:
    """One served model (OpenAI's `client.models.retrieve(id)`); 404 for a model not served here."""
    return model_card(serving.named(model_id).served)


@router.post("/v1/models/{model_id}/bank/reload", response_model=BankReloaded,
             responses={**MODEL_INFO_ERRORS, **error_responses(ModelNotFound, BankReloadFailed)})
async def reload_model_bank(model_id: str, serving: Serving, state: State) -> BankReloaded:
    """Load one model's bank again (its `--bank` folder, or the bundle's own atoms) and swap it in, as
    SIGHUP does for every model: requests go on being served from the old bank meanwhile, and a bank
    that fails to load leaves the old one served (500 `bank_reload_failed`, with the reason). Reloads
    of one model run one after the other; a large bundle-own bank's index is built afterwards in the
    background (GET /v1/model shows `bank.index_pending` until then)."""
    served = serving.named(model_id).served
    bank = await state.reloads.reload(served)
    return BankReloaded(model=served.name, atoms=len(bank), version=bank.version, search=bank.index.spec.kind)


@router.get("/healthz", response_model=Health)
async def healthz() -> dict:
    """Alive: the process answers. Says nothing about the model (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "not ready: loading, draining or stopping"}})
async def readyz(state: State) -> JSONResponse:
    """Ready to serve: every bundle and bank loaded, sessions warmed up, batchers running, not
    stopping; `models` says it for each served model."""
    checks = state.checks()
    ready = all(checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks, "models": state.model_checks()},
                        status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(state: State) -> Response:
    """Prometheus text format; with ATOM_METRICS_PORT set, only on that port (404 here)."""
    if state.settings.metrics_port is not None:
        raise HTTPException(404, "Not Found")  # nothing here says where the metrics are
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)
