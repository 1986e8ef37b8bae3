"""Reading a user's corpus for `atomize index`: CSV, JSONL or NPZ, one record per atom.

- CSV (header row) and JSONL (one object per line): the input is a text column (a string) or
  an array column (a list of numbers; in CSV a JSON list in the cell); an optional id column,
  an optional label column; every other column is kept as the atom's metadata, and so is the
  text itself, so a neighbour can be read by a person.
- NPZ: array `X` (N, n) or (N, n, f) of numeric inputs, optional `y` (labels) and `id`.

Records come in file order with their 1-based row number; a record that cannot be read carries
the problem instead of an input, so the caller decides whether to refuse or skip it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Format = Literal["csv", "jsonl", "npz"]
INPUT_COLUMNS = ("text", "input", "values")  # tried in this order when --input-column is not given
ID_COLUMNS = ("id",)
LABEL_COLUMNS = ("label",)


class CorpusError(Exception):
    """A corpus that cannot be read, or a bad row; the message names the file and the row."""


@dataclass(frozen=True)
class Columns:
    """Which column is what; None for id/label = the corpus has none."""

    input: str
    id: str | None
    label: str | None


@dataclass(frozen=True)
class Record:
    row: int  # 1-based record number in the file
    value: Any = None  # a string (text) or a list / array of numbers
    id: Any = None
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the record cannot be used; value is then None


def detect_format(path: Path) -> Format:
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".npz":
        return "npz"
    raise CorpusError(f"{path}: unknown format {suffix!r} (use .csv, .jsonl or .npz)")


def pick_columns(names: list[str], input_column: str | None, id_column: str | None, label_column: str | None,
                 path: Path) -> Columns:
    def pick(given: str | None, defaults: tuple[str, ...], what: str, required: bool) -> str | None:
        if given is not None:
            if given not in names:
                raise CorpusError(f"{path}: no {what} column {given!r} (columns: {', '.join(names)})")
            return given
        found = next((name for name in defaults if name in names), None)
        if found is None and required:
            raise CorpusError(f"{path}: no input column (looked for {', '.join(defaults)}; "
                              f"columns: {', '.join(names)}); name it with --input-column")
        return found

    return Columns(pick(input_column, INPUT_COLUMNS, "input", True), pick(id_column, ID_COLUMNS, "id", False),
                   pick(label_column, LABEL_COLUMNS, "label", False))


def _record(row: int, raw: dict[str, Any], columns: Columns, from_csv: bool) -> Record:
    value = raw.get(columns.input)
    problem = None
    if from_csv and isinstance(value, str) and value.lstrip().startswith("["):
        try:  # a numeric array column in CSV is a JSON list in the cell
            value = json.loads(value)
        except ValueError:
            problem = f"column {columns.input!r} starts with '[' but is not a JSON list"
    if problem is None:
        problem = check_value(value, columns.input)
    label = raw.get(columns.label) if columns.label else None
    metadata = {key: item for key, item in raw.items() if key not in (columns.id, columns.label)
                and (key != columns.input or isinstance(value, str))}  # keep the text, not a long array
    return Record(row=row, value=None if problem else value, id=raw.get(columns.id) if columns.id else None,
                  label=None if label in (None, "") else str(label), metadata=metadata, problem=problem)


def check_value(value: Any, column: str) -> str | None:
    """Why a value cannot be an input, or None. The model's own limits are checked later."""
    if value is None:
        return f"column {column!r} is missing"
    if isinstance(value, str):
        return f"column {column!r} is empty" if not value.strip() else None
    if isinstance(value, (list, np.ndarray)):
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            return f"column {column!r} is not a rectangular array of numbers"
        if array.size == 0:
            return f"column {column!r} is an empty array"
        if not np.isfinite(array).all():
            return f"column {column!r} contains NaN or Inf"
        return None
    return f"column {column!r} is {type(value).__name__}, not text or a list of numbers"


def read_records(path: Path, *, input_column: str | None = None, id_column: str | None = None,
                 label_column: str | None = None) -> tuple[Format, Columns, Iterator[Record]]:
    """The corpus's format, its columns, and its records in file order (read lazily)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt == "npz":
        return fmt, Columns("X", "id", "y"), _npz_records(path)
    if fmt == "csv":
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed by the generator
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames:
            handle.close()
            raise CorpusError(f"{path}: empty file (a header row is needed)")
        columns = pick_columns(list(reader.fieldnames), input_column, id_column, label_column, path)

        def csv_records() -> Iterator[Record]:
            with handle:
                for row, raw in enumerate(reader, start=1):
                    if None in raw:  # more cells than the header
                        yield Record(row=row, problem=f"{len(raw) - 1 + len(raw[None])} cells, the header has {len(raw) - 1}")
                        continue
                    yield _record(row, raw, columns, from_csv=True)

        return fmt, columns, csv_records()
    return fmt, *_jsonl(path, input_column, id_column, label_column)


def _jsonl(path: Path, input_column, id_column, label_column) -> tuple[Columns, Iterator[Record]]:
    with open(path, encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), None)
    if first is None:
        raise CorpusError(f"{path}: empty file")
    try:
        names = list(json.loads(first))
    except (ValueError, TypeError):
        raise CorpusError(f"{path}: line 1 is not a JSON object") from None
    columns = pick_columns(names, input_column, id_column, label_column, path)

    def records() -> Iterator[Record]:
        row = 0
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                row += 1
                try:
                    raw = json.loads(line)
                except ValueError as exc:
                    yield Record(row=row, problem=f"not valid JSON ({exc})")
                    continue
                if not isinstance(raw, dict):
                    yield Record(row=row, problem="not a JSON object")
                    continue
                yield _record(row, raw, columns, from_csv=False)

    return columns, records()


def _npz_records(path: Path) -> Iterator[Record]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path}: cannot be read ({exc})") from None
    if "X" not in data:
        raise CorpusError(f"{path}: no array X (arrays: {', '.join(data.files)})")
    inputs = data["X"]
    labels = data["y"] if "y" in data else None
    ids = data["id"] if "id" in data else None
    for name, array in (("y", labels), ("id", ids)):
        if array is not None and len(array) != len(inputs):
            raise CorpusError(f"{path}: {name} has {len(array)} rows, X has {len(inputs)}")

    def records() -> Iterator[Record]:
        with data:
            for i in range(len(inputs)):
                value = inputs[i]
                problem = check_value(value, "X")
                yield Record(row=i + 1, value=None if problem else value,
                             id=None if ids is None else ids[i].item(),
                             label=None if labels is None else str(labels[i].item()), problem=problem)

    return records()
