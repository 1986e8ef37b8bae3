"""The model backend: synchronous, NumPy in and NumPy out, no asyncio and no HTTP.

`Runtime` is the bundle's `contract.runner.ModelRunner` (the copy, the session, input checks,
padding: the same code `atomize index` runs) plus what serving adds: requests' items, the bank
search and the metrics. `prepare` turns raw request inputs into `Item`s and `run` turns a batch
of items into `ItemResult`s: one padded ONNX Runtime call, one vectorised neighbor search. The
batcher calls `run` from its worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from contract import chunks
from contract.bank import Bank, open_bank
from contract.bundle import Bundle
from contract.index import EMPTY, Neighbors, RankBy
from contract.inputs import InputProblem, Prepared
from contract.runner import CPU, DeviceError, ModelRunner

from .errors import InvalidInput, TooLarge
from .metrics import ModelMetrics

__all__ = ["CPU", "DeviceError", "InputResult", "Item", "ItemResult", "Runtime"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One input, ready for the model."""

    components: np.ndarray  # text: (n,) int64 token ids; numeric: (n, f) float32, unscaled
    neighbors: int = 0  # how many bank atoms to return
    rank_by: RankBy = "distance"
    truncated: bool = False  # text cut to the model's maximum length
    offsets: np.ndarray | None = None  # text: (n, 2) character [start, end) per component position
    span: tuple[int, int] | None = None  # a window of a chunked text: its characters
    owned: tuple[int, int] | None = None  # a window: the positions it reports (overlaps halved)

    @classmethod
    def of(cls, prepared: Prepared, neighbors: int = 0, rank_by: RankBy = "distance") -> "Item":
        return cls(prepared.components, neighbors, rank_by, prepared.truncated, prepared.offsets, prepared.span,
                   prepared.owned)

    @property
    def length(self) -> int:
        return int(self.components.shape[0])


@dataclass(frozen=True)
class BatchTiming:
    """When a batch ran (wall clock, ns): what a request's trace shows of it (service/tracing.py)."""

    started_ns: int
    inferred_ns: int  # the ONNX Runtime call returned; the neighbour search starts
    searched_ns: int  # the neighbour search returned: the batch is done
    items: int
    searched: bool  # some item asked for neighbours


@dataclass(frozen=True)
class ItemResult:
    embedding: np.ndarray  # (k,) float32
    roles: np.ndarray  # (n, 3) float32, rows sum to 1
    composition: np.ndarray  # (6,) float32, columns = manifest.composition_fields
    neighbors: Neighbors
    bank: Bank  # the bank the neighbors' rows index: the one the batch started with
    timing: BatchTiming | None = None  # one object shared by the batch's items
    finite: bool = True  # embedding, roles and composition all finite (checked for the whole batch at once)


