"""Nearest-atom search: one implementation for the service, evaluation and the training report.

FAISS does the search. A small bank gets an exact `IndexFlatL2`; above `EXACT_MAX_ELEMENTS`
(atoms x dimensions) an HNSW graph, and above `HNSW_MAX_ATOMS` an IVF index, whose build time
stays in minutes on a small machine (measured by `benchmarks/bank.py`, figures in
`benchmarks/results/bank.md`). The index only proposes candidates: every
returned distance is recomputed from the difference vectors in float32, because FAISS's
||q||^2 + ||b||^2 - 2 q.b form loses small distances to cancellation (a bank atom's distance
to itself would read ~1e-3 instead of 0).

Ranking by energy: the pair energy is not monotone in distance (it is lowest near contact,
r = R_a + R_b, and zero past the well's cutoff), so energy ranking takes the
`ENERGY_CANDIDATES` nearest atoms by distance and re-ranks them by pair energy. This is exact
whenever the candidate set reaches past the cutoff (every atom outside it then has energy 0 and
ranks, like in the exhaustive search, after every bound atom, nearer first) and the index found
the true nearest (always for the exact index, at its recall for HNSW and IVF); in a bank so
dense that more than `ENERGY_CANDIDATES` atoms lie inside one query's well it returns the most
strongly bound atoms among the nearest ones.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

# faiss logs at INFO which CPU build it loads, in six lines, on every start
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402

log = logging.getLogger(__name__)

RankBy = Literal["distance", "energy"]
IndexKind = Literal["flat", "hnsw", "ivf"]
# pair energy (distance, radius_a, radius_b, charge_a, charge_b) -> energy, broadcasting like NumPy
EnergyFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# Exact search up to 2^22 atom-dimensions (~11k atoms at 384 dims, ~131k at 32): one exact
# query took 0.4-0.6 ms at 10^4 x 384 and 45-55 ms at 10^5 x 384 on the shared 2-core machine
# (benchmarks/results/bank.md); below this size it needs no build and is never wrong.
EXACT_MAX_ELEMENTS = 1 << 22
# HNSW up to this many atoms, IVF above. Measured on MiniLM-derived banks of 384 dims on the
# 2-core machine (benchmarks/results/bank.md, `make bench-bank`): at 3 x 10^5 atoms HNSW still
# reached recall@10 0.95 at ef_search 128 (0.32 ms a query, a 49 s build), its recall falling
# with size at a fixed beam (0.98 at 10^5); IVF keeps its recall at 10^6 (0.965 at nprobe 40,
# 1.2 ms, a 71 s build).
HNSW_MAX_ATOMS = 300_000
# Candidates re-ranked by energy. 100 keeps the HNSW beam (efSearch >= k) near its default
# while covering the whole bond well of the banks this project trains.
ENERGY_CANDIDATES = 100
# HNSW: 32 links per node, a beam of 128 at search: the smallest beam whose recall@10 reached
# 0.95 on the benchmark's tuning queries at 3 x 10^5 atoms, the largest bank HNSW serves
# (bank.md: 0.952 there, 0.953 on the reported queries; 0.98 at 10^5).
HNSW_DEFAULTS = {"m": 32, "ef_construction": 80, "ef_search": 128}
# IVF: ~4 sqrt(M) lists (a power of two), k-means on at most 40 points per list and 10
# iterations (FAISS's default is 25; not compared, fewer keeps the build in minutes); nprobe
# 40: the smallest whose recall@10 reached 0.95 on the tuning queries at 10^6 atoms (bank.md:
# 0.959 there; 0.965 at 1.2 ms a query on the 500 other queries the figures are reported on).
IVF_NPROBE = 40
IVF_TRAIN_PER_LIST = 40
IVF_TRAIN_ITERATIONS = 10


@dataclass(frozen=True)
class IndexSpec:
    """How a bank is indexed; stored in the bank manifest so a loaded index is searched as built."""

    kind: IndexKind
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": dict(self.params)}


def choose_spec(count: int, dim: int, kind: str = "auto") -> IndexSpec:
    """The spec for a bank of `count` atoms of `dim` dimensions: exact when small enough, else HNSW."""
    if kind == "auto":
        kind = "flat" if count * dim <= EXACT_MAX_ELEMENTS else "hnsw" if count <= HNSW_MAX_ATOMS else "ivf"
    if kind == "flat":
        return IndexSpec("flat")
    if kind == "hnsw":
        return IndexSpec("hnsw", dict(HNSW_DEFAULTS))
    if kind == "ivf":
        nlist = 2 ** max(0, round(math.log2(max(1.0, 4.0 * math.sqrt(count)))))
        nlist = max(1, min(nlist, count // IVF_TRAIN_PER_LIST))  # enough points to train every list
        return IndexSpec("ivf", {"nlist": nlist, "nprobe": min(IVF_NPROBE, nlist)})
    raise ValueError(f"index kind must be auto, flat, hnsw or ivf, got {kind!r}")


def set_threads(threads: int | None) -> None:
    """FAISS's OpenMP threads; None keeps FAISS's default (every core).

    The service uses 1: its searches are small and run beside ONNX Runtime, whose threads the
    OpenMP pool would otherwise fight for the same cores.
    """
    if threads is not None:
        faiss.omp_set_num_threads(max(1, int(threads)))


def build_faiss(embedding: np.ndarray, spec: IndexSpec, *, seed: int = 0) -> faiss.Index:
    """A FAISS index over embedding (M, k) float32, trained and filled, search parameters set."""
    embedding = np.ascontiguousarray(embedding, dtype=np.float32)
    dim = embedding.shape[1]
    if spec.kind == "flat":
        index = faiss.IndexFlatL2(dim)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(spec.params["m"]))
        index.hnsw.efConstruction = int(spec.params["ef_construction"])
    elif spec.kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, int(spec.params["nlist"]))
        index.cp.seed, index.cp.niter = seed, IVF_TRAIN_ITERATIONS
        sample = embedding
        if len(embedding) > IVF_TRAIN_PER_LIST * index.nlist:  # k-means on a seeded sample
            size = IVF_TRAIN_PER_LIST * index.nlist
            sample = embedding[np.sort(np.random.default_rng(seed).choice(len(embedding), size, replace=False))]
        index.train(sample)
    else:
        raise ValueError(f"unknown index kind {spec.kind!r}")
    index.add(embedding)
    configure(index, spec)
    return index


def configure(index: faiss.Index, spec: IndexSpec) -> None:
    """Search-time parameters (not saved by faiss.write_index for every kind)."""
    if spec.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(spec.params["ef_search"])
    elif spec.kind == "ivf":
        faiss.downcast_index(index).nprobe = int(spec.params["nprobe"])


def write_faiss(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, os.fspath(path))


def read_faiss(path: Path, spec: IndexSpec) -> faiss.Index:
    index = faiss.read_index(os.fspath(path))
    configure(index, spec)
    return index


def _search(index: faiss.Index, spec: IndexSpec, queries: np.ndarray, k: int) -> np.ndarray:
    """Candidate rows (A, k) from FAISS, -1 where it found fewer than k."""
    if spec.kind == "hnsw" and k > int(spec.params["ef_search"]):
        params = faiss.SearchParametersHNSW(efSearch=k)  # the beam must hold the k results
        _, rows = index.search(queries, k, params=params)
    else:
        _, rows = index.search(queries, k)
    return rows


@dataclass(frozen=True)
class Neighbors:
    """One query's neighbors, best first: bank rows, distances and pair energies, each (k,)."""

    rows: np.ndarray
    distance: np.ndarray
    energy: np.ndarray


