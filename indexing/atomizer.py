"""A bundle's encoder as a plain function: raw inputs in, embedding, radius and charge out.

Used by `atomize index`, on one machine or inside Ray actors. The model runs through
`contract.runner.ModelRunner`, the code that serves it: the same copy on the same device (int8
on a CPU when the bundle has it, recorded in the bank's manifest), inputs validated and prepared
the same way, so a bank atom and a served query of the same input get the same embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from contract import chunks
from contract.bundle import Bundle, load_bundle
from contract.inputs import InputProblem, Prepared
from contract.runner import ModelRunner

log = logging.getLogger(__name__)

# what becomes of a text past the model's length: cut to it, read whole and pooled into one atom,
# or read whole with one atom per window
Long = Literal["truncate", "pool", "chunks"]


@dataclass(frozen=True)
class Atoms:
    """Outputs for a batch of inputs, in input order."""

    embedding: np.ndarray  # (B, k) float32
    radius: np.ndarray  # (B,) float32
    charge: np.ndarray  # (B,) float32


class Atomizer:
    def __init__(self, bundle: Bundle | Path | str, *, device: str = "cpu", precision: str = "auto",
                 threads: int = 0, batch_size: int = 64, max_chunks: int = 64):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.max_chunks = max_chunks  # windows of one long text; more is a bad row
        self.runner = ModelRunner(self.bundle, device=device, precision=precision, threads=threads)
        self.batch_size = batch_size
        fields = self.bundle.manifest.composition_fields
        self._radius, self._charge = fields.index("radius"), fields.index("charge")

    @property
    def precision(self) -> str:
        return self.runner.precision

    def prepare(self, values: Sequence[Any], long: Long = "truncate") -> list[list[Prepared] | str]:
        """Each value as its windows (one unless `long` reads long texts whole), or a string saying
        why the model cannot take it. "truncate" cuts a long text to the model's length, as the
        service does by default; "pool" and "chunks" read it whole in the bundle's windows, as
        the service does for `"chunk": true`."""
        def one(batch: Sequence[Any], field: str) -> list[list[Prepared]]:
            if long == "truncate":
                return [[item] for item in self.runner.prepare_components(batch, field=field)]
            return self.runner.prepare_chunks(batch, field=field, max_chunks=self.max_chunks)

        try:
            return list(one(values, "inputs"))
        except InputProblem:
            pass  # at least one bad value: find out which, one by one
        out: list[list[Prepared] | str] = []
        for value in values:
            try:
                out.append(one([value], "value")[0])
            except InputProblem as problem:
                out.append(problem.message.replace("value[0]", "the value", 1))
        return out

    def run(self, components: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, composition) of prepared inputs; batches group similar lengths to cut padding."""
        count = len(components)
        embedding = np.zeros((count, self.bundle.manifest.embedding_dim), np.float32)
        composition = np.zeros((count, len(self.bundle.manifest.composition_fields)), np.float32)
        order = np.argsort([len(c) for c in components], kind="stable")
        for start in range(0, count, self.batch_size):
            rows = order[start : start + self.batch_size]
            embedding[rows], composition[rows] = self.runner.infer([components[i] for i in rows],
                                                                   ("embedding", "composition"))
        return embedding, composition

    def atoms(self, embedding: np.ndarray, composition: np.ndarray) -> Atoms:
        return Atoms(embedding, composition[:, self._radius].copy(), composition[:, self._charge].copy())

    def atomize(self, values: Sequence[Any], long: Long = "truncate") -> tuple[Atoms, list[str | None]]:
        """Prepare and run: one atom per value (a long text's windows pooled, with long="pool";
        zeros where it failed) and each value's problem."""
        atoms, problems, _ = self.atomize_windows(values, long)
        return atoms, problems

    def atomize_windows(self, values: Sequence[Any], long: Long = "truncate") -> tuple[Atoms, list[str | None], list[list[tuple[int, int] | None]]]:
        """As `atomize`; with long="chunks" one atom per window instead, all values' windows in
        order, and for each value the character spans of its windows (one None entry otherwise)."""
        prepared = self.prepare(values, long)
        problems = [item if isinstance(item, str) else None for item in prepared]
        fields = self.bundle.manifest.composition_fields
        windows = [w for item in prepared if not isinstance(item, str) for w in item]
        embedding, composition = self.run([w.components for w in windows]) if windows else (None, None)
        dim, width = self.bundle.manifest.embedding_dim, len(fields)
        rows_e: list[np.ndarray] = []
        rows_c: list[np.ndarray] = []
        spans: list[list[tuple[int, int] | None]] = []
        at = 0
        for item in prepared:
            if isinstance(item, str):
                rows_e.append(np.zeros((1, dim), np.float32))
                rows_c.append(np.zeros((1, width), np.float32))
                spans.append([None])
                continue
            e, c = embedding[at : at + len(item)], composition[at : at + len(item)]
            at += len(item)
            if long == "chunks":
                rows_e.append(e)
                rows_c.append(c)
                spans.append([w.span for w in item])
            else:
                special = list(self.runner.special_ids)
                read = [int((~np.isin(w.components, special)).sum()) for w in item]
                owned = [w.owned[1] - w.owned[0] if w.owned else n for w, n in zip(item, read)]
                pooled, summed = chunks.pool(e, c, fields, self.bundle.manifest.input.chunk_pooling, owned, read)
                rows_e.append(pooled[None])
                rows_c.append(summed[None])
                spans.append([None])
        atoms = self.atoms(np.concatenate(rows_e) if rows_e else np.zeros((0, dim), np.float32),
                           np.concatenate(rows_c) if rows_c else np.zeros((0, width), np.float32))
        return atoms, problems, spans
