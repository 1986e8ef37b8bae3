"""User datasets: ``csv:PATH`` (text) and ``npz:PATH`` (numeric).

Everything wrong with a user file is reported as one DatasetError line that names the file, the
row where there is one, and the problem, because these messages are what a researcher sees when
``atomize train --dataset csv:...`` refuses their data.

Row numbers: a CSV row is counted like a spreadsheet (the header is row 1, the first data row is
row 2). An npz row is the 0-based index into ``X`` / ``y``, written ``X[i]`` / ``y[i]``.
"""

from __future__ import annotations

import csv
import logging
import os
import zipfile

import numpy as np

from .base import PLAN_70_15_15, Dataset, DatasetError, build_numeric, build_text, check_classes
from .builtin import TEXT_MAX_COMPONENTS, text_tokenizer

logger = logging.getLogger(__name__)


def _check_path(path: str, kind: str) -> None:
    if not path:
        raise DatasetError(f"dataset '{kind}:' needs a file path, e.g. {kind}:data/train.{kind}")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found")


# --------------------------------------------------------------------------------------------
# csv


def _read_csv(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """(texts, label strings, row numbers) of a ``text,label`` CSV, validated row by row."""
    texts: list[str] = []
    labels: list[str] = []
    rows: list[int] = []
    try:
        # utf-8-sig: tolerate the byte-order mark that spreadsheet programs write.
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: the file is empty; expected a header row 'text,label'")
            columns = [c.strip().lower() for c in header]
            for needed in ("text", "label"):
                if needed not in columns:
                    raise DatasetError(
                        f"{path}: row 1 (header): missing column {needed!r}; "
                        f"found {', '.join(map(repr, header))}"
                    )
            col_text, col_label = columns.index("text"), columns.index("label")
            for row in reader:
                line = reader.line_num
                if not row:  # a blank line
                    continue
                if len(row) != len(header):
                    raise DatasetError(
                        f"{path}: row {line}: {len(row)} fields, expected {len(header)} ({', '.join(header)})"
                    )
                text, label = row[col_text].strip(), row[col_label].strip()
                if not text:
                    raise DatasetError(f"{path}: row {line}: empty text")
                if not label:
                    raise DatasetError(f"{path}: row {line}: empty label")
                texts.append(text)
                labels.append(label)
                rows.append(line)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not valid UTF-8 text (byte {e.start}): save the file as UTF-8") from None
    except csv.Error as e:
        raise DatasetError(f"{path}: row {reader.line_num}: malformed CSV ({e})") from None
    if not texts:
        raise DatasetError(f"{path}: no data rows after the header")
    return texts, labels, np.array(rows, dtype=np.int64)


def load_csv(path: str, *, split_seed: int, limit: int | None, tokenizer=None) -> Dataset:
    path = os.path.expanduser(path)
    _check_path(path, "csv")
    texts, label_strings, rows = _read_csv(path)
    label_names = sorted(set(label_strings))
    index = {name: i for i, name in enumerate(label_names)}
    labels = np.array([index[s] for s in label_strings], dtype=np.int64)
    check_classes(labels, label_names, path, row_numbers=rows)
    n_duplicates = len(texts) - len(set(texts))
    if n_duplicates:
        # Kept (the file is the user's data), but copies can land in both train and test.
        logger.warning(
            "%s: %d rows repeat an earlier text; copies may fall in different splits", path, n_duplicates
        )
    return build_text(
        f"csv:{path}",
        texts=texts,
        labels=labels,
        label_names=label_names,
        plan=PLAN_70_15_15,
        split_seed=split_seed,
        limit=limit,
        max_components=TEXT_MAX_COMPONENTS,
        make_tokenizer=text_tokenizer if tokenizer is None else (lambda _train_texts: tokenizer),
        source=path,
    )


# --------------------------------------------------------------------------------------------
# npz


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    # np.load would try anything that is not a zip as a pickle; say what is expected instead.
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not a readable .npz archive (expected a file written by numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.keys())
            for needed in ("X", "y"):
                if needed not in names:
                    found = ", ".join(map(repr, names)) or "no arrays"
                    raise DatasetError(f"{path}: missing array {needed!r}; found {found}")
            return archive["X"], archive["y"]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npz archive ({e})") from None
    except ValueError as e:  # object arrays refused by allow_pickle=False, corrupt members
        raise DatasetError(f"{path}: cannot read arrays ({e})") from None


def load_npz(path: str, *, split_seed: int, limit: int | None) -> Dataset:
    path = os.path.expanduser(path)
    _check_path(path, "npz")
    X, y = _read_npz(path)
    if X.ndim not in (2, 3):
        raise DatasetError(f"{path}: X has rank {X.ndim} (shape {X.shape}); expected (N, n) or (N, n, f)")
    if y.ndim != 1:
        raise DatasetError(f"{path}: y has rank {y.ndim} (shape {y.shape}); expected (N,)")
    if len(X) != len(y):
        raise DatasetError(f"{path}: X has {len(X)} rows but y has {len(y)}")
    if X.shape[0] == 0 or X.shape[1] == 0 or (X.ndim == 3 and X.shape[2] == 0):
        raise DatasetError(f"{path}: X has shape {X.shape}; need at least one row, component and value")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise DatasetError(f"{path}: X has dtype {X.dtype}; expected numbers")
    X = X.astype(np.float32)
    if X.ndim == 2:
        X = X[:, :, None]  # (N, n) -> (N, n, 1): each component is a scalar
    finite = np.isfinite(X).reshape(len(X), -1).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        bad = X[i][~np.isfinite(X[i])][0]
        raise DatasetError(f"{path}: X[{i}] (row {i}) contains a non-finite value ({bad}); "
                           f"{int((~finite).sum())} row(s) affected")
    if not np.issubdtype(y.dtype, np.integer):
        # Floats are accepted when they hold whole numbers (1.0, 2.0), a common export artefact.
        if np.issubdtype(y.dtype, np.floating):
            bad = np.flatnonzero(~(np.isfinite(y) & (y == np.round(y))))
        else:
            bad = np.arange(len(y))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(
                f"{path}: y[{i}] (row {i}) is {y[i].item()!r}; y must hold integer class labels"
            )
    # Labels may be any integers (e.g. {3, 7}): map them to 0..K-1, named by their value.
    values, labels = np.unique(y.astype(np.int64), return_inverse=True)
    label_names = [str(v) for v in values]
    check_classes(labels, label_names, path, row_numbers=np.arange(len(labels)), row_name="index")
    return build_numeric(
        f"npz:{path}",
        inputs=X,
        labels=labels.astype(np.int64),
        label_names=label_names,
        features=X.reshape(len(X), -1),
        input_scale=1.0,
        preprocess={"kind": "none"},
        plan=PLAN_70_15_15,
        split_seed=split_seed,
        limit=limit,
        source=path,
    )
