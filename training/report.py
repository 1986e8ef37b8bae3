"""Training report: PNG figures and a report.html for a bundle's `report/` folder.

`write_report` is the only entry point the exporter needs; the statistics behind the figures
(`nearest_contact_ratios`, `role_by_position`, `role_grid`, `top_tokens`, `load_metrics`) are
public so tests can check them on hand-made inputs. Everything is NumPy-vectorised and the
large inputs are subsampled with a fixed seed, so a report is reproducible and quick.
"""

from __future__ import annotations

import html
import io
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from PIL import Image  # a matplotlib dependency

from contract.index import AtomIndex, IndexSpec

log = logging.getLogger(__name__)

ROLES = ("electron", "proton", "neutron")
ROLE_COLOURS = ("#1f77b4", "#d62728", "#7f7f7f")
DPI = 110
SEED = 0
MAX_PLOT_ATOMS = 1500  # atoms drawn in atoms.png
MAX_NN_ATOMS = 5000  # query atoms for nn_distance.png (searched against the whole bank)
TOP_K = 15
MAX_LEGEND = 20


# ----------------------------------------------------------------------------- statistics


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


def top_tokens(
    roles: np.ndarray, mask: np.ndarray, token_ids: np.ndarray, k: int = TOP_K
) -> list[list[tuple[int, int]]]:
    """Per role, the k token ids with the most real occurrences whose argmax role is that role:
    [[(token_id, count), ...] for electron, proton, neutron], by count then id."""
    real = np.asarray(mask, dtype=bool)  # (N, n)
    winner = np.asarray(roles).argmax(axis=-1)[real]  # (R,)
    ids = np.asarray(token_ids)[real]  # (R,)
    result = []
    for role in range(3):
        values, counts = np.unique(ids[winner == role], return_counts=True)
        result.append([(int(values[i]), int(counts[i])) for i in np.lexsort((values, -counts))[:k]])
    return result


def role_shares(roles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3,) mean role probability over all real components (as `model.atom.role_usage`)."""
    m = np.asarray(mask, dtype=np.float64)
    return np.einsum("inr,in->r", np.asarray(roles, dtype=np.float64), m) / max(m.sum(), 1.0)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(M, 2) projection onto the top two principal axes (orthonormal, so distances only shrink)."""
    if len(x) < 2:
        return np.zeros((len(x), 2))
    centred = x - x.mean(axis=0)  # (M, k)
    if centred.shape[1] < 2:
        return np.pad(centred, ((0, 0), (0, 2 - centred.shape[1])))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(M, k), k)
    return centred @ vt[:2].T


def subsample(size: int, limit: int) -> np.ndarray:
    """Sorted seeded sample of at most `limit` indexes out of `size`."""
    if size <= limit:
        return np.arange(size)
    return np.sort(np.random.default_rng(SEED).choice(size, limit, replace=False))


# ----------------------------------------------------------------------------- figures


def figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A Figure on an Agg canvas, without pyplot: no global backend switch, nothing to close."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False).ravel()


def save(fig: Figure, path: Path, palette: bool = False) -> None:
    """palette: store 256 colours; thousands of overlapping translucent discs make millions of
    colours, which would cost ~4x the bytes (~450 KB) for no visible gain."""
    fig.tight_layout()
    if not palette:
        fig.savefig(path, dpi=DPI)
        return
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path)


def note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey", fontsize=12)


def plot_loss(metrics_path: Path, path: Path) -> str:
    steps, epochs = load_metrics(metrics_path)
    fig, (ax_task, ax_pot, ax_val) = figure(1, 3, (13, 3.6))
    x = [r["step"] for r in steps]
    for key, ax, style in (("loss", ax_task, ":"), ("task", ax_task, "-"), ("potential", ax_pot, "-")):
        if any(key in r for r in steps):
            ax.plot(x, [r.get(key, np.nan) for r in steps], style, label=key)
    val = [(r["epoch"], r["val_accuracy"]) for r in epochs if "val_accuracy" in r]
    if val:
        ax_val.plot(*zip(*val), "o-", color="tab:green")
    for ax, title, empty in ((ax_task, "loss", not steps), (ax_pot, "potential energy U", not steps),
                             (ax_val, "validation accuracy", not val)):
        ax.set(title=title, xlabel="epoch" if ax is ax_val else "step")
        ax.grid(alpha=0.3)
        if empty:
            note(ax, "no metrics")
    if steps:
        ax_task.legend()
    save(fig, path)
    if not steps and not epochs:
        return "no metrics: metrics.jsonl is missing or empty."
    return f"{len(steps)} step records, {len(epochs)} epoch records."


