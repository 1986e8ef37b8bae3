"""A bank of atoms: the folder `atomize index` writes and the service serves neighbours from.

    manifest.json    `BankManifest`: schema version, the bundle it was built with (name, version,
                     digest), count, embedding size, label names, metadata fields, index kind and
                     parameters, the 2D projection's axes, sha256 of every other file
    atoms.npz        embedding (M, k) float32, radius (M,), charge (M,), label (M,) int64 (-1 =
                     none, else an index into label_names), id (M,) int64 or str, projection (M, 2)
                     float32, metadata_offset (M + 1,) int64 (byte offsets into metadata.jsonl)
    metadata.jsonl   one JSON object per atom, in row order: the original text and the input's
                     other columns, read back only for the atoms a request returns
    index.faiss      the FAISS index over embedding (see contract/index.py)

A bank built with another bundle is refused: its manifest names the bundle digest
(`contract.bundle.bundle_digest`: sha256 of the bundle's canonical manifest, which lists every
bundle file's sha256) and the model copy (fp32, fp16, int8) that atomized it.

`Bank` is the one loaded, searchable bank: a bank folder (`load_bank`) or a bundle's own atoms
(`open_bank(bundle)`), both in `BankArrays`. It is immutable once loaded; the service swaps a
whole new one on a reload, so a batch keeps the bank it started with.
"""

from __future__ import annotations

import functools
import json
import logging
import mmap
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from .bundle import BankArrays, Bundle, BundleError, _Strict, sha256_file, validate_manifest
from .index import AtomIndex, IndexSpec, Neighbors, read_faiss, set_threads, write_faiss
from .potential import pair_energy
from .projection import Projection, fit_projection

log = logging.getLogger(__name__)

BANK_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
ATOMS_FILE = "atoms.npz"
METADATA_FILE = "metadata.jsonl"
INDEX_FILE = "index.faiss"
BANK_FILES = (ATOMS_FILE, METADATA_FILE, INDEX_FILE)
ATOMS_METADATA_FILE = "atoms.metadata.jsonl"  # in a bundle: one {"text": ...} per training atom (optional)
NO_LABEL = -1


class BankError(BundleError):
    """A bank that cannot be used; the message is one line naming the file and the problem (a
    bundle error too: whoever refuses a bad bundle refuses a bad bank the same way)."""


class BuiltWith(_Strict):
    name: str
    version: str
    digest: str  # the bundle's digest, "sha256:<hex>" of its canonical manifest (contract/bundle.py)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"  # the copy that atomized it (banks before: fp32)


class IndexInfo(_Strict):
    kind: Literal["flat", "hnsw", "ivf"]
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(self.kind, dict(self.params))


class SourceInfo(_Strict):
    file: str
    format: Literal["csv", "jsonl", "npz"]
    rows_read: int
    rows_skipped: int


class BankManifest(_Strict):
    schema_version: int
    created_at: str
    built_with: BuiltWith
    count: int = Field(ge=0)
    embedding_dim: int = Field(gt=0)
    label_names: list[str]
    metadata_fields: list[str]
    source: SourceInfo
    index: IndexInfo
    projection: Projection
    files: dict[str, str]  # file name -> sha256 hex, every file but the manifest


def metadata_offsets(lines: list[bytes]) -> np.ndarray:
    """(M + 1,) byte offsets of M lines written one after another."""
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    return offsets


class MetadataReader:
    """Reads the stored metadata of single atoms from metadata.jsonl, without loading it all."""

    @classmethod
    def of_lines(cls, path: Path, count: int) -> "MetadataReader":
        """A file of exactly `count` JSON lines (a bundle's atoms.metadata.jsonl): offsets by scanning it."""
        data = np.fromfile(path, dtype=np.uint8)
        ends = np.flatnonzero(data == ord("\n")) + 1
        if len(ends) != count or (len(data) and ends[-1] != len(data)):
            raise BankError(path, f"has {len(ends)} lines for {count} atoms")
        return cls(path, np.concatenate([[0], ends]).astype(np.int64))

    def __init__(self, path: Path, offsets: np.ndarray):
        self.offsets = offsets  # (M + 1,) int64
        size = path.stat().st_size
        if size != int(offsets[-1]):
            raise BankError(path, f"has {size} bytes, the offsets in {ATOMS_FILE} end at {int(offsets[-1])}")
        self._handle = open(path, "rb")  # noqa: SIM115 - kept open for the bank's life
        self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def __getitem__(self, row: int) -> dict[str, Any]:
        if self._map is None:
            return {}
        return json.loads(self._map[int(self.offsets[row]) : int(self.offsets[row + 1])])

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._handle.close()


