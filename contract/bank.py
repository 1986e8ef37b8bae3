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
bundle file's sha256).
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from .bundle import BundleError, _Strict, sha256_file, validate_manifest
from .index import IndexSpec, read_faiss, write_faiss
from .projection import Projection, fit_projection

BANK_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
ATOMS_FILE = "atoms.npz"
METADATA_FILE = "metadata.jsonl"
INDEX_FILE = "index.faiss"
BANK_FILES = (ATOMS_FILE, METADATA_FILE, INDEX_FILE)
NO_LABEL = -1


class BankError(BundleError):
    """A bank that cannot be used; the message is one line naming the file and the problem (a
    bundle error too: whoever refuses a bad bundle refuses a bad bank the same way)."""


class BuiltWith(_Strict):
    name: str
    version: str
    digest: str  # the bundle's digest, "sha256:<hex>" of its canonical manifest (contract/bundle.py)


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


@dataclass(frozen=True)
class BankArrays:
    """What a bank holds for every atom, in row order."""

    embedding: np.ndarray  # (M, k) float32
    radius: np.ndarray  # (M,) float32
    charge: np.ndarray  # (M,) float32
    label: np.ndarray  # (M,) int64, NO_LABEL or an index into label_names
    id: np.ndarray  # (M,) int64 or str

    def __len__(self) -> int:
        return int(self.embedding.shape[0])


class MetadataReader:
    """Reads the stored metadata of single atoms from metadata.jsonl, without loading it all."""

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


@dataclass
class Bank:
    """A loaded bank folder: manifest, arrays, the FAISS index and a metadata reader."""

    path: Path
    manifest: BankManifest
    arrays: BankArrays
    projection: np.ndarray  # (M, 2) float32
    faiss_index: Any
    metadata: MetadataReader

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def version(self) -> str:
        """What identifies this bank's content: the sha256 of its atoms file, shortened."""
        return self.manifest.files[ATOMS_FILE][:12]

    def close(self) -> None:
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
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
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


def load_bank(bank_dir: Path | str, *, bundle_digest: str | None = None, embedding_dim: int | None = None) -> Bank:
    """Validate and load a bank folder; raises BankError with one line naming the file and problem.

    bundle_digest: the served bundle's; a bank built with another bundle is refused.
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
    return Bank(bank_dir, manifest, arrays, raw["projection"].astype(np.float32), faiss_index, metadata)
