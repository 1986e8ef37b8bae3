"""Prometheus metrics of one app, in its own registry (several apps can live in one process).

The names are a contract with the Grafana dashboard in `deploy/`: do not rename. Each layer
records what it knows: the HTTP layer requests and failures, the batcher queue and batch sizes,
the runtime inference and neighbor-search time. Every series carries a `model` label, the name a
request's `model` takes (several bundles can be served side by side): each served model's
batcher, runtime and bank record through their own `ModelMetrics`, and a request's own series
take the model it was routed to ("" before it is known, or for routes that serve no model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import FAILURE_REASONS

# Latency buckets from 0.5 ms (one tiny CPU batch) to 30 s (the default request deadline).
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_ITEM_BUCKETS = tuple(float(2**i) for i in range(11))  # 1, 2, 4, ..., 1024
PADDED_COMPONENT_BUCKETS = tuple(float(2**i) for i in range(4, 19))  # 16 ... 262144


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("atom_requests_total", "HTTP requests by route and status", ["route", "status", "model"], registry=r)
        self.request_duration = Histogram(
            "atom_request_duration_seconds", "HTTP request duration", ["route", "model"], buckets=SECONDS_BUCKETS, registry=r
        )
        self.failures = Counter("atom_failures_total", "failed requests by reason", ["reason", "model"], registry=r)
        for reason in FAILURE_REASONS:  # present at 0, so rate() works from the first scrape
            self.failures.labels(reason=reason, model="")
        self.queue_items = Gauge("atom_queue_items", "items accepted and not yet in a running batch", ["model"], registry=r)
        self.queue_wait = Histogram(
            "atom_queue_wait_seconds", "time from enqueue to batch start, per item", ["model"], buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_items = Histogram("atom_batch_items", "items per batch", ["model"], buckets=BATCH_ITEM_BUCKETS, registry=r)
        self.round_items = Histogram(
            "atom_round_items", "items taken from the queue per batching round (then cut into batches)", ["model"],
            buckets=BATCH_ITEM_BUCKETS, registry=r,
        )
        self.batch_padded_components = Histogram(
            "atom_batch_padded_components",
            "batch size x longest item, the components the model computes", ["model"],
            buckets=PADDED_COMPONENT_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "atom_inference_seconds", "ONNX Runtime time per batch", ["model"], buckets=SECONDS_BUCKETS, registry=r
        )
        self.neighbor_search = Histogram(
            "atom_neighbor_search_seconds", "nearest-atom search time per batch", ["model"], buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.items_atomized = Counter("atom_items_atomized_total", "items run through the model", ["model"], registry=r)
        self.chunks = Counter("atom_chunks_total", "windows of long texts read whole (\"chunk\": true), each "
                              "also counted as an item", ["model"], registry=r)
        self.model_info = Gauge(
            "atom_model_info", "a served model (value 1), with its bundle digest",
            ["model", "name", "version", "provider", "digest"], registry=r,
        )
        self.bank_atoms = Gauge("atom_bank_atoms", "atoms in the reference bank", ["model"], registry=r)
        self.bank_info = Gauge(
            "atom_bank_info", "the served bank (value 1): version = sha256 prefix of its atoms",
            ["model", "version", "index"], registry=r,
        )
        self.bank_reloads = Counter("atom_bank_reloads_total", "bank reloads (SIGHUP) by result", ["model", "result"],
                                    registry=r)

    def for_model(self, model: str) -> "ModelMetrics":
        """The series of one served model, created at once (at 0: rate() works from the first scrape)."""
        for reason in FAILURE_REASONS:
            self.failures.labels(reason=reason, model=model)
        for result in ("ok", "failed"):
            self.bank_reloads.labels(model=model, result=result)
        bound = {name: getattr(self, name).labels(model=model) for name in ModelMetrics.BOUND}
        return ModelMetrics(model=model, parent=self, **bound)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class ModelMetrics:
    """One served model's series (the parent's metrics with `model` bound): what its batcher,
    runtime and bank life cycle record into."""

    BOUND = ("queue_items", "queue_wait", "batch_items", "round_items", "batch_padded_components", "inference",
             "neighbor_search", "items_atomized", "chunks", "bank_atoms")

    model: str
    parent: Metrics
    queue_items: Any
    queue_wait: Any
    batch_items: Any
    round_items: Any
    batch_padded_components: Any
    inference: Any
    neighbor_search: Any
    items_atomized: Any
    chunks: Any
    bank_atoms: Any

    bank_labels: tuple[str, str, str] | None = None  # (model, version, index) of the bank served now

    def set_bank(self, atoms: int, version: str, index: str) -> None:
        """The bank gauges for a newly served bank (the old version's series is removed)."""
        self.bank_atoms.set(atoms)
        if self.bank_labels is not None:
            self.parent.bank_info.remove(*self.bank_labels)
        self.bank_labels = (self.model, version, index)
        self.parent.bank_info.labels(*self.bank_labels).set(1)

    def bank_reloaded(self, ok: bool) -> None:
        self.parent.bank_reloads.labels(model=self.model, result="ok" if ok else "failed").inc()

    def set_info(self, name: str, version: str, provider: str, digest: str) -> None:
        self.parent.model_info.labels(model=self.model, name=name, version=version, provider=provider, digest=digest).set(1)
