"""Reading corpora for `atomize index`: columns found or named, metadata kept, bad rows named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexing.corpus import CorpusError, read_records


def test_csv_text_id_label_and_metadata(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('id,text,label,source\nd1,"hello, world",pos,web\nd2,,neg,mail\n')
    fmt, columns, records = read_records(path)
    records = list(records)
    assert fmt == "csv" and (columns.input, columns.id, columns.label) == ("text", "id", "label")
    first, second = records
    assert (first.row, first.value, first.id, first.label) == (1, "hello, world", "d1", "pos")
    assert first.metadata == {"text": "hello, world", "source": "web"}  # the text is kept to be read back
    assert second.value is None and second.problem == "column 'text' is empty"


def test_csv_numeric_arrays_as_json_cells(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('values,kind\n"[1, 2, 3]",a\n"[1, NaN]",b\n"[1, 2",c\n')
    _, columns, records = read_records(path)
    good, nan, broken = list(records)
    assert columns.input == "values" and columns.id is None
    assert good.value == [1, 2, 3] and good.metadata == {"kind": "a"}  # arrays are not copied to metadata
    assert nan.problem == "column 'values' contains NaN or Inf"
    assert "not a JSON list" in broken.problem


def test_named_columns_and_missing_ones(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("body,cat\nabc,x\n")
    _, columns, _ = read_records(path, input_column="body", label_column="cat")
    assert (columns.input, columns.label) == ("body", "cat")
    with pytest.raises(CorpusError, match="no input column"):
        read_records(path)
    with pytest.raises(CorpusError, match="no label column 'kind'"):
        read_records(path, input_column="body", label_column="kind")


def test_csv_row_with_too_many_cells(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("text,label\na,b\nc,d,e\n")
    _, _, records = read_records(path)
    assert list(records)[1].problem == "3 cells, the header has 2"


def test_jsonl_rows_counted_without_blank_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": "one", "id": 7, "topic": "a"}), "", "{not json", json.dumps([1, 2]),
             json.dumps({"text": 5})]
    path.write_text("\n".join(lines) + "\n")
    _, columns, records = read_records(path)
    one, bad_json, not_object, not_text = list(records)
    assert (one.row, one.value, one.id, one.metadata) == (1, "one", 7, {"text": "one", "topic": "a"})
    assert bad_json.row == 2 and "not valid JSON" in bad_json.problem
    assert not_object.problem == "not a JSON object"
    assert not_text.problem == "column 'text' is int, not text or a list of numbers"


def test_npz_inputs_labels_and_ids(tmp_path):
    path = tmp_path / "x.npz"
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    x[2, 0] = np.inf
    np.savez(path, X=x, y=np.array([0, 1, 1]), id=np.array([10, 11, 12]))
    fmt, _, records = read_records(path)
    records = list(records)
    assert fmt == "npz"
    assert [r.id for r in records] == [10, 11, 12] and [r.label for r in records] == ["0", "1", "1"]
    np.testing.assert_array_equal(records[0].value, x[0])
    assert records[2].problem == "column 'X' contains NaN or Inf"


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(CorpusError, match="unknown format '.parquet'"):
        read_records(tmp_path / "x.parquet")
    with pytest.raises(CorpusError, match="no such file"):
        read_records(tmp_path / "nope.csv")
