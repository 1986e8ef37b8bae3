"""Service settings: environment variables with the `ATOM_` prefix, validated once at start-up.

The CLI flags carry the same names (`ATOM_MAX_WAIT_MS` <-> `--max-wait-ms`); a flag given on
the command line wins over the environment, which wins over the defaults below.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .priority import IDLE, Priority

# A served model's name: what a request's `model` says (no comma or `=`: they separate the settings' entries).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}")
AUTO_CPU_WORKERS = 3  # inference_workers=0 on a CPU: benchmarks/results/inference_workers.md


@dataclass(frozen=True)
class BundleRef:
    """One bundle to serve: its folder, the name it is served under (None: its manifest's name),
    the digest it is pinned to and the bank it searches (None: its own atoms)."""

    path: Path
    name: str | None = None
    digest: str | None = None
    bank: Path | None = None


def _entries(value: Any) -> tuple[str, ...]:
    """A list setting from a flag given several times, a list, or one comma-separated string (env)."""
    if value is None:
        return ()
    if isinstance(value, (str, Path, int)):
        value = str(value).split(",")
    return tuple(str(part).strip() for part in value if str(part).strip())


def named(entry: str) -> tuple[str | None, str]:
    """`NAME=VALUE` -> (NAME, VALUE); a bare VALUE -> (None, VALUE). A path whose first part holds
    an `=` is read as named only when the part before it is a valid name."""
    name, sep, rest = entry.partition("=")
    if sep and rest and _NAME.fullmatch(name) and "/" not in name:
        return name, rest
    return None, entry


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATOM_", frozen=True, extra="forbid")

    bundle: Annotated[tuple[str, ...], NoDecode] = Field(
        ("bundles/tweets",), description="model bundle folder (manifest.json, encoder.onnx, ...), or NAME=FOLDER to "
        "serve it under NAME; give it several times (env: comma-separated) to serve several models, routed by "
        "the requests' `model`"
    )
    bank: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="bank folder from `atomize index` to find neighbours in (default: the bundle's atoms.npz); "
        "NAME=FOLDER for one of several models; reloaded on SIGHUP"
    )
    bank_search: Literal["auto", "exact"] = Field(
        "auto", description="the bundle's own bank: auto = exact at start, then an IVF index built in the "
        "background when the bank is past the exact-search size; exact = always exact"
    )
    bundle_digest: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="pin: refuse to start unless the bundle has this digest (printed by `atomize export`); "
        "NAME=DIGEST for one of several models"
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
    # On a CPU the model's cost follows the components it computes, padding included: cutting a
    # round of mixed lengths into batches of similar lengths served more items/s than one padded
    # batch (benchmarks/results/batch_padding.md, chosen on the tweets validation split). On a GPU
    # the batch count is what costs, so auto lifts the bound there.
    max_batch_padding: float | None = Field(
        None, ge=0.0, description="padding allowed in a batch, as padded/real components - 1 "
        "(auto: 0.1 on CPU, unbounded on GPU)"
    )
    # A round takes at most this many queued items, oldest first: under a long queue, requests are
    # served in arrival order instead of each waiting behind one long round (p99 at 32 clients x 16
    # inputs: benchmarks/results/peers.md); rounds of 128 cut into batches gave the most items/s
    # in the padding sweep.
    max_round_items: int = Field(128, ge=1, le=1_000_000, description="items taken from the queue per batching round")
    max_wait_ms: float = Field(0.0, ge=0.0, le=10_000.0, description="longest wait for a batch to fill")
    max_queue_items: int = Field(2048, ge=1, description="items waiting for inference before 429")
    # The admission limit (as text-embeddings-inference's --max-concurrent-requests): past it a
    # /v1 request is refused with 429 before its body is even read, so refusing costs nothing.
    max_concurrent_requests: int = Field(512, ge=1, description="/v1 requests in flight before 429")
    # Several models on shared cores: a heavy model given fewer threads leaves cores to the others.
    inference_threads: Annotated[tuple[str, ...], NoDecode] = Field(
        ("0",), description="ONNX Runtime intra-op threads (0 = one per core): N for every model, NAME=N for one of "
        "several models (overrides N)"
    )
    # Batches of one model run at once, the model's threads split among them: on 2 cores, served
    # on validation tweets, 3 workers of one thread each gave 1.2x the items/s of one batch on
    # two threads (benchmarks/results/inference_workers.md).
    inference_workers: int = Field(
        0, ge=0, le=64, description="batches of one model that run at once, its inference threads split evenly among "
        "them, one each at least (0 = auto: 3 on a CPU, no more than the model's inference_threads when given; "
        "1 on CUDA)"
    )
    prepare_threads: int = Field(2, ge=1, le=64, description="threads that parse and tokenize request bodies, per served model")
    # The event loop, the prepare threads and the inference workers share one interpreter lock: a
    # thread that wants it waits until the holder lets go, at the latest after this interval.
    # Python's own 5 ms served the most items/s on validation tweets; 1, 0.5 and 0.2 ms served
    # fewer, the small bundle most of all (benchmarks/results/switch_interval.md).
    switch_interval_ms: float = Field(
        5.0, gt=0.0, le=100.0, description="longest a Python thread holds the interpreter lock while another waits for "
        "it (sys.setswitchinterval, for the whole process while the service runs; Python's default: 5)"
    )
    # The serving routes without the framework's layers: for a small model they cost more CPU than
    # its inference (benchmarks/request_cost.py).
    direct_routes: bool = Field(
        True, description="POST /v1/atomize and /v1/embeddings are called by the outermost middleware itself, "
        "without FastAPI's middleware, routing and dependency layers (same answers and errors, less CPU per request)"
    )
    # Several models on shared cores: a heavy model's inference threads given a higher nice value
    # yield the CPU to the event loop and to a light model's batches whenever those are ready.
    inference_nice: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="OS nice value (0-19) of a model's inference threads (its batch thread and ONNX Runtime's), "
        "or idle (Linux SCHED_IDLE: they run only when no other thread is ready): NAME=VALUE for one of several "
        "models; higher yields the cores to the HTTP layer and the other models"
    )

    # Request limits: every one is answered with 413 (or 422 for neighbors) naming the limit.
    max_inputs_per_request: int = Field(256, ge=1, description="inputs in one request")
    max_components_per_input: int = Field(1024, ge=1, description="components (tokens, patches) in one input")
    max_neighbors: int = Field(100, ge=0, description="largest `neighbors` a request may ask for")
    # A chunked text costs one item per window: the limit keeps one input from filling the queue.
    max_chunks_per_input: int = Field(16, ge=1, le=1024, description="windows of one text read with \"chunk\": true")
    chunk_overlap: int | None = Field(
        None, ge=0, description="tokens shared by neighbouring windows of a chunked text (default: the bundle's)"
    )
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body in bytes")
    request_timeout_ms: float = Field(30_000.0, gt=0.0, description="deadline of one request, queueing included")

    # Connections (under uvicorn): a stalled client must not hold a socket for long.
    max_connections: int = Field(
        2048, ge=1, description="open connections; past it the longest-waiting unfinished request is dropped"
    )
    read_timeout_ms: float = Field(
        15_000.0, gt=0.0, description="time to receive one request's headers and body, after which it is dropped"
    )
    # On SIGTERM /readyz turns 503 at once and requests are still served for drain_ms, so a load
    # balancer stops sending first; then in-flight requests finish and the process exits 0.
    drain_ms: float = Field(5_000.0, ge=0.0, le=600_000.0, description="serving time after SIGTERM, /readyz 503")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve /metrics on this port only (not on the API port)"
    )

    # The HTTP layer under uvicorn: "auto" takes the C parser (httptools) and uvloop when
    # installed (the serve extra installs them), else the pure-Python h11 and asyncio.
    http: Literal["auto", "httptools", "h11"] = Field("auto", description="HTTP/1.1 parser (auto = httptools if installed)")
    loop: Literal["auto", "uvloop", "asyncio"] = Field("auto", description="event loop (auto = uvloop if installed)")

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when it works, else CPU")
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="model copy: auto = fp16 on CUDA, int8 on CPU when the bundle has them, else fp32"
    )
    api_key: SecretStr | None = Field(None, description="when set, /v1/* requires `Authorization: Bearer KEY`")
    otlp_endpoint: str | None = Field(
        None, description="send a trace of every /v1 request over OTLP/HTTP to this URL (e.g. "
        "http://collector:4318/v1/traces; needs the `trace` extra); unset: no tracing"
    )
    otlp_sample_ratio: float = Field(
        1.0, gt=0.0, le=1.0, description="share of /v1 requests traced, by trace id (1 = every request); a "
        "request left out costs what it costs with tracing off"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="logging level")

    @field_validator("bundle", "bank", "bundle_digest", "inference_nice", "inference_threads", mode="before")
    @classmethod
    def _list(cls, value: Any) -> tuple[str, ...]:
        return _entries(value)

    @model_validator(mode="after")
    def _bundles_fit_together(self) -> "Settings":
        if not self.bundle:
            raise ValueError("bundle: give at least one bundle folder")
        names = [name for name, _ in map(named, self.bundle) if name is not None]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"bundle: two bundles under one name ({', '.join(twice)}); give each its own NAME=FOLDER")
        for field in ("bank", "bundle_digest", "inference_nice"):
            for entry in getattr(self, field):
                name, _ = named(entry)
                if name is None and len(self.bundle) > 1:
                    raise ValueError(f"{field}: {entry!r} names no model, and several are served; write NAME={entry}")
        for entry in self.inference_nice:
            value = named(entry)[1]
            if not (value.isdigit() and 0 <= int(value) <= 19) and value != IDLE:
                raise ValueError(f"inference_nice: {entry!r}: the nice value must be a whole number from 0 to 19, "
                                 f"or {IDLE}")
        for entry in self.inference_threads:
            value = named(entry)[1]
            if not (value.isdigit() and 0 <= int(value) <= 1024):
                raise ValueError(f"inference_threads: {entry!r}: the thread count must be a whole number from 0 to 1024")
        return self

    def threads_for(self, name: str) -> int:
        """ONNX Runtime intra-op threads of the model served as `name` (0: one per core): its own
        NAME=N entry, else the bare N that applies to every model."""
        bare = [value for key, value in map(named, self.inference_threads) if key is None]
        value = self._for(self.inference_threads, name, False) or (bare[-1] if bare else "0")
        return int(value)

    def workers_for(self, name: str, provider: str = "CPUExecutionProvider") -> tuple[int, int]:
        """(batches at once, ONNX Runtime intra-op threads of each) for the model served as `name`:
        its threads (`threads_for`, or one per core the process may use) split among the workers."""
        given = self.threads_for(name)
        threads = given or len(os.sched_getaffinity(0))
        if self.inference_workers:
            workers = self.inference_workers
        elif provider != "CPUExecutionProvider":
            workers = 1
        else:  # auto; threads given for the model cap the workers too (one thread each at least)
            workers = min(AUTO_CPU_WORKERS, given) if given else AUTO_CPU_WORKERS
        return workers, max(1, threads // workers)

    def nice_for(self, name: str) -> Priority:
        """The nice value of the model served as `name`'s inference threads (0: unchanged), or IDLE."""
        value = self._for(self.inference_nice, name, len(self.bundle) == 1)
        return 0 if value is None else value if value == IDLE else int(value)

    def bundle_refs(self) -> list[BundleRef]:
        """The bundles to serve, in the order given (the first answers /v1/model without `model`).
        A pin or bank for NAME applies to the bundle given as NAME=FOLDER, or (checked once the
        bundles are loaded) to the one whose manifest says NAME."""
        single = len(self.bundle) == 1
        refs = []
        for entry in self.bundle:
            name, path = named(entry)
            refs.append(BundleRef(Path(path), name, self._for(self.bundle_digest, name, single),
                                  (lambda bank: Path(bank) if bank else None)(self._for(self.bank, name, single))))
        return refs

    @staticmethod
    def _for(entries: tuple[str, ...], name: str | None, single: bool) -> str | None:
        for entry in entries:
            key, value = named(entry)
            if (key is None and single) or (key is not None and key == name):
                return value
        return None

    def for_manifest_name(self, field: str, name: str) -> str | None:
        """A NAME=VALUE entry of `field` ("bank", "bundle_digest") for a bundle served under its manifest's name."""
        return self._for(getattr(self, field), name, False)

    @model_validator(mode="after")
    def _limits_fit_together(self) -> "Settings":
        # A request is admitted whole or refused; one larger than the queue could never be admitted.
        if self.max_inputs_per_request > self.max_queue_items:
            raise ValueError(
                f"max_queue_items={self.max_queue_items} is below max_inputs_per_request="
                f"{self.max_inputs_per_request}: a request of {self.max_inputs_per_request} inputs could never be "
                f"queued. Lower ATOM_MAX_INPUTS_PER_REQUEST (--max-inputs-per-request) to at most "
                f"{self.max_queue_items} as well, or raise ATOM_MAX_QUEUE_ITEMS"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(f"metrics_port={self.metrics_port} is the API port; pick another, or leave it unset")
        return self

    @property
    def pinned_digest(self) -> str | None:
        """The first bundle's pin in the form `sha256:<hex>`, whether or not it was given with the prefix."""
        return pinned(self.bundle_refs()[0].digest)

    @property
    def read_timeout_s(self) -> float:
        return self.read_timeout_ms / 1000.0

    @property
    def drain_s(self) -> float:
        return self.drain_ms / 1000.0

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    @property
    def request_timeout_s(self) -> float:
        return self.request_timeout_ms / 1000.0


def pinned(digest: str | None) -> str | None:
    """A pin in the form `sha256:<hex>`, whether or not it was given with the prefix."""
    if digest is None:
        return None
    return digest if digest.startswith("sha256:") else f"sha256:{digest}"
