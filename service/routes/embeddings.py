"""POST /v1/embeddings: the OpenAI embeddings API, so existing clients work unchanged."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from ..errors import InvalidInput
from ..runtime import Item, Runtime
from ..schemas import EmbeddingsResponse
from .atomize import answers, received
from .body import parse, request_body
from .deps import Ready, Serving
from .handlers import SERVING_ERRORS

router = APIRouter(prefix="/v1", tags=["embeddings"])


def encode(embedding: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the openai client asks for by default
        return base64.b64encode(embedding.astype("<f4").tobytes()).decode("ascii")
    return embedding.tolist()


def prepare(serving: Ready, raw: bytes) -> tuple[Any, list[list[Item]]]:
    """Parse, validate and tokenize one request for the model it names (in a worker thread): each
    text's items."""
    settings, runtime, models = serving.settings, serving.runtime, serving.models
    check_text(runtime)
    body: Any = parse(models.embeddings, raw, max_inputs=settings.max_inputs_per_request,
                      max_neighbors=settings.max_neighbors, model_name=runtime.manifest.name,
                      input_words=models.input_words)
    serving.check_model(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if body.chunk:
        return body, runtime.prepare_windows(texts, field="input", overlap=settings.chunk_overlap,
                                             max_chunks=settings.max_chunks_per_input)
    return body, [[item] for item in runtime.prepare(texts, field="input", truncate=body.truncate)]


def check_text(runtime: Runtime) -> None:
    manifest = runtime.manifest
    if manifest.input.modality != "text":  # this route is left out of a numeric model's OpenAPI document
        raise InvalidInput(
            f"/v1/embeddings takes text, and model {manifest.name} is numeric: send arrays to /v1/atomize"
        )


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=SERVING_ERRORS,
             openapi_extra=request_body("EmbeddingsRequest"))
async def embeddings(request: Request, serving: Serving) -> Response:
    if len(serving.choices) == 1:  # with several, once the request names its model (`prepare`)
        check_text(serving.runtime)
    serving, body, groups = await received(request, serving, prepare)
    manifest = serving.runtime.manifest
    results = await answers(serving, groups, "input", body.chunk)
    tokens = sum(item.length for group in groups for item in group)  # what the model read, windows' overlaps too
    content = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(result.embedding, body.encoding_format),
             "truncated": result.truncated}
            for i, result in enumerate(results)
        ],
        "model": manifest.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(to_json(content), media_type="application/json")
