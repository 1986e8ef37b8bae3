"""Dataset containers and the machinery shared by every loader: subsampling, stratified
train/validation/test splitting, class checks and turning texts into padded token ids.

The public names are re-exported by ``training.data``; import them from there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from contract.preprocess import tokenize

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

# A class needs one sample in each of train, validation and test to be split at all.
MIN_PER_CLASS = 3


class DatasetError(Exception):
    """A dataset cannot be loaded. The message is one line naming the file/dataset, the row (where
    there is one) and the problem, fit to show a user as is."""


@dataclass
class Split:
    inputs: np.ndarray  # text: int64 (N, n) token ids, 0 = padding; numeric: float32 (N, n, f) raw values
    mask: np.ndarray  # bool (N, n), True = real component
    labels: np.ndarray  # int64 (N,)
    texts: list[str] | None  # text datasets: raw strings of this split; None for numeric
    features: np.ndarray | None  # numeric datasets: float32 (N, D) flat raw features; None for text

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> "Split":
        """The rows ``idx`` (int positions or a bool mask) of every field."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return Split(
            inputs=self.inputs[idx],
            mask=self.mask[idx],
            labels=self.labels[idx],
            texts=None if self.texts is None else [self.texts[i] for i in idx],
            features=None if self.features is None else self.features[idx],
        )


@dataclass
class Dataset:
    name: str  # e.g. "digits", "csv:/path/x.csv"
    modality: str  # "text" or "numeric"
    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    max_components: int  # n: every split is padded to this length
    component_dim: int  # f: 1 for text
    vocab_size: int  # text: tokenizer vocab size (id 0 = padding); 0 for numeric
    input_scale: float  # multiply raw numeric values by this; 1.0 for text
    tokenizer: "Tokenizer | None"
    # {"kind": "patches", "image_shape": [H, W], "patch_shape": [ph, pw]} or {"kind": "none"}
    preprocess: dict
    # synthetic only: int64 (vocab_size,) role per token id (0 electron, 1 proton, 2 neutron), -1 special
    true_roles: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass(frozen=True)
class SplitPlan:
    """Fractions of a train/validation/test split: ``test`` of all samples, then ``val_of_rest``
    of what remains."""

    test: float
    val_of_rest: float


PLAN_70_15_15 = SplitPlan(test=0.15, val_of_rest=0.15 / 0.85)


