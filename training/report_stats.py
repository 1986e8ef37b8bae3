"""The training report's statistics, computed once and shared by the report and the explorer.

`compute_stats` turns a bank and a sample of role probabilities into a `ReportStats`;
`training.report` draws its figures from it, and `ReportStats.to_json` is written next to them
as `report/stats.json`, which the service hands to the explorer page as it is (the service
reads JSON, never this module). NumPy only: no matplotlib here. Large inputs are subsampled
with a fixed seed, so the same bank gives the same numbers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from contract.index import AtomIndex, IndexSpec
from contract.projection import Projection, fit_projection

log = logging.getLogger(__name__)

ROLES = ("electron", "proton", "neutron")
SEED = 0
MAX_PLOT_ATOMS = 1500  # atoms drawn in atoms.png
MAX_NN_ATOMS = 5000  # query atoms for the nearest-neighbour ratios (searched against the whole bank)
TOP_K = 15
# A token seen fewer times than this says little about its role, however high its lift: rare
# tokens would otherwise fill every list with one-off pieces whose role is noise.
MIN_TOKEN_COUNT = 5


def load_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(step records, epoch records) of a metrics.jsonl, sorted by step; a resumed run appends
    to the same file, so the last record for a step (or epoch) wins. Missing file -> ([], [])."""
    if not path.is_file():
        return [], []
    steps: dict[int, dict] = {}
    epochs: dict[int, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:
            log.warning("%s:%d: not JSON, skipped", path, number)
            continue
        if record.get("kind") == "step" and "step" in record:
            steps[int(record["step"])] = record
        elif record.get("kind") == "epoch" and "epoch" in record:
            epochs[int(record["epoch"])] = record
    return [steps[s] for s in sorted(steps)], [epochs[e] for e in sorted(epochs)]


def nearest_contact_ratios(
    embedding: np.ndarray, radius: np.ndarray, queries: np.ndarray | None = None
) -> np.ndarray:
    """For each query atom a (indexes into the bank; all atoms when None): ||z_a - z_b|| / (R_a + R_b)
    where b is a's nearest other atom in the whole bank. < 1 means the two overlap. Returns (Q,).
    The search is the served one (contract.index, exact); the chosen pair's distance is then float64."""
    z = np.asarray(embedding, dtype=np.float32)  # (M, k)
    q = np.arange(len(z)) if queries is None else np.asarray(queries, dtype=np.int64)  # (Q,)
    if len(z) < 2:
        return np.full(len(q), np.nan)
    nearest = AtomIndex(z, spec=IndexSpec("flat")).nearest(z[q], 1, exclude=q)[0][:, 0]  # (Q,), exact
    z64, r64 = np.asarray(embedding, dtype=np.float64), np.asarray(radius, dtype=np.float64)
    distance = np.linalg.norm(z64[q] - z64[nearest], axis=1)  # (Q,)
    return distance / np.maximum(r64[q] + r64[nearest], 1e-12)


def role_by_position(roles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3, n) mean role probability at each component index over real components; NaN where
    no item has a real component at that index."""
    m = np.asarray(mask, dtype=np.float64)  # (N, n)
    totals = np.einsum("inr,in->rn", np.asarray(roles, dtype=np.float64), m)  # (3, n)
    counts = m.sum(axis=0)  # (n,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / counts, np.nan)


def role_grid(roles: np.ndarray, mask: np.ndarray, preprocess: dict) -> np.ndarray:
    """(3, H/ph, W/pw): `role_by_position` laid out on the patch grid (patches in row-major order);
    grid cells beyond the last component are NaN. ValueError if there are more components than cells."""
    (height, width), (ph, pw) = preprocess["image_shape"][-2:], preprocess["patch_shape"][-2:]
    gh, gw = height // ph, width // pw
    means = role_by_position(roles, mask)  # (3, n)
    if means.shape[1] > gh * gw:
        raise ValueError(f"{means.shape[1]} components do not fit a {gh}x{gw} patch grid")
    padded = np.full((3, gh * gw), np.nan)
    padded[:, : means.shape[1]] = means
    return padded.reshape(3, gh, gw)


def role_shares(roles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3,) mean role probability over all real components (as `model.atom.role_usage`)."""
    m = np.asarray(mask, dtype=np.float64)
    return np.einsum("inr,in->r", np.asarray(roles, dtype=np.float64), m) / max(m.sum(), 1.0)


@dataclass(frozen=True)
class TokenScore:
    """One token's standing in one role: `share` is its mean probability of that role over its
    `count` real occurrences, `lift` that share over the role's average share (1 = typical)."""

    token_id: int
    count: int
    share: float
    lift: float


def top_tokens(
    roles: np.ndarray, mask: np.ndarray, token_ids: np.ndarray, k: int = TOP_K, min_count: int = MIN_TOKEN_COUNT
) -> list[list[TokenScore]]:
    """Per role (electron, proton, neutron), the k most characteristic tokens: seen at least
    `min_count` times, ranked by lift (their mean probability of the role over the role's
    average share), then by count, then by id; only tokens with lift > 1 qualify.

    Ranking by raw occurrences would list the most frequent tokens (punctuation, stop words)
    under whichever role they lean to, which says more about the corpus than about the role."""
    real = np.asarray(mask, dtype=bool)  # (N, n)
    probabilities = np.asarray(roles, dtype=np.float64)[real]  # (R, 3)
    ids = np.asarray(token_ids)[real]  # (R,)
    if len(ids) == 0:
        return [[] for _ in ROLES]
    average = probabilities.mean(axis=0)  # (3,): each role's share over all components
    values, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)  # (T,), (R,), (T,)
    sums = np.zeros((len(values), 3))
    np.add.at(sums, inverse, probabilities)
    share = sums / counts[:, None]  # (T, 3)
    lift = share / np.maximum(average, 1e-12)  # (T, 3)
    result = []
    for role in range(3):
        order = np.lexsort((values, -counts, -lift[:, role]))  # last key is primary
        keep = [i for i in order if counts[i] >= min_count and lift[i, role] > 1.0][:k]
        result.append([TokenScore(int(values[i]), int(counts[i]), float(share[i, role]), float(lift[i, role]))
                       for i in keep])
    return result