EMPTY = Neighbors(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))


class AtomIndex:
    """Search over one bank: embedding (M, k), with radius and charge (M,) for pair energies."""

    def __init__(
        self,
        embedding: np.ndarray,
        radius: np.ndarray | None = None,
        charge: np.ndarray | None = None,
        *,
        spec: IndexSpec | None = None,
        faiss_index: faiss.Index | None = None,
        energy: EnergyFn | None = None,
    ):
        self.embedding = np.ascontiguousarray(embedding, dtype=np.float32)  # (M, k)
        size = len(self.embedding)
        self.radius = np.zeros(size, np.float32) if radius is None else np.asarray(radius, np.float32)
        self.charge = np.zeros(size, np.float32) if charge is None else np.asarray(charge, np.float32)
        self.spec = spec or choose_spec(size, self.embedding.shape[1])
        self.energy_fn = energy
        if faiss_index is None:
            faiss_index = build_faiss(self.embedding, self.spec)
        elif faiss_index.ntotal != size or faiss_index.d != self.embedding.shape[1]:
            raise ValueError(f"the FAISS index holds {faiss_index.ntotal} x {faiss_index.d}, "
                             f"the bank {size} x {self.embedding.shape[1]}")
        self.faiss = faiss_index

    def __len__(self) -> int:
        return len(self.embedding)

    def nearest(self, queries: np.ndarray, k: int, *, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """rows (A, k) int64 and distances (A, k) float32 of the k nearest atoms, nearest first.

        exclude: (A,) a bank row per query to leave out (the query atom itself), or -1 for none.
        Where fewer than k atoms exist the tail rows are -1 with distance inf.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        wanted = min(k + (exclude is not None), len(self))
        rows = _search(self.faiss, self.spec, queries, wanted) if wanted else np.zeros((len(queries), 0), np.int64)
        if exclude is not None:
            rows = np.where(rows == np.asarray(exclude)[:, None], -1, rows)
        distance = self._distance(queries, rows)
        order = np.lexsort((rows, distance), axis=1)[:, :k]  # ties: lower row first
        rows, distance = np.take_along_axis(rows, order, 1), np.take_along_axis(distance, order, 1)
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
            distance = np.pad(distance, ((0, 0), (0, pad)), constant_values=np.inf)
        return rows.astype(np.int64), distance

    def _distance(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(A, c) float32 distances recomputed from differences; inf where rows is -1."""
        diff = queries[:, None, :] - self.embedding[np.maximum(rows, 0)]  # (A, c, k)
        distance = np.sqrt(np.einsum("ack,ack->ac", diff, diff))
        return np.where(rows < 0, np.float32(np.inf), distance).astype(np.float32)

    def search(
        self,
        embedding: np.ndarray,  # (B, k) float32
        radius: np.ndarray,  # (B,)
        charge: np.ndarray,  # (B,)
        counts: Sequence[int],  # neighbors wanted per query; 0 = none
        rank_by: Sequence[RankBy],
    ) -> list[Neighbors]:
        """Each query's neighbors by distance or by pair energy, one FAISS call per ranking."""
        results = [EMPTY] * len(counts)
        size = len(self)
        for mode in ("distance", "energy"):
            part = [i for i, (k, r) in enumerate(zip(counts, rank_by)) if k > 0 and r == mode and size > 0]
            if not part:
                continue
            if mode == "energy" and self.energy_fn is None:
                raise ValueError("ranking by energy needs the potential's energy function")
            k_max = min(max(counts[i] for i in part), size)
            wanted = min(max(k_max, ENERGY_CANDIDATES), size) if mode == "energy" else k_max
            query = np.ascontiguousarray(embedding[part], dtype=np.float32)
            rows = _search(self.faiss, self.spec, query, wanted)
            found = self._rank(query, np.asarray(radius)[part], np.asarray(charge)[part], rows, mode)
            for i, (rows_i, distance_i, energy_i) in zip(part, found):
                k = min(counts[i], len(rows_i))
                results[i] = Neighbors(rows_i[:k], distance_i[:k], energy_i[:k])
        return results

    def _rank(self, query, radius, charge, candidates, mode: RankBy) -> list[tuple[np.ndarray, ...]]:
        distance = self._distance(query, candidates)  # (A, c)
        safe = np.maximum(candidates, 0)
        if self.energy_fn is None:
            energy = np.zeros_like(distance)
        else:
            energy = self.energy_fn(distance, radius[:, None], self.radius[safe], charge[:, None], self.charge[safe])
            energy = np.where(candidates < 0, np.float32(np.inf), energy).astype(np.float32)
        # Last key is primary. Ties (e.g. zero energy past the cutoff) go to the nearer atom,
        # then to the lower bank row, so equal requests get equal answers.
        keys = (candidates, distance) if mode == "distance" else (candidates, distance, energy)
        order = np.lexsort(keys, axis=1)
        rows = np.take_along_axis(candidates, order, 1)
        distance = np.take_along_axis(distance, order, 1)
        energy = np.take_along_axis(energy, order, 1)
        out = []
        for a in range(rows.shape[0]):
            keep = rows[a] >= 0
            out.append((rows[a][keep].astype(np.int64), distance[a][keep], energy[a][keep]))
        return out
