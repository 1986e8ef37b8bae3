"""Serving a bank folder: neighbours carry the stored texts, /v1/model describes the bank, a bank
of another bundle is refused, and a reload swaps banks without failing requests in flight."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from contract.bank import BankError, open_bank
from indexing.indexer import index_corpus
from indexing.shards import IndexOptions
from service.app import create_app
from service.banks import reload_bank
from service.errors import BankReloadFailed

from .conftest import run_async, serving
from .test_api_meta import metric
from .test_server import start, wait_ready


def index_texts(tmp_path, case, texts, name="bank", **options):
    path = tmp_path / f"{name}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "topic"])
        writer.writerows([f"{name}-{i}", text, f"topic {i % 2}"] for i, text in enumerate(texts))
    index_corpus(IndexOptions(bundle=case.path, input=path, out=tmp_path / name, progress=False, **options))
    return tmp_path / name


def test_neighbours_come_back_with_their_texts(tmp_path, text_case):
    texts = text_case.train_inputs[:40]
    bank_dir = index_texts(tmp_path, text_case, texts, index_kind="hnsw")
    app = create_app(text_case.settings(bank=bank_dir), bundle=text_case.bundle)

    async def scenario():
        async with serving(app) as client:
            response = await client.post("/v1/atomize", json={"inputs": [texts[7], texts[12]], "neighbors": 3,
                                                              "include": ["neighbors"]})
            model = (await client.get("/v1/model")).json()
            metrics = (await client.get("/metrics")).text
            return response, model, metrics

    response, model, metrics = run_async(scenario())
    assert response.status_code == 200, response.text
    for result, row in zip(response.json()["results"], (7, 12)):
        nearest = result["neighbors"][0]
        assert nearest["id"] == f"bank-{row}" and nearest["distance"] == pytest.approx(0.0, abs=1e-5)
        assert nearest["metadata"] == {"text": texts[row], "topic": f"topic {row % 2}"}
        assert nearest["label"] is None  # indexed without a label column
        assert len(result["neighbors"]) == 3
    bank = model["bank"]
    assert bank["atoms"] == 40 and bank["search"] == "hnsw" and bank["index"]["params"]["m"] == 32
    assert bank["built_with"]["name"] == text_case.bundle.manifest.name and bank["metadata_fields"] == ["text", "topic"]
    name = text_case.bundle.manifest.name
    assert metric(metrics, "atom_bank_info", index="hnsw", version=bank["version"], model=name) == 1.0
    assert metric(metrics, "atom_bank_atoms", model=name) == 40.0


def test_default_bank_is_the_bundles_own(text_client, text_case):
    bank = text_client.get("/v1/model").json()["bank"]
    assert bank["source"] == "bundle" and bank["atoms"] == len(text_case.bundle.atoms) and bank["search"] == "flat"


def test_bank_of_another_bundle_is_refused(tmp_path, text_case, numeric_case):
    bank_dir = index_texts(tmp_path, text_case, text_case.train_inputs[:5])
    with pytest.raises(BankError, match="not the served bundle"):
        open_bank(numeric_case.bundle, bank_dir)


def test_reload_swaps_the_bank_and_a_failed_reload_keeps_the_old_one(tmp_path, text_case):
    texts = text_case.train_inputs[:60]
    bank_dir = index_texts(tmp_path, text_case, texts[:20])
    settings = text_case.settings(bank=bank_dir)
    app = create_app(settings, bundle=text_case.bundle)

    async def scenario():
        async with serving(app) as client:
            state = app.state.atom
            old = state.runtime.bank
            body = {"inputs": [texts[30]], "neighbors": 1, "include": ["neighbors"]}
            before = (await client.post("/v1/atomize", json=body)).json()
            index_texts(tmp_path, text_case, texts[20:60])  # the operator rebuilds the bank in place
            # requests sent around the swap all succeed, on one bank or the other
            during = [client.post("/v1/atomize", json=body) for _ in range(20)]
            reloaded, *answers = await asyncio.gather(reload_bank(bank_dir, state.runtime, state.default.metrics), *during)
            after = (await client.post("/v1/atomize", json=body)).json()
            new = state.runtime.bank
            (bank_dir / "atoms.npz").write_bytes(b"broken")
            with pytest.raises(BankReloadFailed, match="still serving version"):
                await reload_bank(bank_dir, state.runtime, state.default.metrics)
            metrics = (await client.get("/metrics")).text
            return old, new, before, answers, reloaded, after, state.runtime.bank, metrics

    old, new, before, answers, reloaded, after, final, metrics = run_async(scenario())
    assert reloaded is new and len(old) == 20 and len(new) == 40 and old.version != new.version
    assert all(answer.status_code == 200 for answer in answers)
    assert before["results"][0]["neighbors"][0]["metadata"]["text"] != texts[30]  # not in the old bank
    assert after["results"][0]["neighbors"][0]["metadata"]["text"] == texts[30]  # in the new one
    assert final is new
    assert metric(metrics, "atom_bank_info", index="flat", version=new.version) == 1.0
    assert old.version not in metrics
    assert metric(metrics, "atom_bank_reloads_total", result="ok") == 1.0
    assert metric(metrics, "atom_bank_reloads_total", result="failed") == 1.0


def test_one_models_bank_reloads_on_its_route_and_a_failed_reload_keeps_it(tmp_path, text_case):
    texts = text_case.train_inputs[:40]
    bank_dir = index_texts(tmp_path, text_case, texts[:10])
    name = text_case.bundle.manifest.name
    settings = text_case.settings(bundle=[str(text_case.path), f"copy={text_case.path}"], bank=[f"copy={bank_dir}"],
                                  api_key="k")
    auth = {"Authorization": "Bearer k"}
    with TestClient(create_app(settings)) as client:
        own = client.get("/v1/model", params={"model": name}, headers=auth).json()["bank"]
        old = client.get("/v1/model", params={"model": "copy"}, headers=auth).json()["bank"]
        index_texts(tmp_path, text_case, texts)  # the operator rebuilds copy's bank in place
        assert client.post("/v1/models/copy/bank/reload").status_code == 401
        reloaded = client.post("/v1/models/copy/bank/reload", headers=auth)
        assert reloaded.status_code == 200, reloaded.text
        new = client.get("/v1/model", params={"model": "copy"}, headers=auth).json()["bank"]
        assert reloaded.json() == {"model": "copy", "atoms": 40, "version": new["version"], "search": "flat"}
        assert old["atoms"] == 10 and new["atoms"] == 40 and new["version"] != old["version"]
        assert client.get("/v1/model", params={"model": name}, headers=auth).json()["bank"] == own  # not touched
        (bank_dir / "atoms.npz").write_bytes(b"broken")
        failed = client.post("/v1/models/copy/bank/reload", headers=auth)
        assert failed.status_code == 500 and failed.json()["error"]["type"] == "bank_reload_failed"
        assert f"still serving version {new['version']}" in failed.json()["error"]["message"]
        body = {"model": "copy", "inputs": [texts[30]], "neighbors": 1, "include": ["neighbors"]}
        answer = client.post("/v1/atomize", json=body, headers=auth)
        assert answer.json()["results"][0]["neighbors"][0]["metadata"]["text"] == texts[30]  # the new bank serves on
        unknown = client.post("/v1/models/nope/bank/reload", headers=auth)
        assert unknown.status_code == 404 and "copy" in unknown.json()["error"]["message"]
        metrics = client.get("/metrics").text
    assert metric(metrics, "atom_bank_reloads_total", result="ok", model="copy") == 1.0
    assert metric(metrics, "atom_bank_reloads_total", result="failed", model="copy") == 1.0
    assert metric(metrics, "atom_bank_reloads_total", model=name) == 0.0
    assert metric(metrics, "atom_failures_total", reason="bank_reload_failed") == 1.0


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_the_bank_of_a_running_server(tmp_path, text_case):
    texts = text_case.train_inputs[:30]
    bank_dir = index_texts(tmp_path, text_case, texts[:10])
    process, url = start(text_case.path, "--bank", str(bank_dir), "--device", "cpu")
    try:
        wait_ready(process, url)
        assert httpx.get(f"{url}/v1/model").json()["bank"]["atoms"] == 10
        index_texts(tmp_path, text_case, texts)
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/model").json()["bank"]["atoms"] != 30:
            assert time.monotonic() < deadline, "the bank was not reloaded"
            time.sleep(0.1)
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_server_refuses_to_start_with_a_broken_bank(tmp_path, text_case):
    bank_dir = index_texts(tmp_path, text_case, text_case.train_inputs[:5])
    (bank_dir / "index.faiss").write_bytes(b"x")
    process, _ = start(text_case.path, "--bank", str(bank_dir), "--device", "cpu")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"cannot start: {bank_dir / 'index.faiss'}: checksum mismatch" in stderr
