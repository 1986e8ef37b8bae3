"""Datasets for training: loading, tokenization and fixed train/validation/test splits.

This is the public entry point; the implementation lives in ``training.datasets``:

- ``base``: the ``Dataset`` / ``Split`` containers, subsampling, stratified splitting, encoding;
- ``builtin``: ``synthetic``, ``digits``, ``mnist5k``, ``tweets`` (DESIGN section 3);
- ``user_files``: ``csv:PATH`` (columns text,label) and ``npz:PATH`` (arrays X, y);
- ``wordpiece``: deterministic WordPiece training for the text datasets.

Every dataset is offline and its split is a pure function of ``split_seed`` (0 by default;
training seeds are separate), so runs on the same dataset always see the same test split.
Numeric inputs are kept raw; the model multiplies them by ``Dataset.input_scale``.

Example::

    ds = load_dataset("digits")
    ds.train.inputs.shape   # (1131, 16, 4): 2x2 patches of the 8x8 images
"""

from __future__ import annotations

import logging
import time

from .datasets.base import Dataset, DatasetError, Split, encode_texts
from .datasets.builtin import load_digits, load_mnist5k, load_synthetic, load_tweets
from .datasets.user_files import load_csv, load_npz

__all__ = ["DATASET_NAMES", "Dataset", "DatasetError", "Split", "encode_texts", "load_dataset"]

logger = logging.getLogger(__name__)

DATASET_NAMES = ("synthetic", "digits", "mnist5k", "tweets")  # plus "csv:PATH" and "npz:PATH"

_BUILTIN = {
    "synthetic": load_synthetic,
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "tweets": load_tweets,
}
_USER_FILES = {"csv": load_csv, "npz": load_npz}
_TAKES_TOKENIZER = ("tweets",)  # plus csv:PATH


def load_dataset(name: str, *, split_seed: int = 0, limit: int | None = None, tokenizer=None) -> Dataset:
    """Load dataset ``name`` with its fixed splits.

    ``limit`` subsamples the whole dataset (stratified, seeded by ``split_seed``) before
    splitting, for tests and quick runs. ``tokenizer`` (text datasets: tweets, csv) replaces the
    WordPiece tokenizer learned from the training split, e.g. with a pretrained backbone's own.
    Raises DatasetError (one line) for an unknown name, a missing optional package or data file,
    a malformed user file, or a tokenizer given for a dataset that cannot take one.
    """
    start = time.perf_counter()
    kind, sep, path = name.partition(":")
    if tokenizer is not None and name not in _TAKES_TOKENIZER and kind != "csv":
        raise DatasetError(f"dataset {name!r} cannot use a pretrained text backbone: only tweets and csv:PATH can")
    extra = {"tokenizer": tokenizer} if tokenizer is not None else {}
    if name in _BUILTIN:
        ds = _BUILTIN[name](split_seed=split_seed, limit=limit, **extra)
    elif sep and kind in _USER_FILES:
        ds = _USER_FILES[kind](path, split_seed=split_seed, limit=limit, **extra)
    else:
        valid = ", ".join(DATASET_NAMES + ("csv:PATH", "npz:PATH"))
        raise DatasetError(f"unknown dataset {name!r}; valid names: {valid}")
    logger.info(
        "loaded %s in %.2fs: train %d, validation %d, test %d; %d classes, %d components x %d",
        ds.name, time.perf_counter() - start, len(ds.train), len(ds.validation), len(ds.test),
        ds.n_classes, ds.max_components, ds.component_dim,
    )
    return ds
