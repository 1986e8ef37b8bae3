"""POST /v1/embeddings: the OpenAI embeddings API, so existing clients work unchanged."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Response
from pydantic_core import to_json

from ..errors import InvalidInput
from ..schemas import EmbeddingsRequest, EmbeddingsResponse
from .deps import Serving, check_input_count
from .handlers import ERROR_RESPONSES

router = APIRouter(prefix="/v1", tags=["embeddings"])


def encode(embedding: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the openai client asks for by default
        return base64.b64encode(embedding.astype("<f4").tobytes()).decode("ascii")
    return embedding.tolist()


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=ERROR_RESPONSES)
async def embeddings(body: EmbeddingsRequest, serving: Serving) -> Response:
    runtime = serving.runtime
    manifest = runtime.manifest
    if manifest.input.modality != "text":
        raise InvalidInput(
            f"/v1/embeddings takes text, and model {manifest.name} is numeric: send arrays to /v1/atomize"
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidInput("input: must not be empty")
    check_input_count(len(texts), serving.settings.max_inputs_per_request, "input")
    if body.dimensions is not None and body.dimensions != manifest.embedding_dim:
        raise InvalidInput(f"dimensions={body.dimensions}: model {manifest.name} has {manifest.embedding_dim}")
    items = runtime.prepare(texts, field="input")
    results = await serving.batcher.submit(items, serving.deadline)
    tokens = sum(item.length for item in items)
    content = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(result.embedding, body.encoding_format)}
            for i, result in enumerate(results)
        ],
        "model": manifest.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(to_json(content), media_type="application/json")
