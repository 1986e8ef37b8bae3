"""POST /v1/atomize: embedding, composition, component roles and nearest bank atoms per input."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from ..errors import InvalidInput
from ..runtime import Item, ItemResult, Runtime
from ..schemas import AtomizeResponse
from .body import parse, request_body
from .deps import Ready, Serving
from .handlers import SERVING_ERRORS

router = APIRouter(prefix="/v1", tags=["atomize"])


def prepare(serving: Ready, raw: bytes) -> tuple[Any, list[Item]]:
    """Parse, validate and tokenize one request (in a worker thread)."""
    settings, runtime, models = serving.settings, serving.runtime, serving.models
    body: Any = parse(models.atomize, raw, max_inputs=settings.max_inputs_per_request,
                      max_neighbors=settings.max_neighbors, model_name=runtime.manifest.name,
                      input_words=models.input_words)
    wanted = body.neighbors if "neighbors" in body.include else 0
    items = runtime.prepare(body.inputs, neighbors=wanted, rank_by=body.rank_by, truncate=body.truncate)
    return body, items


@router.post("/atomize", response_model=AtomizeResponse, responses=SERVING_ERRORS,
             openapi_extra=request_body("AtomizeRequest"))
async def atomize(request: Request, serving: Serving) -> Response:
    serving.refuse_if_queue_full()
    body, items = await serving.off_loop(prepare, serving, await request.body())
    results = await serving.batcher.submit(items, serving.deadline)
    refuse_non_finite(results, "inputs", serving.runtime.manifest.name)
    include = set(body.include)
    content = {
        "model": serving.runtime.manifest.name,
        "results": [render(i, item, result, include, serving.runtime) for i, (item, result) in enumerate(zip(items, results))],
        # real components only: a backbone's [CLS] / [SEP] are attended to but are no components
        "usage": {"components": sum(len(serving.runtime.component_positions(item)) for item in items)},
    }
    # Built as plain lists and serialised by pydantic-core: re-validating large float arrays
    # through the response model would cost more than the inference. Tests validate the shape.
    return Response(to_json(content), media_type="application/json")


def refuse_non_finite(results: list[ItemResult], field: str, model_name: str) -> None:
    """A result with NaN/Inf comes from an input the model's float32 arithmetic cannot take: 422."""
    for i, result in enumerate(results):
        if not all(np.isfinite(part).all() for part in (result.embedding, result.composition, result.roles)):
            raise InvalidInput(f"{field}[{i}] gives a result that is not finite: its values are too large "
                               f"for model {model_name}")


def render(index: int, item: Item, result: ItemResult, include: set[str], runtime: Runtime) -> dict:
    manifest = runtime.manifest
    out: dict = {"index": index, "truncated": item.truncated}
    if "embedding" in include:
        out["embedding"] = result.embedding.tolist()
    if "composition" in include:
        out["composition"] = dict(zip(manifest.composition_fields, result.composition.tolist()))
    if "components" in include:
        tokens = runtime.token_strings(item)
        real = runtime.component_positions(item)  # [CLS]/[SEP] of a backbone are no components
        roles = result.roles[real].tolist()
        best = result.roles[real].argmax(axis=1).tolist()
        components = []
        for j, (position, probabilities, role) in enumerate(zip(real, roles, best)):
            component: dict = {"index": j} if tokens is None else {"index": j, "token": tokens[position]}
            component["role"] = manifest.role_names[role]
            component["probabilities"] = dict(zip(manifest.role_names, probabilities))
            components.append(component)
        out["components"] = components
    if "neighbors" in include:
        found = result.neighbors
        out["neighbors"] = [
            {**result.bank.describe(row), "distance": distance, "energy": energy}
            for row, distance, energy in zip(found.rows.tolist(), found.distance.tolist(), found.energy.tolist())
        ]
    return out
