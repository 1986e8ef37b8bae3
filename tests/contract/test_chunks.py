"""Long texts read whole: windows that cover the text once, offsets into it, and the pooled atom."""

from __future__ import annotations

import numpy as np
import pytest

from contract import chunks, preprocess
from contract.bundle import PotentialSpec, load_bundle
from contract.inputs import InputProblem
from contract.potential import pair_energy
from contract.runner import ModelRunner

FIELDS = ["electrons", "protons", "neutrons", "mass", "charge", "radius"]


@pytest.fixture(scope="module")
def texts(text_run) -> list[str]:
    from training.checkpoint import load_run_dataset

    return list(load_run_dataset(text_run).train.texts)


@pytest.fixture(scope="module")
def runner(text_bundle):
    # windows of 8 ids: the tiny synthetic texts become several windows
    return ModelRunner(load_bundle(text_bundle), device="cpu", max_components_per_input=8)


@pytest.fixture(scope="module")
def whole(text_bundle):
    """The text's ids and offsets, uncut: the bundle's tokenizer without its truncation."""
    tokenizer = preprocess.load_tokenizer(text_bundle / "tokenizer.json")
    tokenizer.no_truncation()

    def encode(text: str) -> tuple[np.ndarray, np.ndarray]:
        ((ids, offsets, cut),) = preprocess.encode(tokenizer, [text])
        assert not cut
        return np.asarray(ids), np.asarray(offsets).reshape(-1, 2)

    encode.tokenizer = tokenizer
    return encode


def long_text(texts: list[str], count: int = 3) -> str:
    return " ".join(texts[:count])


@pytest.mark.parametrize("overlap", [0, 1, 3])
def test_windows_cover_the_text_once_in_order(texts, runner, whole, overlap):
    text = long_text(texts)
    ids, spans = whole(text)
    real = ~np.isin(ids, runner.special_ids)
    (windows,) = runner.prepare_chunks([text], overlap=overlap, max_chunks=64)
    assert len(windows) > 2
    assert all(len(w.components) <= 8 for w in windows)
    owned = np.concatenate([w.components[w.owned[0] : w.owned[1]] for w in windows])
    np.testing.assert_array_equal(owned, ids[real])  # every token once, in order
    offsets = np.concatenate([w.offsets[w.owned[0] : w.owned[1]] for w in windows])
    np.testing.assert_array_equal(offsets, spans[real])
    starts = [w.span[0] for w in windows]
    assert starts == sorted(starts) and windows[0].span[0] == 0 and windows[-1].span[1] == len(text.rstrip())
    for before, after in zip(windows, windows[1:]):  # neighbours share `overlap` tokens
        if overlap:
            np.testing.assert_array_equal(before.components[-overlap:], after.components[:overlap])


def test_offsets_point_at_each_tokens_characters(texts, whole):
    text = long_text(texts, 3)
    ids, spans = whole(text)
    tokens = [whole.tokenizer.id_to_token(int(i)) for i in ids]
    assert len(tokens) > 5
    for token, (start, end) in zip(tokens, spans.tolist()):
        assert text[start:end] == token


def test_a_text_that_fits_is_one_window_like_its_prepared_input(runner):
    text = "t03 t01 t04 t01"
    (windows,) = runner.prepare_chunks([text], overlap=2)
    (plain,) = runner.prepare_components([text])
    assert len(windows) == 1
    np.testing.assert_array_equal(windows[0].components, plain.components)
    assert windows[0].owned == (0, len(plain.components))


def test_more_windows_than_the_limit_is_refused_as_too_large(texts, runner):
    text = long_text(texts, 12)
    with pytest.raises(InputProblem) as caught:
        runner.prepare_chunks(["t01", text], overlap=0, max_chunks=2)
    assert caught.value.too_large and caught.value.message.startswith("inputs[1] is ")
    assert "max_chunks_per_input=2" in caught.value.message


def test_an_overlap_as_long_as_a_window_is_refused(runner):
    with pytest.raises(InputProblem, match="overlap of 8 tokens"):
        runner.prepare_chunks(["t01 t02"], overlap=8)


def test_pooling_keeps_the_sphere_and_counts_each_component_once():
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((3, 5)).astype(np.float32)
    embedding *= 2.0 / np.linalg.norm(embedding, axis=1, keepdims=True)  # nuclei on a sphere of radius 2
    # electrons, protons, neutrons, mass, charge, radius of windows that read 10, 10 and 4 components
    composition = np.array([[2, 4, 4, 8, 0.2, 0.1], [3, 3, 4, 7, 0.0, 0.3], [1, 2, 1, 3, 0.25, 0.2]], np.float32)
    read, owned = [10, 10, 4], [9, 8, 3]  # the overlaps split between neighbouring windows
    pooled, counted = chunks.pool(embedding, composition, FIELDS, "mean", owned, read)
    mean = embedding.mean(0)
    np.testing.assert_allclose(pooled, mean * 2.0 / np.linalg.norm(mean), rtol=1e-5)
    share = np.array(owned) / np.array(read)
    by_name = dict(zip(FIELDS, counted))
    for j, name in enumerate(["electrons", "protons", "neutrons", "mass"]):
        assert by_name[name] == pytest.approx(float(share @ composition[:, j]), rel=1e-6)
    assert by_name["charge"] == pytest.approx((by_name["protons"] - by_name["electrons"]) / 20, rel=1e-6)
    assert by_name["radius"] == pytest.approx((8 * 0.1 + 7 * 0.3 + 3 * 0.2) / 18)  # mass-weighted mean
    weighted, _ = chunks.pool(embedding, composition, FIELDS, "mass", owned, read)
    expected = (np.array([8, 7, 3])[:, None] * embedding).sum(0)
    np.testing.assert_allclose(weighted, expected * 2.0 / np.linalg.norm(expected), rtol=1e-5)
    alone, same = chunks.pool(embedding[:1], composition[:1], FIELDS, "mean", [10], [10])
    np.testing.assert_array_equal(alone, embedding[0])
    np.testing.assert_array_equal(same, composition[0])


def test_bonds_are_the_pair_energies_of_neighbouring_windows():
    spec = PotentialSpec(kind="morse", well_depth=1.0, morse_alpha=6.0, cutoff_widths=2.0, lj_force_cap_ratio=0.9,
                         coulomb_strength=0.0, coulomb_screening=1.0, coulomb_softening=0.1, weight=0.3)
    embedding = np.array([[0, 0], [0.3, 0], [0.3, 0.4]], np.float32)
    composition = np.array([[1, 1, 1, 2, 0, 0.2], [1, 1, 1, 2, 0, 0.1], [1, 1, 1, 2, 0, 0.3]], np.float32)  # radius last
    energies = chunks.bonds(embedding, composition, FIELDS, spec)
    expected = pair_energy(np.array([0.3, 0.4]), np.array([0.2, 0.1]), np.array([0.1, 0.3]), np.zeros(2), np.zeros(2), spec)
    np.testing.assert_allclose(energies, expected, rtol=1e-6)
    assert len(chunks.bonds(embedding[:1], composition[:1], FIELDS, spec)) == 0
