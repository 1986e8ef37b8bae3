"""The bank the service answers neighbours from: the bundle's own atoms.npz, or a bank folder.

The search itself is `contract.index.AtomIndex` (FAISS), shared with evaluation and the
training report. A `ServedBank` is immutable once loaded; a reload (SIGHUP) builds a new one
and swaps the runtime's reference, so a batch keeps the bank it started with and the requests
in flight finish on the old bank.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract.bank import NO_LABEL, MetadataReader, load_bank
from contract.bundle import Bundle
from contract.index import EMPTY, AtomIndex, IndexSpec, Neighbors, RankBy, choose_spec, set_threads
from contract.potential import pair_energy

__all__ = ["EMPTY", "Neighbors", "RankBy", "ServedBank", "load_served_bank", "own_bank_spec", "with_index"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedBank:
    index: AtomIndex
    id: np.ndarray  # (M,) int64 or str
    label: np.ndarray  # (M,) int64, an index into label_names or NO_LABEL
    label_names: list[str]
    version: str  # what the bank-version metric and /v1/model show
    info: dict[str, Any]  # /v1/model's `bank`
    metadata: MetadataReader | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.index)

    def search(self, embedding, radius, charge, counts, rank_by) -> list[Neighbors]:
        return self.index.search(embedding, radius, charge, counts, rank_by)

    def describe(self, row: int) -> dict[str, Any]:
        """id, label and (for a bank folder) the stored metadata of one bank atom."""
        code = int(self.label[row])
        label = self.label_names[code] if 0 <= code < len(self.label_names) else (None if code == NO_LABEL else str(code))
        out: dict[str, Any] = {"id": self.id[row].item(), "label": label}
        if self.metadata is not None:
            out["metadata"] = self.metadata[row]
        return out


def load_served_bank(bundle: Bundle, path: Path | None = None) -> ServedBank:
    """The bank folder at `path` (validated against the bundle), or the bundle's own atoms.

    Raises contract.bank.BankError (one line naming the file and the problem).
    """
    set_threads(1)  # searches are small and share the cores with ONNX Runtime (contract/index.py)
    energy = functools.partial(pair_energy, spec=bundle.manifest.potential)
    if path is None:
        own = bundle.bank
        # Exact: this index is built at every start-up, and an HNSW build over the default
        # bundle's 26,814 x 384 atoms would add tens of seconds there (benchmarks/results/bank.md);
        # `atomize index` builds an approximate index once, offline.
        index = AtomIndex(own.embedding, own.radius, own.charge, spec=IndexSpec("flat"), energy=energy)
        version = bundle.manifest.files["atoms.npz"][:12]
        info = {"atoms": len(index), "source": "bundle", "search": index.spec.kind, "index": index.spec.to_dict(),
                "version": version}
        return ServedBank(index, own.id, own.label, list(bundle.manifest.label_names), version, info)
    bank = load_bank(path, bundle_digest=bundle.digest, embedding_dim=bundle.manifest.embedding_dim)
    arrays, manifest = bank.arrays, bank.manifest
    index = AtomIndex(arrays.embedding, arrays.radius, arrays.charge, spec=manifest.index.spec,
                      faiss_index=bank.faiss_index, energy=energy)
    info = {"atoms": len(index), "source": str(path), "search": manifest.index.kind, "index": manifest.index.model_dump(),
            "version": bank.version, "built_with": manifest.built_with.model_dump(), "created_at": manifest.created_at,
            "label_names": manifest.label_names, "metadata_fields": manifest.metadata_fields}
    log.info("bank %s: %d atoms, %s index, version %s", path, len(index), manifest.index.kind, bank.version)
    return ServedBank(index, arrays.id, arrays.label, list(manifest.label_names), bank.version, info, bank.metadata)


def own_bank_spec(bank: ServedBank) -> IndexSpec | None:
    """The approximate index the bundle's own bank moves to once the service is up, or None.

    The bundle's own atoms are searched exactly from the start (no build before ready). Past
    the size where the project's own rule stops searching exactly (contract.index.choose_spec),
    an IVF index is built in the background: on the default bundle it built in 0.9 s (HNSW 1.6 s)
    with recall@10 1.000 on validation queries (benchmarks/results/own_bank.md), and its build
    grows more slowly with the bank than HNSW's (29 s against 136 s at 10^5 atoms, bank.md).
    """
    if bank.info.get("source") != "bundle":
        return None
    count, dim = bank.index.embedding.shape
    if choose_spec(count, dim).kind == "flat":
        return None
    return choose_spec(count, dim, "ivf")


def with_index(bank: ServedBank, spec: IndexSpec) -> ServedBank:
    """The same bank searched through a newly built `spec` index (blocking: call it in a thread)."""
    own = bank.index
    index = AtomIndex(own.embedding, own.radius, own.charge, spec=spec, energy=own.energy_fn)
    info = {key: value for key, value in bank.info.items() if key != "index_pending"}
    return dataclasses.replace(bank, index=index, info={**info, "search": spec.kind, "index": spec.to_dict()})
