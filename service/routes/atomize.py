"""POST /v1/atomize: embedding, composition, component roles and nearest bank atoms per input."""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from ..errors import InvalidInput
from ..runtime import InputResult, Item, ItemResult, Runtime
from ..schemas import AtomizeResponse
from .body import parse, request_body
from .deps import Ready, Serving
from .handlers import SERVING_ERRORS

router = APIRouter(prefix="/v1", tags=["atomize"])


def prepare(serving: Ready, raw: bytes) -> tuple[Any, list[list[Item]]]:
    """Parse, validate and tokenize one request for the model it names (in a worker thread): each
    input's items, one unless the input is a chunked text."""
    settings, runtime, models = serving.settings, serving.runtime, serving.models
    body: Any = parse(models.atomize, raw, max_inputs=settings.max_inputs_per_request,
                      max_neighbors=settings.max_neighbors, model_name=runtime.manifest.name,
                      input_words=models.input_words)
    serving.check_model(body.model)
    wanted = body.neighbors if "neighbors" in body.include else 0
    if body.chunk:  # the windows ask for no neighbours: the pooled atom is searched (`answers`)
        return body, runtime.prepare_windows(body.inputs, overlap=settings.chunk_overlap,
                                             max_chunks=settings.max_chunks_per_input)
    items = runtime.prepare(body.inputs, neighbors=wanted, rank_by=body.rank_by, truncate=body.truncate)
    return body, [[item] for item in items]


async def received(request: Request, serving: Ready, prepare: Callable[[Ready, bytes], tuple[Any, list[list[Item]]]]
                   ) -> tuple[Ready, Any, list[list[Item]]]:
    """A request's body read, routed to the model it names and prepared off the event loop (a full
    queue refuses it before its body is read): the model's serving state, the body, the items."""
    serving.refuse_before_reading()
    parsing = time.time_ns()
    raw = await request.body()
    serving = await serving.routed(raw)
    body, groups = await serving.off_loop(prepare, serving, raw)
    if serving.trace is not None:
        serving.trace.parsed(parsing, serving.served.name)
    return serving, body, groups


async def answers(serving: Ready, groups: list[list[Item]], field: str, chunked: bool, neighbors: int = 0,
                  rank_by: Any = "distance") -> list[InputResult]:
    """Each input's answer: its items through the batcher with every other request's, then, for
    chunked inputs, the windows pooled and the pooled atoms searched (off the event loop)."""
    runtime, trace = serving.runtime, serving.trace
    items = [item for group in groups for item in group]
    submitted = time.time_ns()
    results = await serving.batcher.submit(items, serving.deadline)
    if trace is not None:
        trace.batches(submitted, (result.timing for result in results))
    refuse_non_finite(results, field, runtime.manifest.name)
    if not chunked:
        return [runtime.one(item, result) for item, result in zip(items, results)]
    it = iter(zip(items, results))
    windows = [[next(it) for _ in group] for group in groups]

    def pooled() -> list[InputResult]:
        return runtime.search([runtime.pool(w) for w in windows], [neighbors] * len(windows), rank_by)

    started = time.time_ns()
    answered = await serving.off_loop(pooled)
    if trace is not None:
        trace.child("pool_and_search", started, time.time_ns(), **{"atom.inputs": len(windows)})
    return answered


@router.post("/atomize", response_model=AtomizeResponse, responses=SERVING_ERRORS,
             openapi_extra=request_body("AtomizeRequest"))
async def atomize(request: Request, serving: Serving) -> Response:
    serving, body, groups = await received(request, serving, prepare)
    wanted = body.neighbors if "neighbors" in body.include else 0
    results = await answers(serving, groups, "inputs", body.chunk, wanted, body.rank_by)
    include = set(body.include)
    content = {
        "model": serving.runtime.manifest.name,
        "results": [render(i, result, include, serving.runtime) for i, result in enumerate(results)],
        # real components only: a backbone's [CLS] / [SEP] are attended to but are no components
        "usage": {"components": sum(len(result.components) for result in results)},
    }
    # Built as plain lists and serialised by pydantic-core: re-validating large float arrays
    # through the response model would cost more than the inference. Tests validate the shape.
    return Response(to_json(content), media_type="application/json")


def refuse_non_finite(results: list[ItemResult], field: str, model_name: str) -> None:
    """A result with NaN/Inf comes from an input the model's float32 arithmetic cannot take: 422."""
    for i, result in enumerate(results):
        if not result.finite:
            raise InvalidInput(f"{field}[{i}] gives a result that is not finite: its values are too large "
                               f"for model {model_name}")


def render(index: int, result: InputResult, include: set[str], runtime: Runtime) -> dict:
    manifest = runtime.manifest
    fields = manifest.composition_fields
    out: dict = {"index": index, "truncated": result.truncated}
    if "embedding" in include:
        out["embedding"] = result.embedding.tolist()
    if "composition" in include:
        out["composition"] = dict(zip(fields, result.composition.tolist()))
    if "components" in include:
        tokens = runtime.token_strings(result.components)
        roles = result.roles.tolist()
        best = result.roles.argmax(axis=1).tolist()
        spans = [None] * len(roles) if result.offsets is None else result.offsets.tolist()
        components = []
        for j, (probabilities, role, span) in enumerate(zip(roles, best, spans)):
            component: dict = {"index": j} if tokens is None else {"index": j, "token": tokens[j]}
            component["role"] = manifest.role_names[role]
            component["probabilities"] = dict(zip(manifest.role_names, probabilities))
            if span is not None:
                component["start"], component["end"] = span
            components.append(component)
        out["components"] = components
    if "neighbors" in include:
        found = result.neighbors
        out["neighbors"] = [
            {**result.bank.describe(row), "distance": distance, "energy": energy}
            for row, distance, energy in zip(found.rows.tolist(), found.distance.tolist(), found.energy.tolist())
        ]
    if "chunks" in include and (len(result.windows) > 1 or result.windows[0][0].span is not None):
        energies = [*result.bonds.tolist(), None]
        out["chunks"] = []
        for j, ((item, window), energy) in enumerate(zip(result.windows, energies)):
            chunk = {"index": j, "start": item.span[0], "end": item.span[1],
                     "components": len(runtime.component_positions(item))}
            if "embedding" in include:
                chunk["embedding"] = window.embedding.tolist()
            chunk["composition"] = dict(zip(fields, window.composition.tolist()))
            chunk["energy_with_next"] = energy
            out["chunks"].append(chunk)
    return out
