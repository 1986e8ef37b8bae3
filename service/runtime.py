"""The model backend: synchronous, NumPy in and NumPy out, no asyncio and no HTTP.

`Runtime` is the bundle's `contract.runner.ModelRunner` (the copy, the session, input checks,
padding: the same code `atomize index` runs) plus what serving adds: requests' items, the bank
search and the metrics. `prepare` turns raw request inputs into `Item`s and `run` turns a batch
of items into `ItemResult`s: one padded ONNX Runtime call, one vectorised neighbor search. The
batcher calls `run` from its worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from contract.bank import Bank, open_bank
from contract.bundle import Bundle
from contract.index import EMPTY, Neighbors, RankBy
from contract.inputs import InputProblem
from contract.runner import CPU, DeviceError, ModelRunner

from .errors import InvalidInput, TooLarge
from .metrics import Metrics

__all__ = ["CPU", "DeviceError", "Item", "ItemResult", "Runtime"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One input, ready for the model."""

    components: np.ndarray  # text: (n,) int64 token ids; numeric: (n, f) float32, unscaled
    neighbors: int = 0  # how many bank atoms to return
    rank_by: RankBy = "distance"
    truncated: bool = False  # text cut to the model's maximum length

    @property
    def length(self) -> int:
        return int(self.components.shape[0])


@dataclass(frozen=True)
class ItemResult:
    embedding: np.ndarray  # (k,) float32
    roles: np.ndarray  # (n, 3) float32, rows sum to 1
    composition: np.ndarray  # (6,) float32, columns = manifest.composition_fields
    neighbors: Neighbors
    bank: Bank  # the bank the neighbors' rows index: the one the batch started with


class Runtime(ModelRunner):
    def __init__(self, bundle: Bundle, *, device: str = "auto", precision: str = "auto",
                 max_components_per_input: int = 1024, metrics: Metrics | None = None,
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
        return [Item(components, neighbors, rank_by, truncated) for components, truncated in prepared]

    def component_positions(self, item: Item) -> list[int]:
        """Positions of the item's real components: all but the tokenizer's special tokens."""
        if not self.special_ids:
            return list(range(item.length))
        return np.flatnonzero(~np.isin(item.components, self.special_ids)).tolist()

    def token_strings(self, item: Item) -> list[str] | None:
        """What each component is, for display: token text (text) or None (numeric, use the index)."""
        if self.tokenizer is None:
            return None
        return [self.tokenizer.id_to_token(int(i)) or "" for i in item.components]

    # ---- inference -----------------------------------------------------------------------

    def run(self, items: Sequence[Item], *, record: bool = True) -> list[ItemResult]:
        """The batch's results, in order; `record=False` keeps it out of the metrics (warm-up)."""
        started = time.perf_counter()
        bank = self.bank  # one bank for the whole batch, even if a reload swaps it meanwhile
        embedding, roles, composition = self.infer([item.components for item in items])
        searched = time.perf_counter()
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
        return [
            ItemResult(embedding[i], roles[i][: item.length], composition[i], neighbors[i], bank)
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
