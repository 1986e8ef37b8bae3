"""Training report: PNG figures, report.html and stats.json for a bundle's `report/` folder.

`write_report` is the only entry point the exporter needs. The statistics come from
`training.report_stats` (computed once, also written as `stats.json` for the explorer); this
module only draws them with matplotlib and writes the page.
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

from contract.projection import Projection

from .report_stats import MIN_TOKEN_COUNT, ROLES, TOP_K, ReportStats, TokenScore, compute_stats, load_metrics

log = logging.getLogger(__name__)

# Okabe-Ito colours, safe for colour-blind readers; the explorer page uses the same three.
ROLE_COLOURS = ("#0072B2", "#D55E00", "#999999")
DPI = 110
MAX_LEGEND = 20


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


def plot_atoms(stats: ReportStats, bank_label: np.ndarray, path: Path) -> str:
    """The atoms on the bank's stored 2D map (the explorer's map), each with its radius."""
    xy, rows, names = np.asarray(stats.plot_xy, dtype=np.float64), stats.plot_rows, stats.label_names  # (P, 2)
    r, lab = stats.radius[rows], np.asarray(bank_label)[rows]  # (P,), (P,)
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
           title=f"atoms: PCA of the nucleus positions ({len(rows)} of {stats.bank_size})")
    save(fig, path, palette=True)
    return f"{len(rows)} of {stats.bank_size} atoms, {len(classes)} labels."


def plot_nn_distance(stats: ReportStats, path: Path) -> str:
    finite = stats.contact_ratios  # (Q,)
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
    return f"{len(finite)} atoms; {overlap:.1%} overlap their nearest neighbour (ratio < 1)."


def plot_role_grid(grid: np.ndarray, path: Path) -> str:
    fig, axes = figure(1, 3, (12, 4))
    for role, ax in enumerate(axes):
        image = ax.imshow(grid[role], vmin=0, vmax=1, cmap="viridis")  # grid: (3, gh, gw)
        ax.set(title=f"P({ROLES[role]}) per patch", xticks=[], yticks=[])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    save(fig, path)
    return "Mean role probability at each patch position, on the image's patch grid."


def plot_top_tokens(tops: list[list[TokenScore]], names: dict[int, str], path: Path) -> str:
    fig, axes = figure(1, 3, (13, 4.8))
    for role, ax in enumerate(axes):
        scores = tops[role][::-1]  # most characteristic at the top
        labels = [f"{names.get(s.token_id, f'#{s.token_id}')} ({s.count})".replace("$", r"\$") for s in scores]
        ax.barh(np.arange(len(scores)), [s.lift for s in scores], color=ROLE_COLOURS[role], tick_label=labels)
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set(title=f"{ROLES[role]}: most characteristic tokens", xlabel="lift over the average role share")
        ax.tick_params(axis="y", labelsize=8)
        if not scores:
            note(ax, "no token")
    save(fig, path)
    return (f"Per role, the {TOP_K} tokens seen at least {MIN_TOKEN_COUNT} times with the highest lift: their mean "
            "probability of that role over the role's average share (1 = typical; occurrences in brackets).")


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


def plot_roles(stats: ReportStats, path: Path) -> str:
    if stats.grid is not None:
        return plot_role_grid(stats.grid, path)
    if stats.tokens is not None:
        return plot_top_tokens(stats.tokens, stats.token_names, path)
    return plot_role_positions(stats.by_position, path)


def plot_role_usage(stats: ReportStats, metrics_path: Path, path: Path) -> str:
    shares = stats.shares  # (3,)
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
    return "Shares: " + ", ".join(f"{n} {s:.1%}" for n, s in zip(ROLES, shares)) + "."


# ----------------------------------------------------------------------------- html

CAPTIONS = {
    "loss.png": "Task loss (and total loss) and the potential energy per atom U per step, each on its own "
                "axis; validation accuracy per epoch. Look for a task loss that falls and a potential that "
                "settles rather than grows.",
    "atoms.png": "The reference bank on its stored 2D map (its first two principal axes, the map the explorer "
                 "page draws), coloured by label. Each circle "
                 "has the atom's radius in embedding units; the projection shrinks distances, so circles look "
                 "more overlapped than they are. Look for label clusters.",
    "nn_distance.png": "Each atom's distance to its nearest other atom divided by their contact distance "
                       "R_a + R_b. Left of the dashed line the two atoms overlap; the exclusion potential "
                       "should keep most atoms at or beyond contact.",
    "roles.png": "How the components are split into roles: per patch for images, the most characteristic "
                 "tokens for text. Look for structure (not one flat colour) and for roles that mean something.",
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
    projection: Projection | None = None,
) -> Path:
    """Write the figures, stats.json and report.html into report_dir; returns the path of
    report.html. `projection`: the bank's stored 2D map, so atoms.png matches the explorer."""
    report_dir, metrics_path = Path(report_dir), Path(metrics_path)
    report_dir.mkdir(parents=True, exist_ok=True)
    stats = compute_stats(bank_embedding=bank_embedding, bank_radius=bank_radius, label_names=label_names,
                          roles=roles, mask=mask, token_ids=token_ids, id_to_token=id_to_token,
                          preprocess=preprocess, projection=projection)
    notes = {"loss.png": plot_loss(metrics_path, report_dir / "loss.png"),
             "atoms.png": plot_atoms(stats, bank_label, report_dir / "atoms.png"),
             "nn_distance.png": plot_nn_distance(stats, report_dir / "nn_distance.png"),
             "roles.png": plot_roles(stats, report_dir / "roles.png"),
             "role_usage.png": plot_role_usage(stats, metrics_path, report_dir / "role_usage.png")}
    (report_dir / "stats.json").write_text(json.dumps(stats.to_json(), indent=1) + "\n")
    path = write_html(report_dir, title, stats.summary(), evaluation, notes)
    log.info("report written to %s", path)
    return path
