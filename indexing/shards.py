"""The resumable unit of `atomize index`: a shard of `shard_rows` corpus records, written to
`OUT/shards/NNNNN.npz` through a temporary name (a shard file is always whole) as soon as its
atoms are back, locally or from Ray.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import CorpusError, Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexOptions:
    bundle: Path
    input: Path
    out: Path
    input_column: str | None = None
    id_column: str | None = None
    label_column: str | None = None
    skip_bad_rows: bool = False  # False: the first bad row stops the run, naming the row
    index_kind: str = "auto"  # auto, flat, hnsw or ivf (contract/index.py)
    batch_size: int = 64
    shard_rows: int = 4096
    device: str = "cpu"
    precision: str = "auto"  # the copy that atomizes: auto = the one the service runs on this device
    # a text past the model's length: "pool" reads it whole in windows pooled into one atom (the
    # service's "chunk": true), "chunks" keeps one atom per window (id "<id>#<j>", metadata with the
    # document's id and the window's character span), "truncate" cuts it (the service's default)
    long: str = "pool"
    ray: bool = False
    ray_address: str | None = None  # None with ray=True: a local Ray instance
    ray_workers: int = 2  # Atomizer actors
    progress: bool = True


@dataclass
class Shard:
    number: int
    records: list[Record]

    @property
    def name(self) -> str:
        return f"{self.number:05d}.npz"


def shards_of(records: Iterator[Record], size: int) -> Iterator[Shard]:
    for number in itertools.count():
        chunk = list(itertools.islice(records, size))
        if not chunk:
            return
        yield Shard(number, chunk)


def _refuse_or_skip(options: IndexOptions, record: Record, problem: str) -> None:
    if not options.skip_bad_rows:
        raise CorpusError(f"{options.input}: row {record.row}: {problem} (pass --skip-bad-rows to skip such rows)")
    log.debug("skipping row %d: %s", record.row, problem)


def write_shard(path: Path, records: list[Record], embedding: np.ndarray, radius: np.ndarray, charge: np.ndarray,
                problems: list[str | None], options: IndexOptions) -> None:
    """Keep the good records' atoms; refuse (or count) the bad ones."""
    good = []
    for i, (record, problem) in enumerate(zip(records, problems)):
        problem = record.problem or problem
        if problem:
            _refuse_or_skip(options, record, problem)
        else:
            good.append(i)
    kept = [records[i] for i in good]
    metadata = "".join(json.dumps(r.metadata, ensure_ascii=False, default=str) + "\n" for r in kept)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, embedding=embedding[good], radius=radius[good], charge=charge[good],
             id=np.asarray([json.dumps(r.id if r.id is not None else r.row) for r in kept], dtype=str),
             label=np.asarray(["" if r.label is None else r.label for r in kept], dtype=str),
             metadata=np.frombuffer(metadata.encode(), np.uint8), skipped=np.int64(len(records) - len(good)))
    os.replace(tmp, path)
