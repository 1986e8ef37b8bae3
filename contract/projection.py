"""The 2D map of a bank: a linear projection fitted once when a bank is written, stored with it.

A person looking at the explorer's map sees every bank atom at `xy = (z - mean) @ axes.T` and the
query placed by the same two lines of arithmetic, so the page needs no heavy computing and the
query lands where the bank's own atoms would. The axes are the bank's top two principal axes
(orthonormal, so a distance on the map is never larger than the true one).

NumPy and pydantic only: the exporter (torch side), `atomize index` and the service (no torch)
all import this module.

A bundle stores the map in `projection.npz`: `mean` (k,), `axes` (2, k) and `xy` (M, 2), one row
per atom of `atoms.npz`, all float32 (checksummed by the manifest like every bundle file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

PROJECTION_FILE = "projection.npz"
PROJECTION_SAMPLE = 20_000  # rows the axes are fitted on: plenty for two directions
SEED = 0


class Projection(BaseModel):
    """A linear 2D map of the embedding: xy = (z - mean) @ axes.T, so a query can be placed too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["pca"] = "pca"
    mean: list[float]  # (k,)
    axes: list[list[float]]  # (2, k)

    def apply(self, embedding: np.ndarray) -> np.ndarray:
        """(M, k) -> (M, 2) float32."""
        centred = np.asarray(embedding, np.float32) - np.asarray(self.mean, np.float32)
        return (centred @ np.asarray(self.axes, np.float32).T).astype(np.float32)


def fit_projection(embedding: np.ndarray, seed: int = SEED, sample: int = PROJECTION_SAMPLE) -> Projection:
    """Top two principal axes of the embedding (fitted on a seeded sample of `sample` rows for
    large banks). Each axis's sign is fixed (its largest-magnitude entry is positive), so the
    same bank gives the same picture whatever the SVD routine returns."""
    x = np.asarray(embedding, np.float64)
    if x.ndim != 2:
        raise ValueError(f"embedding must be (M, k), got shape {x.shape}")
    dim = x.shape[1]
    if len(x) > sample:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), sample, replace=False))]
    mean = x.mean(axis=0) if len(x) else np.zeros(dim)
    axes = np.zeros((2, dim))
    if len(x) >= 2:
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)  # vt: (min(M, k), k)
        axes[: min(2, len(vt))] = vt[:2]
    elif dim >= 2:
        axes[0, 0] = axes[1, 1] = 1.0
    for axis in axes:
        if axis.any() and axis[np.abs(axis).argmax()] < 0:
            axis *= -1.0
    return Projection(mean=mean.tolist(), axes=axes.tolist())


def write_projection(path: Path | str, embedding: np.ndarray) -> Projection:
    """Fit the map of `embedding` (M, k) and write `projection.npz` (mean, axes, xy) to `path`."""
    projection = fit_projection(embedding)
    np.savez(
        path,
        mean=np.asarray(projection.mean, np.float32),
        axes=np.asarray(projection.axes, np.float32),
        xy=projection.apply(embedding),
    )
    return projection


def read_projection(path: Path | str, rows: int, dim: int) -> tuple[Projection, np.ndarray]:
    """(projection, xy (rows, 2) float32) from a `projection.npz` written for a bank of `rows`
    atoms of `dim` dimensions; ValueError naming the problem when the file does not fit."""
    with np.load(path, allow_pickle=False) as data:
        try:
            mean, axes, xy = data["mean"], data["axes"], data["xy"]
        except KeyError as exc:
            raise ValueError(f"missing array {exc}") from None
    for name, array, shape in (("mean", mean, (dim,)), ("axes", axes, (2, dim)), ("xy", xy, (rows, 2))):
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if not (np.isfinite(mean).all() and np.isfinite(axes).all() and np.isfinite(xy).all()):
        raise ValueError("non-finite values")
    projection = Projection(mean=mean.astype(np.float64).tolist(), axes=axes.astype(np.float64).tolist())
    return projection, xy.astype(np.float32)
