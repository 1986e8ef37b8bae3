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
from typing import Any

import numpy as np

from contract.bundle import Bundle, load_bundle
from contract.inputs import InputProblem
from contract.runner import ModelRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Atoms:
    """Outputs for a batch of inputs, in input order."""

    embedding: np.ndarray  # (B, k) float32
    radius: np.ndarray  # (B,) float32
    charge: np.ndarray  # (B,) float32


class Atomizer:
    def __init__(self, bundle: Bundle | Path | str, *, device: str = "cpu", precision: str = "auto",
                 threads: int = 0, batch_size: int = 64):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.runner = ModelRunner(self.bundle, device=device, precision=precision, threads=threads)
        self.batch_size = batch_size
        fields = self.bundle.manifest.composition_fields
        self._radius, self._charge = fields.index("radius"), fields.index("charge")

    @property
    def precision(self) -> str:
        return self.runner.precision

    def prepare(self, values: Sequence[Any]) -> list[np.ndarray | str]:
        """Each value as model components, or a string saying why the model cannot take it.
        Texts longer than the model takes are cut to its length, as the service cuts them."""
        try:
            return [components for components, _ in self.runner.prepare_components(values)]
        except InputProblem:
            pass  # at least one bad value: find out which, one by one
        out: list[np.ndarray | str] = []
        for value in values:
            try:
                (components, _), = self.runner.prepare_components([value], field="value")
                out.append(components)
            except InputProblem as problem:
                out.append(problem.message.replace("value[0]", "the value", 1))
        return out

    def run(self, components: Sequence[np.ndarray]) -> Atoms:
        """Atoms for prepared inputs; batches group similar lengths to cut padding."""
        count = len(components)
        embedding = np.zeros((count, self.bundle.manifest.embedding_dim), np.float32)
        composition = np.zeros((count, len(self.bundle.manifest.composition_fields)), np.float32)
        order = np.argsort([len(c) for c in components], kind="stable")
        for start in range(0, count, self.batch_size):
            rows = order[start : start + self.batch_size]
            embedding[rows], composition[rows] = self.runner.infer([components[i] for i in rows],
                                                                   ("embedding", "composition"))
        return Atoms(embedding, composition[:, self._radius].copy(), composition[:, self._charge].copy())

    def atomize(self, values: Sequence[Any]) -> tuple[Atoms, list[str | None]]:
        """Prepare and run: atoms for every value (zeros where it failed) and each value's problem."""
        prepared = self.prepare(values)
        problems = [item if isinstance(item, str) else None for item in prepared]
        good = [i for i, item in enumerate(prepared) if not isinstance(item, str)]
        dim = self.bundle.manifest.embedding_dim
        atoms = Atoms(np.zeros((len(values), dim), np.float32), np.zeros(len(values), np.float32),
                      np.zeros(len(values), np.float32))
        if good:
            found = self.run([prepared[i] for i in good])
            atoms.embedding[good], atoms.radius[good], atoms.charge[good] = found.embedding, found.radius, found.charge
        return atoms, problems
