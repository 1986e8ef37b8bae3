"""`atomize index`: a corpus atomized with a bundle into a bank folder, resumable, optionally on Ray.

The corpus is cut into shards of `shard_rows` records (by position in the file, bad rows
included, so the cut is the same on every run). Each finished shard is written to
`OUT/shards/NNNNN.npz` at once (through a temporary name, so a shard file is always whole);
a rerun after an interruption reads the corpus again but atomizes only the shards without a
file. `OUT/shards/plan.json` records what the shards were made from (the corpus's and the
bundle's sha256, the shard size, the columns): a rerun with anything else starts over. When
every shard is there, they are joined, indexed (FAISS) and written as the bank; the shards go.

With `ray=True` the unfinished shards' records go through Ray Data `map_batches` with one
ONNX Runtime `Atomizer` per actor; the driver writes each shard as its last record returns.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .atomizer import Atomizer
from .bank import BankArrays, BankManifest, BuiltWith, SourceInfo, sha256_file, write_bank
from .corpus import Columns, CorpusError, Record, read_records
from .index import build_faiss, choose_spec

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"


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


def _plan(options: IndexOptions, digest: str, columns: Columns) -> dict[str, Any]:
    return {"input_sha256": sha256_file(options.input), "bundle_digest": digest, "shard_rows": options.shard_rows,
            "columns": [columns.input, columns.id, columns.label]}


def prepare_shards(out: Path, plan: dict[str, Any]) -> Path:
    """The shard folder, kept when its plan matches (resume), emptied otherwise."""
    shards = out / SHARDS_DIR
    plan_path = shards / PLAN_FILE
    if plan_path.is_file():
        if json.loads(plan_path.read_text()) == plan:
            done = len(list(shards.glob("[0-9]*.npz")))
            if done:
                log.info("resuming: %d shards already atomized in %s", done, shards)
            return shards
        log.info("%s was made from another corpus, bundle or shard size: starting over", shards)
    shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True)
    plan_path.write_text(json.dumps(plan) + "\n")
    return shards


def build_bank(options: IndexOptions) -> BankManifest:
    """Atomize the corpus and write the bank; returns its manifest."""
    out = Path(options.out)
    fmt, columns, records = read_records(options.input, input_column=options.input_column,
                                         id_column=options.id_column, label_column=options.label_column)
    from contract.bundle import bundle_digest  # the bundle contract; moves into this package

    digest = bundle_digest(options.bundle)
    out.mkdir(parents=True, exist_ok=True)
    shards_dir = prepare_shards(out, _plan(options, digest, columns))
    todo = (shard for shard in shards_of(records, options.shard_rows) if not (shards_dir / shard.name).is_file())
    if options.ray:
        from .ray_atomize import atomize_on_ray

        atomize_on_ray(todo, shards_dir, options)
    else:
        atomizer = Atomizer(options.bundle, device=options.device, batch_size=options.batch_size)
        with _progress(options.progress) as (progress, task):
            for shard in todo:
                atoms, problems = atomizer.atomize([r.value for r in shard.records])
                write_shard(shards_dir / shard.name, shard.records, atoms.embedding, atoms.radius, atoms.charge,
                            problems, options)
                progress.update(task, advance=len(shard.records))
    manifest = finish_bank(out, shards_dir, options, fmt, digest)
    shutil.rmtree(shards_dir)
    return manifest


class _progress:
    """A rich progress bar over records (or nothing), as a context manager."""

    def __init__(self, enabled: bool, total: int | None = None):
        self.bar = Progress(TextColumn("atomizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            disable=not enabled)
        self.total = total

    def __enter__(self):
        self.bar.__enter__()
        return self.bar, self.bar.add_task("atomizing", total=self.total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def finish_bank(out: Path, shards_dir: Path, options: IndexOptions, fmt: str, digest: str) -> BankManifest:
    parts: dict[str, list] = {name: [] for name in ("embedding", "radius", "charge", "id", "label")}
    metadata: list[bytes] = []
    skipped = 0
    for path in sorted(shards_dir.glob("[0-9]*.npz")):
        with np.load(path, allow_pickle=False) as shard:
            for name in parts:
                parts[name].append(shard[name])
            metadata.extend(shard["metadata"].tobytes().splitlines(keepends=True))
            skipped += int(shard["skipped"])
    from contract.bundle import read_manifest  # the bundle contract; moves into this package

    bundle = read_manifest(options.bundle)
    if not parts["embedding"]:
        parts["embedding"].append(np.zeros((0, bundle.embedding_dim), np.float32))
    joined = {name: np.concatenate(arrays) if arrays else np.zeros(0) for name, arrays in parts.items()}
    ids = [json.loads(value) for value in joined["id"].tolist()]
    if all(isinstance(i, str) and i.isdigit() and str(int(i)) == i for i in ids):
        ids = [int(i) for i in ids]  # CSV cells are text: "42" is the id 42 (but "007" stays "007")
    id_array = np.asarray(ids, np.int64) if all(isinstance(i, int) for i in ids) else np.asarray([str(i) for i in ids])
    labels = joined["label"].astype(str).tolist()
    label_names = sorted({label for label in labels if label})
    codes = {name: i for i, name in enumerate(label_names)}
    arrays = BankArrays(
        embedding=np.ascontiguousarray(joined["embedding"], np.float32),
        radius=joined["radius"].astype(np.float32), charge=joined["charge"].astype(np.float32),
        label=np.asarray([codes.get(label, -1) for label in labels], np.int64), id=id_array,
    )
    if len(arrays) == 0:
        raise CorpusError(f"{options.input}: no usable rows ({skipped} skipped)")
    spec = choose_spec(len(arrays), arrays.embedding.shape[1], options.index_kind)
    log.info("indexing %d atoms (%s, %s)", len(arrays), spec.kind, spec.params)
    faiss_index = build_faiss(arrays.embedding, spec)
    fields = sorted({key for line in metadata[:1000] for key in json.loads(line)})
    manifest = write_bank(
        out, arrays, metadata,
        built_with=BuiltWith(name=bundle.name, version=bundle.version, digest=digest),
        label_names=label_names, metadata_fields=fields,
        source=SourceInfo(file=Path(options.input).name, format=fmt, rows_read=len(arrays) + skipped,
                          rows_skipped=skipped),
        spec=spec, faiss_index=faiss_index,
    )
    log.info("bank %s: %d atoms, %d rows skipped", out, manifest.count, skipped)
    return manifest
