"""POST /v1/atomize: embedding, composition, component roles and nearest bank atoms per input."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic_core import to_json

from ..errors import InvalidInput
from ..runtime import Item, ItemResult, Runtime
from ..schemas import AtomizeRequest, AtomizeResponse
from .deps import Serving, check_input_count
from .handlers import ERROR_RESPONSES

router = APIRouter(prefix="/v1", tags=["atomize"])


@router.post("/atomize", response_model=AtomizeResponse, responses=ERROR_RESPONSES)
async def atomize(body: AtomizeRequest, serving: Serving) -> Response:
    settings = serving.settings
    check_input_count(len(body.inputs), settings.max_inputs_per_request, "inputs")
    if body.neighbors > settings.max_neighbors:
        raise InvalidInput(f"neighbors={body.neighbors} is more than max_neighbors={settings.max_neighbors}")
    include = set(body.include)
    wanted = body.neighbors if "neighbors" in include else 0
    items = serving.runtime.prepare(body.inputs, neighbors=wanted, rank_by=body.rank_by)
    results = await serving.batcher.submit(items, serving.deadline)
    content = {
        "model": serving.runtime.manifest.name,
        "results": [render(i, item, result, include, serving.runtime) for i, (item, result) in enumerate(zip(items, results))],
        "usage": {"components": sum(item.length for item in items)},
    }
    # Built as plain lists and serialised by pydantic-core: re-validating large float arrays
    # through the response model would cost more than the inference. Tests validate the shape.
    return Response(to_json(content), media_type="application/json")


def render(index: int, item: Item, result: ItemResult, include: set[str], runtime: Runtime) -> dict:
    manifest = runtime.manifest
    out: dict = {"index": index}
    if "embedding" in include:
        out["embedding"] = result.embedding.tolist()
    if "composition" in include:
        out["composition"] = dict(zip(manifest.composition_fields, result.composition.tolist()))
    if "components" in include:
        tokens = runtime.token_strings(item)
        roles = result.roles.tolist()
        best = result.roles.argmax(axis=1).tolist()
        components = []
        for j, (probabilities, role) in enumerate(zip(roles, best)):
            component: dict = {"index": j} if tokens is None else {"index": j, "token": tokens[j]}
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
