"""The helpers every benchmark shares (benchmarks/common.py): results files and the machine line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from common import closed_loop, describe, machine, read_records  # noqa: E402
from peers import key as peer_key  # noqa: E402


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")  # a blank line at the end, as after a crash
    return path


def test_a_job_recorded_twice_counts_once_with_its_first_record(tmp_path):
    records = [
        {"key": "s/tweets/atom/x/seed0", "dataset": "tweets", "method": "atom", "phase": "sweep", "v": 1},
        {"key": "s/tweets/atom/y/seed0", "dataset": "tweets", "method": "atom", "phase": "sweep", "v": 2},
        {"key": "s/tweets/atom/x/seed0", "dataset": "tweets", "method": "atom", "phase": "sweep", "v": 3},
        # no "key" (the references): the same (dataset, method, phase) is the same job
        {"dataset": "tweets", "method": "logreg", "phase": "reference", "v": 4},
        {"dataset": "tweets", "method": "logreg", "phase": "reference", "v": 5},
        {"dataset": "digits", "method": "logreg", "phase": "reference", "v": 6},
    ]
    assert [r["v"] for r in read_records(write(tmp_path / "q.jsonl", records))] == [1, 2, 4, 6]


def test_no_file_no_records(tmp_path):
    assert read_records(tmp_path / "absent.jsonl") == []


def test_the_peer_records_keep_the_last_of_each_point_in_the_place_of_the_first(tmp_path):
    records = [
        {"system": "infinity", "clients": 0, "inputs_per_request": 0, "unavailable": "not installed"},
        {"system": "atomizer", "clients": 32, "inputs_per_request": 1, "items_per_s": 100},
        {"system": "atomizer", "clients": 32, "inputs_per_request": 16, "items_per_s": 300},
        {"system": "infinity", "clients": 0, "inputs_per_request": 0, "unavailable": "timed out"},
        {"system": "atomizer", "clients": 32, "inputs_per_request": 1, "items_per_s": 200},
    ]
    path = write(tmp_path / "peers.jsonl", records)
    last = read_records(path, peer_key, keep="last")
    assert [(r["system"], r.get("unavailable"), r.get("items_per_s")) for r in last] == [
        ("infinity", "timed out", None), ("atomizer", None, 200), ("atomizer", None, 300)]
    first = read_records(path, peer_key)
    assert [r.get("unavailable") or r["items_per_s"] for r in first] == ["not installed", 100, 300]
    with pytest.raises(ValueError, match="keep"):
        read_records(path, peer_key, keep="newest")


def test_machine_and_its_line():
    m = machine("CPUExecutionProvider")
    assert m["cores"] == os.cpu_count() and m["cpu"] and m["python"].count(".") == 2
    assert isinstance(m["load_average_1m_at_start"], float) and m["provider"] == "CPUExecutionProvider"
    assert "provider" not in machine()
    m = {"cpu": "Test CPU", "cores": 2, "load_average_1m_at_start": 0.5, "python": "3.11.7", "onnxruntime": "1.2.3",
         "provider": "CPUExecutionProvider"}
    assert describe(m) == ("Test CPU (2 cores, load average 0.5 at start), Python 3.11.7, onnxruntime 1.2.3 "
                           "(CPUExecutionProvider)")
    assert describe(m, load=False) == "Test CPU (2 cores), Python 3.11.7, onnxruntime 1.2.3 (CPUExecutionProvider)"
    assert describe({"cpu": "Test CPU", "cores": 2, "python": "3.11.7", "onnxruntime": None}) == \
        "Test CPU (2 cores), Python 3.11.7"


def test_closed_loop_sends_each_clients_body_until_the_time_is_up_and_pauses_after_a_429():
    import asyncio

    seen: list[bytes] = []

    async def main() -> tuple[dict, dict]:
        async def answer(reader, writer):  # 200 for body "a", 429 for anything else; keep-alive
            while line := await reader.readline():
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                body = await reader.readexactly(length)
                seen.append(body)
                status = b"200 OK" if body == b"a" else b"429 Too Many Requests"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fast = await closed_loop(port, lambda i: b"a" if i == 0 else b"b", 2, 0.3)
        paused = await closed_loop(port, lambda i: b"b", 1, 0.3, pause_on_429_s=0.2)
        server.close()
        return fast, paused

    fast, paused = asyncio.run(main())
    assert set(fast) == {"200", "429"} and len(fast["200"]) > 3 and len(fast["429"]) > 3
    assert 1 <= len(paused["429"]) <= 2  # one request, then a 0.2 s pause, within 0.3 s
    assert set(seen) == {b"a", b"b"}


def test_request_cost_takes_medians_and_the_model_share_out_of_each_systems_cpu():
    from request_cost import report, summarise

    def point(rate, cpu, p99=50.0, load=1.0):
        return {"items_per_s": rate, "cpu_us_per_request": cpu, "p99_ms": p99, "load_average_before": load}

    runs = {"before (x)": [point(800, 1400), point(900, 1300), point(100, 9000)],
            "after (this checkout)": [point(1100, 1000), point(1000, 1100), point(1200, 900)]}
    raw = {"before (x)": {"items_per_s": 4000.0, "cpu_us_per_item": 300.0},
           "after (this checkout)": {"items_per_s": 4000.0, "cpu_us_per_item": 300.0}}
    before, after = summarise(runs, raw)
    assert (before["items_per_s"], before["cpu_us_per_request"], before["http_python_us_per_request"]) == (800, 1400, 1100)
    assert (after["items_per_s"], after["http_python_us_per_request"], after["served_over_raw"]) == (1100, 700, 0.275)
    assert after["rounds"] == [1100, 1000, 1200] and before["cpu_rounds"] == [1400, 1300, 9000]
    results = {"args": {"bundle": "b", "before": "x", "rounds": 3, "seconds": 8.0, "clients": 32, "flags": [], "variants": []},
               "machine": {"cpu": "cpu", "cores": 2}, "bundle": "tweets-atom", "precision": "fp32"}
    text = report([before, after], results)
    assert "- HTTP + Python per request: 1100 µs before, 700 µs after (0.64x)." in text
    assert "served/raw after 0.28 (target >= 0.5 for the small bundle at 32 clients: not met)" in text


def test_code_at_unpacks_a_commits_files(tmp_path):
    """An older commit's code for a before/after benchmark: the files as that commit has them."""
    import subprocess

    from common import ROOT, code_at

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    into = code_at(head, tmp_path / "before")
    committed = subprocess.run(["git", "-C", str(ROOT), "show", f"{head}:service/config.py"], check=True,
                               capture_output=True, text=True).stdout
    assert into == tmp_path / "before" and (into / "service" / "config.py").read_text() == committed
    assert not (into / ".git").exists()
