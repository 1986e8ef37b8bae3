"""Service settings: environment variables with the `ATOM_` prefix, validated once at start-up.

The CLI flags carry the same names (`ATOM_MAX_WAIT_MS` <-> `--max-wait-ms`); a flag given on
the command line wins over the environment, which wins over the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATOM_", frozen=True, extra="forbid")

    bundle: Path = Field(Path("bundles/tweets"), description="model bundle folder (manifest.json, encoder.onnx, ...)")
    bank: Path | None = Field(
        None, description="bank folder from `atomize index` to find neighbours in (default: the bundle's atoms.npz); "
        "reloaded on SIGHUP"
    )
    # Loopback by default: exposing the service is a deliberate choice (a container sets 0.0.0.0).
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")

    # Batching. 32 items x 64 tokens keeps one CPU batch around a few ms for the small encoders
    # this project trains; the component budget stops one long input from padding 31 short ones.
    max_batch_items: int = Field(32, ge=1, le=1024, description="most items in one inference batch")
    max_batch_components: int = Field(
        8192, ge=1, description="padded-component budget of one batch (items x longest item)"
    )
    # 0 = continuous batching: whatever is queued runs as soon as the model is free, and what
    # arrives during a batch forms the next one, so batches grow with load at no cost to a lone
    # request. On CPU a fixed wait only idles the model: with 8 clients in flight, 5 ms never
    # gave more items/s than 0 ms over HTTP (benchmarks/results/serve.md), and 8x fewer in
    # process, without HTTP. A GPU, where a batch of 32 costs about what a batch of 1 does, may
    # gain from 1-2 ms under moderate load.
    max_wait_ms: float = Field(0.0, ge=0.0, le=10_000.0, description="longest wait for a batch to fill")
    max_queue_items: int = Field(2048, ge=1, description="items waiting for inference before 429")

    # Request limits: every one is answered with 413 (or 422 for neighbors) naming the limit.
    max_inputs_per_request: int = Field(256, ge=1, description="inputs in one request")
    max_components_per_input: int = Field(1024, ge=1, description="components (tokens, patches) in one input")
    max_neighbors: int = Field(100, ge=0, description="largest `neighbors` a request may ask for")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body in bytes")
    request_timeout_ms: float = Field(30_000.0, gt=0.0, description="deadline of one request, queueing included")

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when it works, else CPU")
    api_key: SecretStr | None = Field(None, description="when set, /v1/* requires `Authorization: Bearer KEY`")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="logging level")

    @model_validator(mode="after")
    def _request_fits_queue(self) -> "Settings":
        # A request is admitted whole or refused; one larger than the queue could never be admitted.
        if self.max_inputs_per_request > self.max_queue_items:
            raise ValueError(
                f"max_inputs_per_request={self.max_inputs_per_request} exceeds "
                f"max_queue_items={self.max_queue_items}: such a request could never be queued"
            )
        return self

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    @property
    def request_timeout_s(self) -> float:
        return self.request_timeout_ms / 1000.0
