"""benchmarks/serve.py's levels and device: the GPU run of issue 19 (`make bench-serve-gpu`) takes
its own client counts, and where ONNX Runtime has no CUDA it stops with one line and writes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import serve  # noqa: E402


def test_without_cuda_the_gpu_run_stops_before_starting_anything(text_bundle, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(serve, "providers", lambda: ["CPUExecutionProvider"])
    started = []
    monkeypatch.setattr(serve, "running_service", lambda *a, **k: started.append(a))
    code = serve.main(["--bundle", str(text_bundle), "--device", "cuda", "--out", str(tmp_path)])
    assert code == 2 and not started and not list(tmp_path.iterdir())
    assert "no CUDAExecutionProvider" in caplog.text and "CPUExecutionProvider" in caplog.text


@pytest.mark.parametrize("clients", ["0", "1,x", ""])
def test_client_levels_must_be_whole_numbers_from_one(clients, text_bundle, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--bundle", str(text_bundle), "--clients", clients, "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_the_levels_asked_are_the_levels_measured_served_against_raw(text_bundle, tmp_path):
    assert serve.main(["--bundle", str(text_bundle), "--quick", "--clients", "3", "--device", "cpu",
                       "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "serve.json").read_text())
    assert results["command"].endswith(f"--clients 3 --device cpu --out {tmp_path}")
    embedding_rows = [r for r in results["served"] if r["response"] == "embedding"]
    assert {r["concurrency"] for r in embedding_rows} == {3}  # the fixed-wait row too: it takes the second level, or the one
    assert {r["batching"] for r in embedding_rows} == {"on", "off", "on, max_wait_ms=5"}
    for row in results["served"]:
        assert row["failed"] == 0 and row["items_per_s"] > 0 and row["raw_items_per_s"] > 0
        assert row["served_over_raw"] == pytest.approx(row["items_per_s"] / row["raw_items_per_s"])
    assert results["command"] in (tmp_path / "serve.md").read_text()
