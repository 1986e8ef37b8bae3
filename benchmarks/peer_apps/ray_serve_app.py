"""Ray Serve peer: all-MiniLM-L6-v2 (its ONNX file) behind Serve's dynamic batching.

One replica holds an ONNX Runtime session (onnx_minilm.OnnxMiniLM). Its HTTP route takes the
OpenAI-shaped body {"input": [texts]} (or one string) and answers
{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}, ...]}.
Every input of a request goes into the @serve.batch queue on its own, so texts from concurrent
requests share forward passes, as Serve's batching guide shows.

Built by build_app() from ray_serve_launch.py (which starts Ray and Serve on 127.0.0.1); the
module must be importable by Ray's workers (the launcher puts this folder on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from onnx_minilm import OnnxMiniLM
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

MODEL_NAME = "all-MiniLM-L6-v2"
# Serve's default (5) would cap every batch at 5 texts: a replica takes no more than
# max_ongoing_requests requests at a time, and each request waits inside the batch queue.
MAX_ONGOING_REQUESTS = 256


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, num_replicas=1)
class MiniLMEmbeddings:
    def __init__(self, model_dir: str, max_batch_size: int, batch_wait_timeout_s: float, intra_op_threads: int):
        self.model = OnnxMiniLM(Path(model_dir), intra_op_threads=intra_op_threads)
        # The decorator's values are defaults; the launcher's settings replace them here.
        self.embed_batch.set_max_batch_size(max_batch_size)
        self.embed_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed_batch(self, texts: list[str]) -> list[list[float]]:
        # Runs inline on the replica's user event loop, as in Serve's batching examples: while a
        # batch computes, new requests wait and form the next batch.
        return self.model.embed(texts).tolist()

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
            inputs = body["input"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected a JSON body {"input": [texts]}'}, status_code=400)
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            return JSONResponse({"error": '"input" must be a string or a non-empty list of strings'}, status_code=400)
        vectors = await asyncio.gather(*(self.embed_batch(text) for text in inputs))
        return JSONResponse(
            {
                "object": "list",
                "model": MODEL_NAME,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            }
        )


def build_app(model_dir: str, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.005, intra_op_threads: int = 0):
    return MiniLMEmbeddings.bind(model_dir, max_batch_size, batch_wait_timeout_s, intra_op_threads)
