"""The AFINN role measure (training/lexicon.py): the AUCs on a hand-made case whose values are
worked out by hand, the word selection on the tiny BERT-shaped tokenizer (tests/training/conftest.py),
and the encoder run on a tiny backbone bundle against the same words run one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from contract import preprocess
from training.lexicon import load_afinn, separation_aucs, single_piece_words, word_atoms

# Six words with a side and one without. Positive words: a, b, c; negative: d, e, f; "zero" has
# score 0 and must be left out (were it counted as negative, every AUC below would change).
SCORES = [3, 2, 1, -1, -2, -4, 0]
# proton on the positive words 0.9, 0.5, 0.5; on the negative ones 0.5, 0.2, 0.1. Of the 9
# (positive, negative) pairs, 0.9 beats all 3; each 0.5 ties one 0.5 (1/2) and beats two: 2.5.
# AUC = (3 + 2.5 + 2.5) / 9 = 8/9.
PROTON = [0.9, 0.5, 0.5, 0.5, 0.2, 0.1, 0.0]
# electron: higher on negative words; positive 0.05, 0.1, 0.3 against negative 0.3, 0.6, 0.8:
# 0.05 and 0.1 win no pair, 0.3 ties 0.3 -> AUC = 0.5 / 9 = 1/18, so max(AUC, 1 - AUC) = 17/18.
ELECTRON = [0.05, 0.1, 0.3, 0.3, 0.6, 0.8, 1.0]
# neutron: positive 0.05, 0.4, 0.2 against negative 0.2, 0.2, 0.1: 0.05 wins none, 0.4 wins 3,
# 0.2 ties two (1) and beats 0.1 (1) -> AUC = 5/9. (Roles need not sum to 1 for the AUCs; given
# outright, these values tie exactly, which 1 - electron - proton in floating point would not.)
NEUTRON = [0.05, 0.4, 0.2, 0.2, 0.2, 0.1, 0.0]
# charge: every value equal -> every pair a tie -> 0.5 exactly.
CHARGE = [0.7] * 7


def hand_made_case():
    roles = np.array([ELECTRON, PROTON, NEUTRON]).T
    return roles, np.array(CHARGE), SCORES


def test_aucs_on_a_hand_made_case():
    roles, charge, scores = hand_made_case()
    result = separation_aucs(roles, charge, scores)
    assert (result["words"], result["positives"], result["negatives"]) == (6, 3, 3)
    auc = result["auc"]
    assert auc["proton"] == pytest.approx(8 / 9)
    assert auc["electron"] == pytest.approx(1 / 18)
    assert auc["charge"] == pytest.approx(0.5)
    assert auc["neutron"] == pytest.approx(5 / 9)
    assert result["separation"]["electron"] == pytest.approx(0.5 - 1 / 18)
    # electron separates best (17/18 > 8/9), and is the likelier role on the negative words
    assert result["best_role"] == {"role": "electron", "auc": pytest.approx(17 / 18), "direction": "negative"}
    assert result["mean_on_positive"]["proton"] == pytest.approx(1.9 / 3)
    assert result["mean_on_negative"]["proton"] == pytest.approx(0.8 / 3)


def test_aucs_do_not_depend_on_the_order_of_the_words():
    roles, charge, scores = hand_made_case()
    order = np.random.default_rng(0).permutation(len(scores))
    shuffled = separation_aucs(roles[order], charge[order], np.asarray(scores)[order])
    assert shuffled["auc"] == pytest.approx(separation_aucs(roles, charge, scores)["auc"])


def test_aucs_need_both_sides_and_matching_shapes():
    roles, charge, _ = hand_made_case()
    with pytest.raises(ValueError, match="there are 6 and 0"):
        separation_aucs(roles, charge, [1, 2, 3, 4, 5, 6, 0])
    with pytest.raises(ValueError, match="do not match"):
        separation_aucs(roles[:, :2], charge, SCORES)


def test_the_afinn_list_ships_inside_the_package():
    lexicon = load_afinn()
    assert len(lexicon) > 3000
    assert lexicon["good"] == 3 and lexicon["bad"] == -3
    assert all(-5 <= score <= 5 for score in lexicon.values())
    with pytest.raises(ValueError, match="unknown AFINN list"):
        load_afinn("xx")


def test_selection_keeps_single_piece_words_without_cls_and_sep(tiny_backbone):
    tokenizer = preprocess.load_tokenizer(tiny_backbone / "tokenizer.json")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    vocab = tokenizer.get_vocab()
    # whole words of this small vocabulary (no "##" continuation, no [..] special) are one piece
    whole = sorted(w for w in vocab if w.isalpha() and len(w) > 2)[:5]
    assert len(whole) == 5
    split = next(w + "zq" for w in whole if len(preprocess.tokenize(tokenizer, [w + "zq"])[0]) > 3)
    lexicon = {whole[0]: 2, split: -1, whole[1]: -3, "two words": 1, whole[2]: 0, "": 1, "[CLS]": 1, whole[3]: 4}
    kept = single_piece_words(tokenizer, lexicon, (cls, sep))
    assert [w.word for w in kept] == [whole[0], whole[1], whole[2], whole[3]]
    assert [w.score for w in kept] == [2, -3, 0, 4]
    assert [w.token_id for w in kept] == [vocab[w] for w in whole[:4]]
    assert not {cls, sep} & {w.token_id for w in kept}
    # without being told which ids are special, every word is [CLS] word [SEP]: three pieces
    assert single_piece_words(tokenizer, lexicon) == []


def test_selection_drops_unknown_words_and_repeats(tiny_backbone):
    tokenizer = preprocess.load_tokenizer(tiny_backbone / "tokenizer.json")
    specials = (tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
    word = next(w for w in sorted(tokenizer.get_vocab()) if w.isalpha() and w.islower() and len(w) > 2)
    # "☃" is no character of the vocabulary: one component, the unknown token
    assert len(preprocess.tokenize(tokenizer, ["☃"])[0]) == 3
    kept = single_piece_words(tokenizer, {"☃": 3, word: 1, word.upper(): -1}, specials)
    # the uppercase spelling normalizes to the same piece (an uncased tokenizer): kept once
    assert [(w.word, w.score) for w in kept] == [(word, 1)]


@pytest.fixture(scope="module")
def lexicon_bundle(backbone_run, tmp_path_factory):
    from training.export import export_bundle

    return export_bundle(backbone_run, tmp_path_factory.mktemp("bundles") / "tweets-lexicon", report=False)


def test_word_atoms_read_the_words_component(lexicon_bundle):
    import onnxruntime as ort

    tokenizer = preprocess.load_tokenizer(lexicon_bundle / "tokenizer.json")
    specials = (tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
    vocab = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower())
    words = [w.word for w in single_piece_words(tokenizer, dict.fromkeys(vocab[:12], 1), specials)]
    assert len(words) == 12
    atoms = word_atoms(lexicon_bundle, words, batch_size=5)  # batches of 5, 5 and 2
    assert atoms.roles.shape == (12, 3) and atoms.charge.shape == (12,)
    np.testing.assert_allclose(atoms.roles.sum(1), 1.0, atol=1e-5)
    session = ort.InferenceSession(str(lexicon_bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    for row, word in enumerate(words):
        ids = np.array(preprocess.tokenize(tokenizer, [word]), np.int64)
        assert ids[0, 0] == specials[0] and ids[0, 2] == specials[1]
        roles, composition = session.run(["roles", "composition"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        np.testing.assert_allclose(atoms.roles[row], roles[0, 1], atol=1e-5)
        np.testing.assert_allclose(atoms.charge[row], composition[0, 4], atol=1e-5)
    with pytest.raises(ValueError, match="components of this bundle's tokenizer, not one"):
        word_atoms(lexicon_bundle, [words[0] + " " + words[1]])


def test_benchmark_script_writes_its_table(lexicon_bundle, tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from afinn_roles import main

    # the tiny tokenizer (300 pieces, trained on 400 tweets) keeps a few AFINN words of each side
    out = tmp_path / "afinn_roles"
    assert main(["--bundle", f"tiny={lexicon_bundle}", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    [row] = results["bundles"]
    assert row["name"] == "tiny" and row["positives"] > 0 and row["negatives"] > 0
    assert set(row["auc"]) == {"electron", "proton", "neutron", "charge"}
    assert "load_average_1m_at_start" in results["machine"]
    table = out.with_suffix(".md").read_text()
    assert f"| tiny | {row['bundle']['weight']:g} | {row['words']} ({row['positives']} / {row['negatives']}) |" in table
