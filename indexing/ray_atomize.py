"""Atomizing on a Ray cluster: Ray Data `map_batches` with one `Atomizer` per actor.

The driver reads the corpus and sends the unfinished shards' records (row position and input
value) as a Ray Dataset; each actor loads the bundle once and atomizes batches; results stream
back to the driver, which writes a shard file as soon as all of its records are back, so an
interrupted run resumes like a local one. Needs the `cluster` extra (`ray[data]`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .atomizer import Atomizer
from .shards import IndexOptions, Shard, write_shard

log = logging.getLogger(__name__)


class AtomizerActor:
    """A Ray Data callable class: one ONNX Runtime session per actor, reused for every batch."""

    def __init__(self, bundle: str, device: str, precision: str, batch_size: int, long: str = "pool"):
        self.atomizer = Atomizer(bundle, device=device, precision=precision, threads=1, batch_size=batch_size)
        self.long = long

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = [value.tolist() if isinstance(value, np.ndarray) else value for value in batch["value"]]
        atoms, problems = self.atomizer.atomize(values, self.long)
        return {"key": batch["key"], "embedding": atoms.embedding, "radius": atoms.radius, "charge": atoms.charge,
                "problem": np.asarray([p or "" for p in problems], dtype=object)}


def atomize_on_ray(shards: Iterable[Shard], shards_dir: Path, options: IndexOptions, precision: str) -> None:
    """`precision`: the copy the driver's own Atomizer chose, so every actor runs the same one."""
    import ray

    pending = {shard.number: shard for shard in shards}
    if not pending:
        return
    items: list[dict[str, Any]] = []
    for shard in pending.values():
        for position, record in enumerate(shard.records):
            value = record.value if record.value is not None else ""  # a bad record: atomized, then refused
            items.append({"key": shard.number * options.shard_rows + position, "value": value})
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.ray_address, num_cpus=None if options.ray_address else options.ray_workers,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        dataset = ray.data.from_items(items).map_batches(
            AtomizerActor, fn_constructor_kwargs={"bundle": str(options.bundle), "device": options.device,
                                                  "precision": precision, "batch_size": options.batch_size,
                                                  "long": options.long},
            batch_size=options.batch_size * 4, concurrency=options.ray_workers, num_cpus=1,
        )
        results: dict[int, dict[str, list]] = {number: {} for number in pending}
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            for key, embedding, radius, charge, problem in zip(batch["key"], batch["embedding"], batch["radius"],
                                                                batch["charge"], batch["problem"]):
                number, position = divmod(int(key), options.shard_rows)
                results[number][position] = (embedding, radius, charge, problem or None)
                shard = pending[number]
                if len(results[number]) == len(shard.records):
                    done = results.pop(number)
                    rows = [done[i] for i in range(len(shard.records))]
                    write_shard(shards_dir / shard.name, shard.records, np.stack([r[0] for r in rows]),
                                np.asarray([r[1] for r in rows], np.float32), np.asarray([r[2] for r in rows], np.float32),
                                [r[3] for r in rows], options)
                    log.info("shard %s written (%d records)", shard.name, len(shard.records))
    finally:
        if started_here:
            ray.shutdown()