@dataclass(frozen=True)
class Bank:
    """Atoms to search: a bank folder, or a bundle's own atoms (`manifest` and `metadata` None)."""

    arrays: BankArrays
    index: AtomIndex
    label_names: list[str]
    version: str  # what identifies the content: the sha256 of its atoms file, shortened
    info: dict[str, Any]  # what /v1/model shows as `bank`
    manifest: BankManifest | None = None
    metadata: MetadataReader | None = field(default=None, compare=False)
    projection: np.ndarray | None = field(default=None, compare=False)  # (M, 2): a folder's stored map

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def precision(self) -> str:
        """The model copy that atomized it: a bundle's own atoms come from the fp32 model at export."""
        return self.manifest.built_with.precision if self.manifest else "fp32"

    def search(self, embedding, radius, charge, counts, rank_by) -> list[Neighbors]:
        return self.index.search(embedding, radius, charge, counts, rank_by)

    def describe(self, row: int) -> dict[str, Any]:
        """id, label and (for a bank folder) the stored metadata of one atom."""
        code = int(self.arrays.label[row])
        label = self.label_names[code] if 0 <= code < len(self.label_names) else (None if code == NO_LABEL else str(code))
        out: dict[str, Any] = {"id": self.arrays.id[row].item(), "label": label}
        if self.metadata is not None:
            out["metadata"] = self.metadata[row]
        return out

    def close(self) -> None:
        if self.metadata is not None:
            self.metadata.close()