def plot_atoms(embedding, radius, label, names: list[str], path: Path) -> str:
    keep = subsample(len(embedding), MAX_PLOT_ATOMS)  # (P,)
    xy = pca_2d(np.asarray(embedding[keep], dtype=np.float64))  # (P, 2)
    r, lab = np.asarray(radius[keep], dtype=np.float64), np.asarray(label[keep])  # (P,), (P,)
    classes = np.unique(lab)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colours = cmap(np.searchsorted(classes, lab) % cmap.N)  # (P, 4)
    faint, edge = colours.copy(), colours.copy()
    faint[:, 3], edge[:, 3] = 0.03, 0.15  # overlapping discs add up; edges show each atom's size
    fig, (ax,) = figure(1, 1, (8.5, 6.5))
    ax.add_collection(EllipseCollection(2 * r, 2 * r, np.zeros_like(r), units="xy", offsets=xy,
                                        offset_transform=ax.transData, facecolors=faint, edgecolors=edge, linewidths=0.3))
    ax.scatter(xy[:, 0], xy[:, 1], s=7, c=colours, edgecolors="black", linewidths=0.2)
    for i, c in enumerate(classes[:MAX_LEGEND]):
        ax.scatter([], [], color=cmap(i % cmap.N), label=names[c] if 0 <= c < len(names) else str(c))
    if len(classes):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, markerscale=2, frameon=False)
    pad = float(r.max()) if len(r) else 1.0
    lo, hi = (xy.min(axis=0) - pad, xy.max(axis=0) + pad) if len(xy) else ((-1, -1), (1, 1))
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), aspect="equal", xlabel="PC 1", ylabel="PC 2",
           title=f"atoms: PCA of the nucleus positions ({len(keep)} of {len(embedding)})")
    save(fig, path, palette=True)
    return f"{len(keep)} of {len(embedding)} atoms, {len(classes)} labels."


def plot_nn_distance(embedding, radius, path: Path) -> tuple[str, np.ndarray]:
    ratios = nearest_contact_ratios(embedding, radius, subsample(len(embedding), MAX_NN_ATOMS))  # (Q,)
    finite = ratios[np.isfinite(ratios)]
    fig, (ax,) = figure(1, 1, (7, 3.8))
    if len(finite):
        ax.hist(finite, bins=60, color="tab:purple", alpha=0.8)
    else:
        note(ax, "fewer than two atoms")
    ax.axvline(1.0, color="black", linestyle="--", label="contact (r = R_a + R_b)")
    ax.set(xlabel="nearest-neighbour distance / contact distance", ylabel="atoms")
    ax.legend()
    save(fig, path)
    overlap = float((finite < 1).mean()) if len(finite) else float("nan")
    return f"{len(finite)} atoms; {overlap:.1%} overlap their nearest neighbour (ratio < 1).", finite


def plot_role_grid(grid: np.ndarray, path: Path) -> str:
    fig, axes = figure(1, 3, (12, 4))
    for role, ax in enumerate(axes):
        image = ax.imshow(grid[role], vmin=0, vmax=1, cmap="viridis")  # grid: (3, gh, gw)
        ax.set(title=f"P({ROLES[role]}) per patch", xticks=[], yticks=[])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    save(fig, path)
    return "Mean role probability at each patch position, on the image's patch grid."


def plot_top_tokens(tops: list[list[tuple[int, int]]], name: Callable[[int], str], path: Path) -> str:
    fig, axes = figure(1, 3, (13, 4.8))
    for role, ax in enumerate(axes):
        pairs = tops[role][::-1]  # most frequent at the top
        labels = [(name(t) or f"#{t}").replace("$", r"\$") for t, _ in pairs]  # no mathtext; unknown id -> None
        ax.barh(np.arange(len(pairs)), [c for _, c in pairs], color=ROLE_COLOURS[role], tick_label=labels)
        ax.set(title=f"{ROLES[role]}: top tokens", xlabel="occurrences")
        ax.tick_params(axis="y", labelsize=8)
        if not pairs:
            note(ax, "no token")
    save(fig, path)
    return f"The {TOP_K} most frequent tokens among occurrences whose most probable role is each role."


def plot_role_positions(means: np.ndarray, path: Path) -> str:
    means = np.nan_to_num(means)  # (3, n)
    fig, (ax,) = figure(1, 1, (max(6, min(14, 0.15 * means.shape[1])), 3.8))
    bottom = np.zeros(means.shape[1])
    for role in range(3):
        ax.bar(np.arange(means.shape[1]), means[role], bottom=bottom, color=ROLE_COLOURS[role], label=ROLES[role])
        bottom += means[role]
    ax.set(xlabel="component index", ylabel="mean role probability")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    save(fig, path)
    return "Mean role probability at each component index (stacked)."


def plot_roles(roles, mask, token_ids, id_to_token, preprocess: dict, path: Path) -> str:
    if preprocess.get("kind") == "patches":
        try:
            return plot_role_grid(role_grid(roles, mask, preprocess), path)
        except ValueError as error:
            log.warning("roles.png: %s; plotting per component index instead", error)
    elif token_ids is not None:
        return plot_top_tokens(top_tokens(roles, mask, token_ids), id_to_token or str, path)
    return plot_role_positions(role_by_position(roles, mask), path)


