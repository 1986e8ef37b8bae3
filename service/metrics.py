"""Prometheus metrics of one app, in its own registry (several apps can live in one process).

The names are a contract with the Grafana dashboard in `deploy/`: do not rename. Each layer
records what it knows: the HTTP layer requests and failures, the batcher queue and batch sizes,
the runtime inference and neighbor-search time.
"""

from __future__ import annotations

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
        self.requests = Counter("atom_requests_total", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.request_duration = Histogram(
            "atom_request_duration_seconds", "HTTP request duration", ["route"], buckets=SECONDS_BUCKETS, registry=r
        )
        self.failures = Counter("atom_failures_total", "failed requests by reason", ["reason"], registry=r)
        for reason in FAILURE_REASONS:  # present at 0, so rate() works from the first scrape
            self.failures.labels(reason=reason)
        self.queue_items = Gauge("atom_queue_items", "items accepted and not yet in a running batch", registry=r)
        self.queue_wait = Histogram(
            "atom_queue_wait_seconds", "time from enqueue to batch start, per item", buckets=SECONDS_BUCKETS, registry=r
        )
        self.batch_items = Histogram("atom_batch_items", "items per batch", buckets=BATCH_ITEM_BUCKETS, registry=r)
        self.round_items = Histogram(
            "atom_round_items", "items taken from the queue per batching round (then cut into batches)",
            buckets=BATCH_ITEM_BUCKETS, registry=r,
        )
        self.batch_padded_components = Histogram(
            "atom_batch_padded_components",
            "batch size x longest item, the components the model computes",
            buckets=PADDED_COMPONENT_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "atom_inference_seconds", "ONNX Runtime time per batch", buckets=SECONDS_BUCKETS, registry=r
        )
        self.neighbor_search = Histogram(
            "atom_neighbor_search_seconds", "nearest-atom search time per batch", buckets=SECONDS_BUCKETS, registry=r
        )
        self.items_atomized = Counter("atom_items_atomized_total", "items run through the model", registry=r)
        self.chunks = Counter("atom_chunks_total", "windows of long texts read whole (\"chunk\": true), each "
                              "also counted as an item", registry=r)
        self.model_info = Gauge(
            "atom_model_info", "the served model (value 1), with its bundle digest",
            ["name", "version", "provider", "digest"], registry=r,
        )
        self.bank_atoms = Gauge("atom_bank_atoms", "atoms in the reference bank", registry=r)
        self.bank_info = Gauge(
            "atom_bank_info", "the served bank (value 1): version = sha256 prefix of its atoms", ["version", "index"],
            registry=r,
        )
        self.bank_reloads = Counter("atom_bank_reloads_total", "bank reloads (SIGHUP) by result", ["result"], registry=r)
        for result in ("ok", "failed"):
            self.bank_reloads.labels(result=result)

    def set_bank(self, atoms: int, version: str, index: str) -> None:
        """The bank gauges for a newly served bank (the old version's series is removed)."""
        self.bank_atoms.set(atoms)
        self.bank_info.clear()
        self.bank_info.labels(version=version, index=index).set(1)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