def write_bank(
    out: Path,
    arrays: BankArrays,
    metadata_lines: list[bytes] | None,
    *,
    built_with: BuiltWith,
    label_names: list[str],
    metadata_fields: list[str],
    source: SourceInfo,
    spec: IndexSpec,
    faiss_index: Any,
) -> BankManifest:
    """Write a complete bank folder; the manifest goes last, so a folder with one is whole.

    Every file is written under a temporary name and then renamed over the old one: a service
    still serving the old bank keeps reading the old files (its open map of metadata.jsonl
    included) until a reload swaps banks.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    lines = metadata_lines or [b"{}\n"] * len(arrays)
    offsets = metadata_offsets(lines)
    with open(out / f"tmp.{METADATA_FILE}", "wb") as handle:
        handle.writelines(lines)
    projection = fit_projection(arrays.embedding)
    np.savez(out / f"tmp.{ATOMS_FILE}", embedding=arrays.embedding, radius=arrays.radius, charge=arrays.charge,
             label=arrays.label, id=arrays.id, projection=projection.apply(arrays.embedding), metadata_offset=offsets)
    write_faiss(faiss_index, out / f"tmp.{INDEX_FILE}")
    for name in BANK_FILES:
        os.replace(out / f"tmp.{name}", out / name)
    manifest = BankManifest(
        schema_version=BANK_SCHEMA_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        built_with=built_with, count=len(arrays), embedding_dim=int(arrays.embedding.shape[1]),
        label_names=label_names, metadata_fields=metadata_fields, source=source,
        index=IndexInfo(kind=spec.kind, params=spec.params), projection=projection,
        files={name: sha256_file(out / name) for name in BANK_FILES},
    )
    tmp = out / (MANIFEST_FILE + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, out / MANIFEST_FILE)
    return manifest


def read_bank_manifest(bank_dir: Path) -> BankManifest:
    path = Path(bank_dir) / MANIFEST_FILE
    if not path.is_file():
        raise BankError(path, "missing file (not a bank folder, or `atomize index` did not finish)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BankError(path, f"not valid JSON ({exc})") from None
    return validate_manifest(BankManifest, raw, BANK_SCHEMA_VERSION, path, BankError)


def load_bank(bank_dir: Path | str, *, bundle_digest: str | None = None, embedding_dim: int | None = None,
              energy=None) -> Bank:
    """Validate and load a bank folder; raises BankError with one line naming the file and problem.

    bundle_digest: the served bundle's; a bank built with another bundle is refused. energy: the
    pair energy that ranks neighbours by energy (`open_bank` passes the bundle's potential).
    """
    bank_dir = Path(bank_dir)
    if not bank_dir.is_dir():
        raise BankError(bank_dir, "bank folder does not exist")
    manifest = read_bank_manifest(bank_dir)
    if bundle_digest is not None and manifest.built_with.digest != bundle_digest:
        raise BankError(bank_dir / MANIFEST_FILE,
                        f"built with bundle {manifest.built_with.name} {manifest.built_with.version} "
                        f"(digest {manifest.built_with.digest[:19]}), not the served bundle (digest {bundle_digest[:19]})")
    if embedding_dim is not None and manifest.embedding_dim != embedding_dim:
        raise BankError(bank_dir / MANIFEST_FILE, f"embedding_dim {manifest.embedding_dim}, the bundle's is {embedding_dim}")
    for name in BANK_FILES:
        path = bank_dir / name
        if name not in manifest.files:
            raise BankError(path, "required file is not listed in the manifest")
        if not path.is_file():
            raise BankError(path, "missing file")
        if sha256_file(path) != manifest.files[name]:
            raise BankError(path, "checksum mismatch (file changed after indexing)")
    path = bank_dir / ATOMS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {name: data[name] for name in ("embedding", "radius", "charge", "label", "id", "projection",
                                                 "metadata_offset")}
    except KeyError as exc:
        raise BankError(path, f"missing array {exc}") from None
    except (OSError, ValueError) as exc:
        raise BankError(path, f"cannot be read ({exc})") from None
    count, dim = manifest.count, manifest.embedding_dim
    expected = {"embedding": (count, dim), "radius": (count,), "charge": (count,), "label": (count,),
                "id": (count,), "projection": (count, 2), "metadata_offset": (count + 1,)}
    for name, shape in expected.items():
        if raw[name].shape != shape:
            raise BankError(path, f"{name} has shape {raw[name].shape}, expected {shape}")
    if count and (raw["label"].min() < NO_LABEL or raw["label"].max() >= len(manifest.label_names)):
        raise BankError(path, f"label values outside -1..{len(manifest.label_names) - 1}")
    arrays = BankArrays(
        embedding=np.ascontiguousarray(raw["embedding"], dtype=np.float32),
        radius=raw["radius"].astype(np.float32), charge=raw["charge"].astype(np.float32),
        label=raw["label"].astype(np.int64), id=raw["id"],
    )
    spec = manifest.index.spec
    try:
        faiss_index = read_faiss(bank_dir / INDEX_FILE, spec)
    except RuntimeError as exc:  # FAISS raises RuntimeError for unreadable files
        raise BankError(bank_dir / INDEX_FILE, f"cannot be read by FAISS ({str(exc).splitlines()[0]})") from None
    if faiss_index.ntotal != count or faiss_index.d != dim:
        raise BankError(bank_dir / INDEX_FILE, f"indexes {faiss_index.ntotal} x {faiss_index.d}, the bank is {count} x {dim}")
    metadata = MetadataReader(bank_dir / METADATA_FILE, raw["metadata_offset"].astype(np.int64))
    version = manifest.files[ATOMS_FILE][:12]
    index = AtomIndex(arrays.embedding, arrays.radius, arrays.charge, spec=spec, faiss_index=faiss_index, energy=energy)
    info = {"atoms": count, "source": str(bank_dir), "search": spec.kind, "index": manifest.index.model_dump(),
            "version": version, "precision": manifest.built_with.precision,
            "built_with": manifest.built_with.model_dump(), "created_at": manifest.created_at,
            "label_names": manifest.label_names, "metadata_fields": manifest.metadata_fields}
    return Bank(arrays, index, list(manifest.label_names), version, info, manifest, metadata,
                raw["projection"].astype(np.float32))


def open_bank(bundle: Bundle, path: Path | str | None = None) -> Bank:
    """The bank folder at `path`, validated against the bundle, or else the bundle's own atoms.

    The bundle's own atoms are searched exactly: this index is built at every start, and an HNSW
    build over the default bundle's 26,814 x 384 atoms would add tens of seconds there
    (benchmarks/results/bank.md); `atomize index` builds an approximate index once, offline.
    Raises BankError (one line naming the file and the problem).
    """
    set_threads(1)  # searches are small and share the cores with ONNX Runtime (contract/index.py)
    energy = functools.partial(pair_energy, spec=bundle.manifest.potential)
    if path is not None:
        bank = load_bank(path, bundle_digest=bundle.digest, embedding_dim=bundle.manifest.embedding_dim, energy=energy)
        log.info("bank %s: %d atoms, %s index, version %s, atomized with the %s copy", path, len(bank),
                 bank.index.spec.kind, bank.version, bank.precision)
        return bank
    own = bundle.atoms
    index = AtomIndex(own.embedding, own.radius, own.charge, spec=IndexSpec("flat"), energy=energy)
    version = bundle.manifest.files[ATOMS_FILE][:12]
    texts = bundle.path / ATOMS_METADATA_FILE  # the training texts, when the export kept them
    metadata = MetadataReader.of_lines(texts, len(own)) if ATOMS_METADATA_FILE in bundle.manifest.files else None
    info = {"atoms": len(index), "source": "bundle", "search": "flat", "index": index.spec.to_dict(), "version": version,
            "precision": "fp32",  # written by the training model at export
            "metadata_fields": ["text"] if metadata is not None else []}
    return Bank(own, index, list(bundle.manifest.label_names), version, info, metadata=metadata)