def plot_role_usage(roles, mask, metrics_path: Path, path: Path) -> tuple[str, np.ndarray]:
    shares = role_shares(roles, mask)  # (3,)
    history = [(r["epoch"], r["role_usage"]) for r in load_metrics(metrics_path)[1] if len(r.get("role_usage") or []) == 3]
    fig, axes = figure(1, 2 if history else 1, (11 if history else 5.5, 3.8))
    bars = axes[0].bar(ROLES, shares, color=ROLE_COLOURS)
    axes[0].bar_label(bars, labels=[f"{s:.1%}" for s in shares])
    axes[0].set(ylim=(0, 1), title="role share (training items)")
    if history:
        epochs, usage = np.array([e for e, _ in history]), np.array([u for _, u in history])  # (E,), (E, 3)
        for role in range(3):
            axes[1].plot(epochs, usage[:, role], "o-", color=ROLE_COLOURS[role], label=ROLES[role])
        axes[1].set(ylim=(0, 1), xlabel="epoch", title="role usage per epoch (validation)")
        axes[1].legend()
    save(fig, path)
    return "Shares: " + ", ".join(f"{n} {s:.1%}" for n, s in zip(ROLES, shares)) + ".", shares


# ----------------------------------------------------------------------------- html

CAPTIONS = {
    "loss.png": "Task loss (and total loss) and the potential energy per atom U per step, each on its own "
                "axis; validation accuracy per epoch. Look for a task loss that falls and a potential that "
                "settles rather than grows.",
    "atoms.png": "The reference bank projected on its first two principal axes, coloured by label. Each circle "
                 "has the atom's radius in embedding units; the projection shrinks distances, so circles look "
                 "more overlapped than they are. Look for label clusters.",
    "nn_distance.png": "Each atom's distance to its nearest other atom divided by their contact distance "
                       "R_a + R_b. Left of the dashed line the two atoms overlap; the exclusion potential "
                       "should keep most atoms at or beyond contact.",
    "roles.png": "How the components are split into roles. Look for structure (not one flat colour) and "
                 "for roles that mean something.",
    "role_usage.png": "Overall share of each role. A role near 0% or above 90% means the roles have collapsed.",
}


def table(rows: dict) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return value if isinstance(value, str) else json.dumps(value)

    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(cell(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def write_html(report_dir: Path, title: str, summary: dict, evaluation: dict | None, notes: dict[str, str]) -> Path:
    figures = "".join(
        f'<figure><img src="{name}" alt="{name}"><figcaption>{html.escape(CAPTIONS[name])} '
        f"<em>{html.escape(notes.get(name, ''))}</em></figcaption></figure>"
        for name in CAPTIONS if (report_dir / name).is_file())
    sections = f"<h2>Summary</h2>{table(summary)}"
    if evaluation:
        sections += f"<h2>Evaluation</h2>{table(evaluation)}"
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 10px;text-align:left}"
             "img{max-width:100%}figure{margin:2em 0}figcaption{color:#444;font-size:0.9em}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{sections}"
            f"<h2>Figures</h2>{figures}</body></html>\n")
    path = report_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_report(
    report_dir: Path,
    *,
    title: str,
    metrics_path: Path,
    bank_embedding: np.ndarray,
    bank_radius: np.ndarray,
    bank_label: np.ndarray,
    label_names: list[str],
    roles: np.ndarray,
    mask: np.ndarray,
    token_ids: np.ndarray | None,
    id_to_token: Callable[[int], str] | None,
    preprocess: dict,
    evaluation: dict | None = None,
) -> Path:
    """Write the figures and report.html into report_dir; returns the path of report.html."""
    report_dir, metrics_path = Path(report_dir), Path(metrics_path)
    report_dir.mkdir(parents=True, exist_ok=True)
    notes = {"loss.png": plot_loss(metrics_path, report_dir / "loss.png"),
             "atoms.png": plot_atoms(bank_embedding, bank_radius, bank_label, label_names, report_dir / "atoms.png")}
    notes["nn_distance.png"], ratios = plot_nn_distance(bank_embedding, bank_radius, report_dir / "nn_distance.png")
    notes["roles.png"] = plot_roles(roles, mask, token_ids, id_to_token, preprocess, report_dir / "roles.png")
    notes["role_usage.png"], shares = plot_role_usage(roles, mask, metrics_path, report_dir / "role_usage.png")
    summary = {"atoms in bank": len(bank_embedding), "embedding dim": int(np.shape(bank_embedding)[1]),
               "labels": len(label_names), "mean radius": float(np.mean(bank_radius)) if len(bank_radius) else None,
               "median nn distance / contact": float(np.median(ratios)) if len(ratios) else None,
               **{f"{name} share": float(s) for name, s in zip(ROLES, shares)}}
    path = write_html(report_dir, title, summary, evaluation, notes)
    log.info("report written to %s", path)
    return path