def encode_texts(
    tokenizer: "Tokenizer", texts: Sequence[str], max_components: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids right-padded with 0: (ids int64 (N, n), mask bool (N, n)), n = max_components.

    Uses ``contract.preprocess.tokenize`` so training and serving encode identically; sequences
    longer than n (a tokenizer without truncation) are cut to n.
    """
    seqs = tokenize(tokenizer, texts)
    ids = np.zeros((len(seqs), max_components), dtype=np.int64)
    lengths = np.fromiter((min(len(s), max_components) for s in seqs), dtype=np.int64, count=len(seqs))
    for i, s in enumerate(seqs):
        ids[i, : lengths[i]] = s[:max_components]
    mask = np.arange(max_components)[None, :] < lengths[:, None]
    return ids, mask


def check_classes(
    labels: np.ndarray,
    label_names: Sequence[str],
    source: str,
    *,
    row_numbers: np.ndarray | None = None,
    row_name: str = "row",
) -> None:
    """Raise DatasetError unless there are >= 2 classes, each with >= MIN_PER_CLASS samples.

    ``row_numbers`` (user files): the file row of each sample, quoted for a too-small class as
    "(row 4, 9)" (``row_name`` replaces "row", e.g. "index" for 0-based array rows).
    """
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2:
        found = ", ".join(repr(label_names[c]) for c in present) or "none"
        raise DatasetError(f"{source}: found {len(present)} class ({found}); need at least 2 classes")
    small = present[counts < MIN_PER_CLASS]
    if len(small):
        c = small[0]
        count = int(counts[present == c][0])
        where = ""
        if row_numbers is not None:
            where = f" ({row_name} " + ", ".join(str(r) for r in row_numbers[labels == c]) + ")"
        more = f" (and {len(small) - 1} more such classes)" if len(small) > 1 else ""
        raise DatasetError(
            f"{source}: class {label_names[c]!r} has only {count} sample(s){where}{more}; each class "
            f"needs at least {MIN_PER_CLASS} to be split into train/validation/test"
        )


def _can_stratify(y: np.ndarray, n_first: int) -> bool:
    """sklearn's stratified split needs >= 2 samples per class and both parts >= n_classes."""
    _, counts = np.unique(y, return_counts=True)
    k = len(counts)
    return counts.min() >= 2 and n_first >= k and len(y) - n_first >= k


def subsample(labels: np.ndarray, limit: int | None, seed: int, source: str) -> np.ndarray:
    """Sorted positions of a stratified, seeded subsample of ``limit`` samples (all if None)."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise DatasetError(f"{source}: limit must be a positive number of samples, got {limit}")
    idx = np.arange(n)
    stratify = labels if _can_stratify(labels, n - limit) else None
    if stratify is None:
        logger.warning("%s: limit=%d is too small to stratify; subsampling at random", source, limit)
    kept, _ = train_test_split(idx, train_size=limit, stratify=stratify, random_state=seed)
    return np.sort(kept)


def _split_off(idx: np.ndarray, y: np.ndarray, frac: float, seed: int, source: str):
    # Round up like sklearn, but without float noise: 0.15/0.85 * 5100 is 900.0000000000001.
    n_second = min(max(math.ceil(frac * len(idx) - 1e-6), 1), len(idx) - 1)
    stratify = y if _can_stratify(y, n_second) else None
    if stratify is None:
        # Stratification is impossible (a part smaller than the number of classes): a plain
        # random split still gives usable parts, so warn rather than refuse.
        logger.warning(
            "%s: too few samples to stratify a %.0f%% split; splitting at random", source, 100 * frac
        )
    first, second = train_test_split(idx, test_size=n_second, stratify=stratify, random_state=seed)
    return first, second


def split_indices(
    labels: np.ndarray, plan: SplitPlan, seed: int, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (train, validation, test), stratified by label and seeded; disjoint and
    covering all samples. Order within a part is shuffled (sklearn's), which is deterministic."""
    idx = np.arange(len(labels))
    rest, test = _split_off(idx, labels, plan.test, seed, source)
    train, val = _split_off(rest, labels[rest], plan.val_of_rest, seed, source)
    return train, val, test


def build_numeric(
    name: str,
    *,
    inputs: np.ndarray,  # (N, n, f) raw values
    labels: np.ndarray,  # int64 (N,) in [0, len(label_names))
    label_names: list[str],
    features: np.ndarray,  # (N, D) raw values
    input_scale: float,
    preprocess: dict,
    plan: SplitPlan,
    split_seed: int,
    limit: int | None,
    source: str,
) -> Dataset:
    """Subsample, check and split a numeric dataset whose components are all real (mask True)."""
    keep = subsample(labels, limit, split_seed, source)
    if limit is not None:
        check_classes(labels[keep], label_names, f"{source} (limit={limit})")
    whole = Split(
        inputs=np.ascontiguousarray(inputs[keep], dtype=np.float32),
        mask=np.ones(inputs.shape[:2], dtype=bool)[keep],
        labels=labels[keep].astype(np.int64),
        texts=None,
        features=np.ascontiguousarray(features[keep], dtype=np.float32),
    )
    train, val, test = split_indices(whole.labels, plan, split_seed, source)
    return Dataset(
        name=name,
        modality="numeric",
        train=whole.take(train),
        validation=whole.take(val),
        test=whole.take(test),
        label_names=list(label_names),
        max_components=int(inputs.shape[1]),
        component_dim=int(inputs.shape[2]),
        vocab_size=0,
        input_scale=float(input_scale),
        tokenizer=None,
        preprocess=preprocess,
    )


def build_text(
    name: str,
    *,
    texts: list[str],
    labels: np.ndarray,  # int64 (N,) in [0, len(label_names))
    label_names: list[str],
    plan: SplitPlan,
    split_seed: int,
    limit: int | None,
    max_components: int,
    make_tokenizer: Callable[[list[str]], "Tokenizer"],
    source: str,
) -> Dataset:
    """Subsample, check and split a text dataset, then build the tokenizer from the TRAIN texts
    only (``make_tokenizer``) and encode every split. Texts that encode to no tokens at all are
    dropped (logged): an atom with no components has no defined composition."""
    keep = subsample(labels, limit, split_seed, source)
    if limit is not None:
        check_classes(labels[keep], label_names, f"{source} (limit={limit})")
    texts = [texts[i] for i in keep]
    labels = labels[keep].astype(np.int64)
    parts = split_indices(labels, plan, split_seed, source)

    tokenizer = make_tokenizer([texts[i] for i in parts[0]])
    if tokenizer.token_to_id("[PAD]") != 0:
        raise AssertionError("tokenizer must map [PAD] to id 0")

    special = np.array(tokenizer.encode("", add_special_tokens=True).ids, dtype=np.int64)  # e.g. [CLS], [SEP]
    splits = []
    for part_name, part in zip(("train", "validation", "test"), parts):
        part_texts = [texts[i] for i in part]
        ids, mask = encode_texts(tokenizer, part_texts, max_components)
        split = Split(inputs=ids, mask=mask, labels=labels[part], texts=part_texts, features=None)
        empty = ~(mask & ~np.isin(ids, special)).any(axis=1)  # [CLS] [SEP] alone is no atom
        if empty.any():
            logger.warning(
                "%s: dropped %d %s text(s) that encode to no tokens", source, int(empty.sum()), part_name
            )
            split = split.take(~empty)
        splits.append(split)
    return Dataset(
        name=name,
        modality="text",
        train=splits[0],
        validation=splits[1],
        test=splits[2],
        label_names=list(label_names),
        max_components=max_components,
        component_dim=1,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        input_scale=1.0,
        tokenizer=tokenizer,
        preprocess={"kind": "none"},
    )
