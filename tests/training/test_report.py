"""The training report: its statistics on hand-made inputs, and the files it writes."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from contract.projection import fit_projection
from training.report import plot_roles, write_report
from training.report_stats import (
    compute_stats,
    load_metrics,
    nearest_contact_ratios,
    role_by_position,
    role_grid,
    top_tokens,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PATCHES = {"kind": "patches", "image_shape": [8, 8], "patch_shape": [2, 2]}  # 4x4 grid, n = 16
VOCAB = ["[PAD]", "the", "good", "bad", "movie", "great", "awful", "a", "!", "plot"]


def bank(m=300, k=8, labels=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(m, k)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    radius = rng.uniform(0.05, 0.3, size=m).astype(np.float32)
    return z, radius, rng.integers(0, labels, size=m)


def random_roles(n_items, n, seed=1):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(n // 2, n + 1, size=n_items)
    mask = np.arange(n)[None, :] < lengths[:, None]  # (N, n)
    roles = rng.dirichlet(np.ones(3), size=(n_items, n)) * mask[..., None]  # (N, n, 3)
    return roles, mask


def write_metrics(path):
    records = [{"kind": "step", "epoch": e, "step": s, "lr": 1e-3, "loss": 2.0 / s, "task": 1.5 / s,
                "potential": 0.1 + 0.01 * s, "role_balance": 0.0}
               for e in range(3) for s in range(10 * e + 1, 10 * e + 11)]
    records += [{"kind": "epoch", "epoch": e, "step": 10 * e + 10, "train_seconds": 1.0 + e,
                 "role_usage": [0.5, 0.3, 0.2], "val_accuracy": 0.5 + 0.1 * e} for e in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "step", "ste')  # torn last line
    return path


def report(tmp_path, name, metrics, **overrides):
    z, radius, labels = bank()
    roles, mask = random_roles(40, 16)
    arguments = dict(title=f"{name} <test>", metrics_path=metrics, bank_embedding=z, bank_radius=radius,
                     bank_label=labels, label_names=["neg", "neu", "pos"], roles=roles, mask=mask,
                     token_ids=None, id_to_token=None, preprocess=PATCHES)
    arguments.update(overrides)
    return write_report(tmp_path / name, **arguments)


def check_report(html_path):
    assert html_path.name == "report.html" and html_path.is_file()
    page = html_path.read_text()
    pngs = sorted(p.name for p in html_path.parent.glob("*.png"))
    assert pngs == ["atoms.png", "loss.png", "nn_distance.png", "role_usage.png", "roles.png"]
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == pngs
    for name in pngs:
        data = (html_path.parent / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert 2_000 < len(data) < 600_000, (name, len(data))
        with Image.open(html_path.parent / name) as image:
            image.verify()
            assert min(image.size) > 200, (name, image.size)
    return page


def test_image_report(tmp_path):
    page = check_report(report(tmp_path, "image", write_metrics(tmp_path / "metrics.jsonl"),
                               evaluation={"test_accuracy": 0.91234, "knn_accuracy": 0.9}))
    assert "image &lt;test&gt;" in page and "test_accuracy" in page and "0.9123" in page
    assert "30 step records, 3 epoch records" in page


def test_text_report(tmp_path):
    roles, mask = random_roles(30, 12, seed=3)
    ids = np.random.default_rng(4).integers(1, len(VOCAB), size=mask.shape) * mask
    page = check_report(report(tmp_path, "text", write_metrics(tmp_path / "metrics.jsonl"), roles=roles, mask=mask,
                               token_ids=ids, id_to_token=VOCAB.__getitem__, preprocess={"kind": "none"}))
    assert "most characteristic" in page
    stats = json.loads((tmp_path / "text" / "stats.json").read_text())
    assert stats["role_grid"] is None and set(stats["top_tokens"]) == {"electron", "proton", "neutron"}
    for scores in stats["top_tokens"].values():
        assert all(s["lift"] > 1 and s["count"] >= stats["min_token_count"] and s["token"] in VOCAB for s in scores)


def test_numeric_report_without_metrics(tmp_path):
    roles, mask = random_roles(20, 10, seed=5)
    page = check_report(report(tmp_path, "numeric", tmp_path / "missing.jsonl", roles=roles, mask=mask,
                               preprocess={"kind": "none"}))
    assert "no metrics" in page and "component index" in page


def test_roles_fall_back_when_components_overflow_the_patch_grid(tmp_path):
    roles, mask = random_roles(5, 20, seed=6)  # 20 components, 16 cells
    z, radius, _ = bank()
    stats = compute_stats(bank_embedding=z, bank_radius=radius, label_names=["a"], roles=roles, mask=mask,
                          token_ids=None, id_to_token=None, preprocess=PATCHES)
    assert stats.grid is None
    assert "component index" in plot_roles(stats, tmp_path / "roles.png")
    assert (tmp_path / "roles.png").read_bytes()[:8] == PNG_MAGIC


def test_load_metrics_keeps_last_record_of_a_resumed_step(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl")
    with path.open("a") as f:  # a resumed run rewrites step 30 and epoch 2 after the torn line
        f.write('\n{"kind": "step", "epoch": 2, "step": 30, "task": 9.0}\n{"kind": "epoch", "epoch": 2, "step": 30}\n')
    steps, epochs = load_metrics(path)
    assert [r["step"] for r in steps] == list(range(1, 31)) and steps[-1]["task"] == 9.0
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and "val_accuracy" not in epochs[-1]
    assert load_metrics(tmp_path / "nothing.jsonl") == ([], [])


def test_nearest_contact_ratios_exact():
    # a at 0, b at 3, c at 3.5 on a line; the nearest atom decides, not the smallest ratio
    z = np.array([[0.0, 0.0], [3.0, 0.0], [3.5, 0.0]])
    radius = np.array([1.0, 0.25, 0.5])
    expected = np.array([3.0 / 1.25, 0.5 / 0.75, 0.5 / 0.75])
    np.testing.assert_allclose(nearest_contact_ratios(z, radius), expected, rtol=1e-12)
    np.testing.assert_allclose(nearest_contact_ratios(z, radius, np.array([2, 0])), expected[[2, 0]], rtol=1e-12)


def test_nearest_contact_ratios_matches_brute_force():
    z, radius, _ = bank(m=500, k=5, seed=7)
    d = np.linalg.norm(z[:, None, :].astype(np.float64) - z[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(axis=1)
    brute = d[np.arange(500), nearest] / (radius + radius[nearest])
    np.testing.assert_allclose(nearest_contact_ratios(z, radius), brute, rtol=1e-6)


def test_role_grid_means():
    preprocess = {"kind": "patches", "image_shape": [4, 6], "patch_shape": [2, 2]}  # 2x3 grid, n = 6
    roles = np.zeros((2, 6, 3))
    roles[0, :, 0] = 1.0  # item 0: all electrons
    roles[1, :, :] = [0.0, 0.5, 0.5]  # item 1: half proton, half neutron
    mask = np.ones((2, 6), dtype=bool)
    mask[1, 5] = False  # last patch of item 1 is padding
    roles[1, 5] = 0.0
    grid = role_grid(roles, mask, preprocess)
    assert grid.shape == (3, 2, 3)
    np.testing.assert_allclose(grid[0], [[0.5, 0.5, 0.5], [0.5, 0.5, 1.0]])
    np.testing.assert_allclose(grid[1], [[0.25, 0.25, 0.25], [0.25, 0.25, 0.0]])
    np.testing.assert_allclose(grid.sum(axis=0), 1.0)
    assert np.isnan(role_by_position(roles, np.zeros((2, 6), dtype=bool))).all()
    with pytest.raises(ValueError):
        role_grid(np.zeros((1, 7, 3)), np.ones((1, 7), dtype=bool), preprocess)


def test_top_tokens_rank_by_lift_not_by_count():
    e, p, n = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    # token 1 (a stop word): 40 occurrences, 60% electron; token 2: 6 occurrences, all electron;
    # token 3: 3 occurrences, all electron (too rare); token 4: 20 proton; token 5: 10 neutron
    items = [(1, e)] * 24 + [(1, p)] * 8 + [(1, n)] * 8 + [(2, e)] * 6 + [(3, e)] * 3 + [(4, p)] * 20 + [(5, n)] * 10
    token_ids = np.array([[t for t, _ in items] + [9]])  # the last one is padding
    roles = np.array([[r for _, r in items] + [e]])
    mask = np.ones(token_ids.shape, dtype=bool)
    mask[0, -1] = False
    electron, proton, neutron = top_tokens(roles, mask, token_ids, min_count=5)
    average_electron = 33 / 79  # electron share over the 79 real components
    assert [s.token_id for s in electron] == [2, 1]  # the rare-but-pure token first, token 3 too rare
    assert electron[0].count == 6 and electron[0].share == 1.0
    np.testing.assert_allclose(electron[0].lift, 1 / average_electron)
    np.testing.assert_allclose(electron[1].lift, 0.6 / average_electron)
    assert [s.token_id for s in proton] == [4]  # token 1 is 20% proton: below the average 28/79, not listed
    assert [s.token_id for s in neutron] == [5]
    assert [s.token_id for s in top_tokens(roles, mask, token_ids, min_count=3)[0]] == [2, 3, 1]  # same lift: count
    assert top_tokens(roles, mask, token_ids, k=1, min_count=5)[0][0].token_id == 2
    assert top_tokens(roles, np.zeros_like(mask), token_ids) == [[], [], []]


def test_stats_use_the_stored_projection(tmp_path):
    z, radius, labels = bank(m=200)
    roles, mask = random_roles(10, 16)
    projection = fit_projection(z)
    stats = compute_stats(bank_embedding=z, bank_radius=radius, label_names=["a", "b", "c"], roles=roles,
                          mask=mask, token_ids=None, id_to_token=None, preprocess=PATCHES, projection=projection)
    np.testing.assert_allclose(stats.plot_xy, projection.apply(z[stats.plot_rows]), rtol=1e-6)
    assert stats.grid.shape == (3, 4, 4) and stats.tokens is None
    out = stats.to_json()
    json.dumps(out, allow_nan=False)  # plain JSON, NaN-free
    assert out["summary"]["atoms in bank"] == 200 and len(out["role_grid"]) == 3
    np.testing.assert_allclose(sum(out["role_shares"]), 1.0)
