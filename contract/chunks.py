"""A long text as a molecule: the atoms of its windows (chunks) pooled into the text's atom.

`TextInputs.chunk` (contract/inputs.py) cuts a text into overlapping windows; the model atomizes
each window like any input; `pool` builds the text's atom from them, the same way in the service
and in `atomize index`:

- embedding: the windows' nuclei averaged, plain (`mean`) or weighted by each window's mass
  (`mass`, the bundle's `input.chunk_pooling`), then put back on the sphere the nuclei lie on
  (their mean norm), so a pooled atom is searched against the same bank as any other;
- composition: the text's components counted once each: each window's protons, neutrons,
  electrons and mass scaled by the share of its components it reports (an overlap is halved
  between its two windows) and summed; the charge (protons - electrons) / components, normalised
  as the model normalises an atom's; the radius the mass-weighted mean of the windows' (a
  molecule is as wide as its atoms on average, not their sum);
- bonds: the pair energy of each window with the next (`contract.potential.pair_energy`, the
  energy the service ranks neighbours by): how strongly the molecule holds together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .bundle import PotentialSpec
from .potential import pair_energy

Pooling = Literal["mean", "mass"]
COUNTS = ("protons", "neutrons", "electrons", "mass")


def pool(embedding: np.ndarray, composition: np.ndarray, fields: Sequence[str], how: Pooling,
         owned: Sequence[int], read: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(embedding (k,), composition (len(fields),)) of a text from its windows' (c, k) and (c, 6);
    `owned`: the components each window reports, `read`: the components it read ([CLS]/[SEP]
    not counted either way)."""
    embedding = np.asarray(embedding, dtype=np.float32)
    composition = np.asarray(composition, dtype=np.float32)
    if len(embedding) == 1:
        return embedding[0].copy(), composition[0].copy()
    share = np.asarray(owned, np.float32) / np.maximum(np.asarray(read, np.float32), 1.0)
    mass = np.maximum(composition[:, list(fields).index("mass")], 0.0)
    weights = mass if how == "mass" and mass.sum() > 0 else np.ones(len(embedding), np.float32)
    weights = weights / weights.sum()
    pooled = weights @ embedding
    norm = float(np.linalg.norm(pooled))
    target = float(np.linalg.norm(embedding, axis=1).mean())
    if norm > 0:
        pooled = pooled * (target / norm)
    fields = list(fields)
    out = np.empty(len(fields), np.float32)
    for j, name in enumerate(fields):
        column = composition[:, j]
        if name in COUNTS:
            out[j] = float(share @ column)
        elif name == "radius":  # the mass-weighted mean
            weight = mass / mass.sum() if mass.sum() > 0 else np.full(len(column), 1.0 / len(column))
            out[j] = float(weight @ column)
    if "charge" in fields:
        out[fields.index("charge")] = (out[fields.index("protons")] - out[fields.index("electrons")]) / max(sum(owned), 1)
    return pooled.astype(np.float32), out


def bonds(embedding: np.ndarray, composition: np.ndarray, fields: Sequence[str], spec: PotentialSpec) -> np.ndarray:
    """(c - 1,) pair energy of each window with the next; lower = more strongly bound."""
    if len(embedding) < 2:
        return np.zeros(0, np.float32)
    radius = composition[:, list(fields).index("radius")]
    charge = composition[:, list(fields).index("charge")]
    distance = np.linalg.norm(embedding[1:] - embedding[:-1], axis=1)
    return pair_energy(distance, radius[:-1], radius[1:], charge[:-1], charge[1:], spec).astype(np.float32)