def subsample(size: int, limit: int) -> np.ndarray:
    """Sorted seeded sample of at most `limit` indexes out of `size`."""
    if size <= limit:
        return np.arange(size)
    return np.sort(np.random.default_rng(SEED).choice(size, limit, replace=False))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True)
class ReportStats:
    """Everything the report draws and the explorer shows, computed once per bundle."""

    bank_size: int
    embedding_dim: int
    label_names: list[str]
    projection: Projection
    plot_rows: np.ndarray  # (P,) bank rows drawn in atoms.png
    plot_xy: np.ndarray  # (P, 2) their map coordinates
    radius: np.ndarray  # (M,) every bank atom's radius
    contact_ratios: np.ndarray  # (Q,) finite nearest-neighbour distance / contact distance
    shares: np.ndarray  # (3,) role shares
    by_position: np.ndarray  # (3, n) mean role probability per component index
    grid: np.ndarray | None  # (3, gh, gw) the same on the patch grid, image models only
    tokens: list[list[TokenScore]] | None  # per role, text models only
    token_names: dict[int, str]  # token id -> text, for the ids in `tokens`

    def summary(self) -> dict:
        ratios, radius = self.contact_ratios, self.radius
        return {
            "atoms in bank": self.bank_size,
            "embedding dim": self.embedding_dim,
            "labels": len(self.label_names),
            "mean radius": _finite(radius.mean()) if len(radius) else None,
            "median nn distance / contact": _finite(np.median(ratios)) if len(ratios) else None,
            **{f"{name} share": float(s) for name, s in zip(ROLES, self.shares)},
        }

    def to_json(self) -> dict:
        """What `report/stats.json` holds: plain numbers, no arrays the size of the bank."""
        ratios, radius = self.contact_ratios, self.radius
        quantiles = (0.0, 0.1, 0.5, 0.9, 1.0)
        return {
            "summary": self.summary(),
            "role_names": list(ROLES),
            "role_shares": self.shares.tolist(),
            "radius_quantiles": dict(zip(map(str, quantiles), np.quantile(radius, quantiles).tolist()))
            if len(radius) else {},
            "overlap_fraction": float((ratios < 1).mean()) if len(ratios) else None,
            "top_tokens": None if self.tokens is None else {
                name: [{"token": self.token_names.get(t.token_id, f"#{t.token_id}"), "token_id": t.token_id,
                        "count": t.count, "share": t.share, "lift": t.lift} for t in scores]
                for name, scores in zip(ROLES, self.tokens)},
            "min_token_count": MIN_TOKEN_COUNT,
            "role_grid": None if self.grid is None else np.where(np.isnan(self.grid), None, self.grid).tolist(),
        }


def compute_stats(
    *,
    bank_embedding: np.ndarray,  # (M, k)
    bank_radius: np.ndarray,  # (M,)
    label_names: list[str],
    roles: np.ndarray,  # (N, n, 3) a sample of items
    mask: np.ndarray,  # (N, n)
    token_ids: np.ndarray | None,  # (N, n) text models
    id_to_token: Callable[[int], str | None] | None,
    preprocess: dict,
    projection: Projection | None = None,  # the bank's stored map; fitted here when absent
) -> ReportStats:
    embedding = np.asarray(bank_embedding)
    projection = projection or fit_projection(embedding)
    rows = subsample(len(embedding), MAX_PLOT_ATOMS)
    ratios = nearest_contact_ratios(embedding, bank_radius, subsample(len(embedding), MAX_NN_ATOMS))
    grid = None
    if preprocess.get("kind") == "patches":
        try:
            grid = role_grid(roles, mask, preprocess)
        except ValueError as error:
            log.warning("roles: %s; per component index instead", error)
    tokens = top_tokens(roles, mask, token_ids) if token_ids is not None and grid is None else None
    names = {}
    for scores in tokens or []:
        for score in scores:
            names[score.token_id] = (id_to_token(score.token_id) if id_to_token else None) or f"#{score.token_id}"
    return ReportStats(
        bank_size=len(embedding),
        embedding_dim=int(np.shape(embedding)[1]),
        label_names=list(label_names),
        projection=projection,
        plot_rows=rows,
        plot_xy=projection.apply(embedding[rows]),
        radius=np.asarray(bank_radius, dtype=np.float64),
        contact_ratios=ratios[np.isfinite(ratios)],
        shares=role_shares(roles, mask),
        by_position=role_by_position(roles, mask),
        grid=grid,
        tokens=tokens,
        token_names=names,
    )