def finite_rows(embedding: np.ndarray, roles: np.ndarray | Sequence[np.ndarray], composition: np.ndarray,
                lengths: Sequence[int]) -> np.ndarray:
    """(B,) bool: whether each row's embedding, composition and roles of its real components are
    all finite; the padding's roles do not count. `roles`: (B, n, 3), or one array per row (a
    model run one input per call)."""
    if isinstance(roles, np.ndarray):
        real = np.arange(roles.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (B, n)
        roles_ok = (np.isfinite(roles).all(axis=2) | ~real).all(axis=1)
    else:
        roles_ok = np.array([bool(np.isfinite(row[:n]).all()) for row, n in zip(roles, lengths)], bool)
    return np.isfinite(embedding).all(axis=1) & np.isfinite(composition).all(axis=1) & roles_ok


@dataclass(frozen=True)
class InputResult:
    """One input's answer: its own item's result, or its windows' results pooled into one atom."""

    embedding: np.ndarray  # (k,)
    composition: np.ndarray  # (6,)
    components: np.ndarray  # (m,) token ids or (m, f) values: the input's components, each once
    roles: np.ndarray  # (m, 3)
    offsets: np.ndarray | None  # (m, 2) characters of each component (text)
    truncated: bool
    windows: list[tuple[Item, ItemResult]]  # one entry unless the input was chunked
    bonds: np.ndarray  # (windows - 1,) pair energy of each window with the next
    neighbors: Neighbors = EMPTY
    bank: Bank | None = None


class Runtime(ModelRunner):
    def __init__(self, bundle: Bundle, *, device: str = "auto", precision: str = "auto",
                 max_components_per_input: int = 1024, metrics: ModelMetrics | None = None,
                 bank: Bank | None = None, threads: int = 0):
        super().__init__(bundle, device=device, precision=precision, threads=threads,
                         max_components_per_input=max_components_per_input)
        self.metrics = metrics
        composition = self.manifest.composition_fields
        self._radius_col, self._charge_col = composition.index("radius"), composition.index("charge")
        # Replaced whole by a bank reload (SIGHUP); each batch reads it once (see `run`).
        self.bank = bank if bank is not None else open_bank(bundle)
        if self.bank.precision != self.precision:
            (log.info if self.bank.manifest is None else log.warning)("bank %s was atomized with the %s copy, queries run the %s copy: a bank atom and a query "
                        "of the same input differ by about the copies' parity (manifest precisions)",
                        self.bank.info.get("source"), self.bank.precision, self.precision)
        log.info("model %s %s: %s on %s (onnxruntime %s), bank of %d atoms", self.manifest.name,
                 self.manifest.version, self.model_file, self.provider, ort.__version__, len(self.bank))

    # ---- preprocessing -------------------------------------------------------------------

    def prepare(self, inputs: Sequence[Any], *, neighbors: int = 0, rank_by: RankBy = "distance",
                field: str = "inputs", truncate: bool = True) -> list[Item]:
        """Validate raw inputs and turn them into items; `field` names them in error messages.

        CPU work (tokenizing up to megabytes): call it from a worker thread, not the event loop.
        """
        try:
            prepared = self.prepare_components(inputs, field=field, truncate=truncate)
        except InputProblem as problem:
            raise (TooLarge if problem.too_large else InvalidInput)(problem.message) from None
        return [Item.of(item, neighbors, rank_by) for item in prepared]

    def prepare_windows(self, inputs: Sequence[Any], *, field: str = "inputs", overlap: int | None = None,
                        max_chunks: int = 16) -> list[list[Item]]:
        """Each input as the items of its windows (contract.inputs: a text past the model's length
        is read whole in overlapping windows). The windows ask for no neighbours: `pool` searches
        with the pooled atom."""
        try:
            windows = self.prepare_chunks(inputs, field=field, overlap=overlap, max_chunks=max_chunks)
        except InputProblem as problem:
            raise (TooLarge if problem.too_large else InvalidInput)(problem.message) from None
        if self.metrics is not None:
            self.metrics.chunks.inc(sum(len(group) for group in windows if len(group) > 1))
        return [[Item.of(window) for window in group] for group in windows]

    def one(self, item: Item, result: ItemResult) -> InputResult:
        """The answer of an input that is one item."""
        real = self.component_positions(item) if self.special_ids else slice(None)  # no specials: views, no copies
        return InputResult(result.embedding, result.composition, item.components[real], result.roles[real],
                           None if item.offsets is None else item.offsets[real], item.truncated,
                           [(item, result)], np.zeros(0, np.float32), result.neighbors, result.bank)

    def pool(self, windows: Sequence[tuple[Item, ItemResult]]) -> InputResult:
        """A chunked input's answer: its windows' atoms pooled (contract/chunks.py), its
        components concatenated with each overlap counted once; no neighbours yet (`search`)."""
        if len(windows) == 1:
            return self.one(*windows[0])
        fields = self.manifest.composition_fields
        embedding = np.stack([r.embedding for _, r in windows])
        composition = np.stack([r.composition for _, r in windows])
        parts, read = [], []
        for item, result in windows:
            start, end = item.owned
            real = self.component_positions(item)
            kept = [p for p in real if start <= p < end]
            parts.append((item.components[kept], result.roles[kept], item.offsets[kept]))
            read.append(len(real))
        pooled, summed = chunks.pool(embedding, composition, fields, self.spec.chunk_pooling,
                                     [len(part[0]) for part in parts], read)
        return InputResult(pooled, summed, *(np.concatenate(column) for column in zip(*parts)), False,
                           list(windows), chunks.bonds(embedding, composition, fields, self.manifest.potential))

    def search(self, results: list[InputResult], counts: Sequence[int], rank_by: RankBy) -> list[InputResult]:
        """The inputs with their nearest bank atoms (one vectorised search)."""
        if not any(counts):
            return results
        bank = self.bank
        embedding = np.stack([r.embedding for r in results])
        composition = np.stack([r.composition for r in results])
        found = bank.search(embedding, composition[:, self._radius_col], composition[:, self._charge_col],
                            list(counts), [rank_by] * len(results))
        return [dataclasses.replace(r, neighbors=n, bank=bank) for r, n in zip(results, found)]

    def component_positions(self, item: Item) -> list[int]:
        """Positions of the item's real components: all but the tokenizer's special tokens."""
        if not self.special_ids:
            return list(range(item.length))
        real = item.components != self.special_ids[0]  # a few special ids: cheaper than np.isin's sort
        for special in self.special_ids[1:]:
            real &= item.components != special
        return np.flatnonzero(real).tolist()

    def token_strings(self, components: np.ndarray) -> list[str] | None:
        """What each component is, for display: token text (text) or None (numeric, use the index)."""
        if self.tokenizer is None:
            return None
        return [self.tokenizer.id_to_token(int(i)) or "" for i in components]

    # ---- inference -----------------------------------------------------------------------

    def run(self, items: Sequence[Item], *, record: bool = True) -> list[ItemResult]:
        """The batch's results, in order; `record=False` keeps it out of the metrics (warm-up)."""
        started_ns = time.time_ns()
        started = time.perf_counter()
        bank = self.bank  # one bank for the whole batch, even if a reload swaps it meanwhile
        embedding, roles, composition = self.infer([item.components for item in items])
        searched = time.perf_counter()
        inferred_ns = time.time_ns()
        counts = [item.neighbors for item in items]
        if any(counts):
            neighbors = bank.search(embedding, composition[:, self._radius_col], composition[:, self._charge_col],
                                    counts, [item.rank_by for item in items])
        else:
            neighbors = [EMPTY] * len(items)
        if self.metrics is not None and record:
            self.metrics.inference.observe(searched - started)
            if any(counts):
                self.metrics.neighbor_search.observe(time.perf_counter() - searched)
            self.metrics.items_atomized.inc(len(items))
        timing = BatchTiming(started_ns, inferred_ns, time.time_ns(), len(items), any(counts))
        finite = finite_rows(embedding, roles, composition, [item.length for item in items])
        return [
            ItemResult(embedding[i], roles[i][: item.length], composition[i], neighbors[i], bank, timing, bool(finite[i]))
            for i, item in enumerate(items)
        ]

    def warm_up(self) -> None:
        """One short and one longest input through the model and the neighbor search.

        The first run allocates memory and (on CUDA) picks kernels; doing it before /readyz says
        ready keeps that cost off the first user request, and proves the whole path works.
        """
        longest = min(self.spec.max_components, self.max_components_per_input)
        items = [Item(self.blank(1), neighbors=1), Item(self.blank(longest), neighbors=1, rank_by="energy")]
        results = self.run(items, record=False)
        if not all(np.isfinite(r.embedding).all() for r in results):
            raise RuntimeError("warm-up produced a non-finite embedding")
