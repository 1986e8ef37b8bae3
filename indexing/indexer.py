"""`atomize index`: a corpus atomized with a bundle into a bank folder, resumable, optionally on Ray.

The corpus is cut into shards of `shard_rows` records (by position in the file, bad rows
included, so the cut is the same on every run). Each finished shard is written to
`OUT/shards/NNNNN.npz` at once (`shards.py`); a rerun after an interruption reads the corpus
again but atomizes only the shards without a file. `OUT/shards/plan.json` records what the
shards were made from (the corpus's sha256, the bundle's digest, the shard size, the columns,
the model copy): a rerun with anything else starts over. When every shard is there, they are
joined, indexed (FAISS) and written as the bank; the shards go.

With `ray=True` the unfinished shards' records go through Ray Data `map_batches` with one
`Atomizer` per actor; the driver writes each shard as its last record returns. Every atom comes
from the model copy that the service runs on the same device (`contract.runner`), recorded in
the bank's manifest (`built_with.precision`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from contract.bank import BankManifest, BuiltWith, SourceInfo, write_bank
from contract.bundle import BankArrays, read_manifest, sha256_file
from contract.index import build_faiss, choose_spec

from .atomizer import Atomizer
from .corpus import Columns, CorpusError, Record, read_records
from .shards import IndexOptions, shards_of, write_shard

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"


def _plan(options: IndexOptions, digest: str, columns: Columns, precision: str) -> dict[str, Any]:
    return {"input_sha256": sha256_file(options.input), "bundle_digest": digest, "shard_rows": options.shard_rows,
            "columns": [columns.input, columns.id, columns.label], "precision": precision, "long": options.long}


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
        log.info("%s was made from another corpus, bundle, shard size or model copy: starting over", shards)
    shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True)
    plan_path.write_text(json.dumps(plan) + "\n")
    return shards


def index_corpus(options: IndexOptions) -> BankManifest:
    """Atomize the corpus and write the bank; returns its manifest."""
    out = Path(options.out)
    fmt, columns, records = read_records(options.input, input_column=options.input_column,
                                         id_column=options.id_column, label_column=options.label_column)
    atomizer = Atomizer(options.bundle, device=options.device, precision=options.precision,
                        batch_size=options.batch_size)
    digest = atomizer.bundle.digest
    out.mkdir(parents=True, exist_ok=True)
    shards_dir = prepare_shards(out, _plan(options, digest, columns, atomizer.precision))
    todo = (shard for shard in shards_of(records, options.shard_rows) if not (shards_dir / shard.name).is_file())
    if options.ray and options.long == "chunks":
        raise ValueError("--long chunks (one atom per window) runs on one machine; with --ray use --long pool")
    if options.ray:
        from .ray_atomize import atomize_on_ray  # Ray only when asked for (the `cluster` extra)

        atomize_on_ray(todo, shards_dir, options, atomizer.precision)
    else:
        with _progress(options.progress) as (progress, task):
            for shard in todo:
                atoms, problems, spans = atomizer.atomize_windows([r.value for r in shard.records], options.long)
                records, problems = per_atom(shard.records, problems, spans)
                write_shard(shards_dir / shard.name, records, atoms.embedding, atoms.radius, atoms.charge,
                            problems, options)
                progress.update(task, advance=len(shard.records))
    manifest = finish_bank(out, shards_dir, options, fmt, digest, atomizer.precision)
    shutil.rmtree(shards_dir)
    return manifest


def per_atom(records: list[Record], problems: list[str | None],
             spans: list[list[tuple[int, int] | None]]) -> tuple[list[Record], list[str | None]]:
    """One record per atom: a document read in windows (long="chunks") becomes one record per
    window, id "<id>#<j>", its metadata naming the document and the window's characters."""
    out, out_problems = [], []
    for record, problem, windows in zip(records, problems, spans):
        if windows == [None]:
            out.append(record)
            out_problems.append(problem)
            continue
        document = record.id if record.id is not None else record.row
        for j, (start, end) in enumerate(windows):
            out.append(dataclasses.replace(record, id=f"{document}#{j}", metadata={
                **record.metadata, "document": document, "chunk": j, "start": start, "end": end}))
            out_problems.append(None)
    return out, out_problems


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


def finish_bank(out: Path, shards_dir: Path, options: IndexOptions, fmt: str, digest: str,
                precision: str) -> BankManifest:
    parts: dict[str, list] = {name: [] for name in ("embedding", "radius", "charge", "id", "label")}
    metadata: list[bytes] = []
    skipped = 0
    for path in sorted(shards_dir.glob("[0-9]*.npz")):
        with np.load(path, allow_pickle=False) as shard:
            for name in parts:
                parts[name].append(shard[name])
            metadata.extend(shard["metadata"].tobytes().splitlines(keepends=True))
            skipped += int(shard["skipped"])
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
        built_with=BuiltWith(name=bundle.name, version=bundle.version, digest=digest, precision=precision),
        label_names=label_names, metadata_fields=fields,
        source=SourceInfo(file=Path(options.input).name, format=fmt, rows_read=len(arrays) + skipped,
                          rows_skipped=skipped),
        spec=spec, faiss_index=faiss_index,
    )
    log.info("bank %s: %d atoms, %d rows skipped", out, manifest.count, skipped)
    return manifest
