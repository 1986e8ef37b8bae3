"""Several bundles in one service (issue 21): each under its name, routed by the request's `model`,
listed the OpenAI way, each with its own batcher and metric series; names and pins checked at start."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.routes.deps import Ready
from service.served import ServeSetupError, load_served

from .conftest import run_async, serving
from .processes import start, wait_ready
from .test_api_meta import metric


def several(text_case, numeric_case, **overrides) -> Settings:
    """The text bundle under its own name, the digits bundle under its own, the text bundle again as `copy`."""
    bundles = [str(text_case.path), str(numeric_case.path), f"copy={text_case.path}"]
    return Settings(bundle=bundles, device="cpu", **overrides)


@pytest.fixture(scope="module")
def three(text_case, numeric_case):
    with TestClient(create_app(several(text_case, numeric_case))) as client:
        yield client


def error_of(response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == kind
    return response.json()["error"]["message"]


def test_models_are_listed_in_the_order_given_under_their_names(three, text_case, numeric_case):
    text, digits = text_case.bundle.manifest.name, numeric_case.bundle.manifest.name
    assert [m["id"] for m in three.get("/v1/models").json()["data"]] == [text, digits, "copy"]
    assert three.get("/v1/models/copy").json()["id"] == "copy"
    assert three.get("/v1/model").json()["id"] == text  # the first is the default
    info = three.get("/v1/model", params={"model": digits}).json()
    assert info["id"] == digits and info["modality"] == "numeric"
    copy = three.get("/v1/model", params={"model": "copy"}).json()
    assert copy["id"] == "copy" and copy["name"] == text and copy["digest"] == text_case.bundle.digest
    ready = three.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["models"]) == {text, digits, "copy"}
    assert all(checks["batcher_running"] for checks in ready["models"].values())


def test_each_request_runs_the_model_it_names(three, text_case, numeric_case):
    text, digits = text_case.bundle.manifest.name, numeric_case.bundle.manifest.name
    rows = [0, 3]
    for case, name in ((text_case, text), (numeric_case, digits), (text_case, "copy")):
        body = {"model": name, "inputs": [case.train_inputs[r] for r in rows], "include": ["embedding"]}
        response = three.post("/v1/atomize", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == case.bundle.manifest.name
        got = [result["embedding"] for result in response.json()["results"]]
        np.testing.assert_allclose(got, case.reference(rows)["embedding"], atol=1e-5)
    embedded = three.post("/v1/embeddings", json={"model": "copy", "input": text_case.train_inputs[0],
                                                   "encoding_format": "float"})
    np.testing.assert_allclose(embedded.json()["data"][0]["embedding"], text_case.reference([0])["embedding"][0], atol=1e-5)
    numeric = three.post("/v1/embeddings", json={"model": digits, "input": "t01"})
    assert "numeric" in error_of(numeric, 422, "invalid_input")
    mapped = three.get("/v1/bank/map", params={"model": digits, "limit": 5}).json()
    assert mapped["total"] == len(numeric_case.bundle.atoms)


def test_a_request_without_a_model_or_naming_another_is_told_which_are_served(three, text_case, numeric_case):
    text, digits = text_case.bundle.manifest.name, numeric_case.bundle.manifest.name
    missing = error_of(three.post("/v1/atomize", json={"inputs": ["t01"]}), 422, "invalid_input")
    assert missing.startswith("model: required") and text in missing and digits in missing and "copy" in missing
    unknown = error_of(three.post("/v1/embeddings", json={"model": "nope", "input": "t01"}), 404, "model_not_found")
    assert "'nope'" in unknown and text in unknown and "copy" in unknown
    assert "'nope'" in error_of(three.get("/v1/model", params={"model": "nope"}), 404, "model_not_found")
    assert error_of(three.get("/v1/models/nope"), 404, "model_not_found")
    wrong_type = three.post("/v1/atomize", json={"model": 5, "inputs": ["t01"]})
    assert error_of(wrong_type, 422, "invalid_input").startswith("model:")
    not_json = three.post("/v1/atomize", content=b"{", headers={"content-type": "application/json"})
    assert "not valid JSON" in error_of(not_json, 422, "invalid_input")
    # the named model's own request models parse the rest: a text for the digits model is refused by them
    as_text = error_of(three.post("/v1/atomize", json={"model": digits, "inputs": ["t01"]}), 422, "invalid_input")
    assert as_text.startswith("inputs[0]") and f"model {digits} takes" in as_text


def test_the_openapi_document_describes_each_models_bodies(three, text_case, numeric_case):
    text, digits = text_case.bundle.manifest.name, numeric_case.bundle.manifest.name
    schemas = three.get("/openapi.json").json()["components"]["schemas"]

    def resolve(ref: dict) -> dict:
        return schemas[ref["$ref"].rsplit("/", 1)[1]]

    atomize = [resolve(ref) for ref in schemas["AtomizeRequest"]["oneOf"]]
    assert [body["properties"]["model"]["const"] for body in atomize] == [text, digits, "copy"]
    assert all("model" in body["required"] and "inputs" in body["required"] for body in atomize)
    inputs = [json.dumps(body["properties"]["inputs"]) for body in atomize]
    assert inputs[0] != inputs[1] and "number" in inputs[1] and "string" in inputs[0]  # each model's own inputs
    embeddings = [resolve(ref) for ref in schemas["EmbeddingsRequest"]["oneOf"]]
    assert [body["properties"]["model"]["const"] for body in embeddings] == [text, "copy"]  # the text models only
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schemas))
    assert refs and all(ref in schemas for ref in refs)  # every reference resolves


def test_a_large_body_is_routed_to_the_model_it_names(three, text_case, monkeypatch):
    off_loop = []  # what the requests handed to a prepare thread
    original = Ready.off_loop

    async def recorded(self, work, *args):
        off_loop.append(work.__name__)
        return await original(self, work, *args)

    monkeypatch.setattr(Ready, "off_loop", recorded)
    assert three.post("/v1/atomize", json={"model": "copy", "inputs": ["t01"]}).status_code == 200
    assert off_loop == ["prepare"]  # a small body's model is read on the event loop
    long_text = "t01 " * 20_000  # 80 kB: past ROUTE_ON_LOOP_BYTES, its model is read in a prepare thread
    for body in ({"model": "copy", "inputs": [long_text]}, {"inputs": [long_text], "model": "copy"}):
        off_loop.clear()
        response = three.post("/v1/atomize", json={**body, "include": ["embedding"]})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["truncated"] is True and off_loop == ["route", "prepare"]
    missing = three.post("/v1/atomize", json={"inputs": [long_text]})
    assert error_of(missing, 422, "invalid_input").startswith("model: required")
    unknown = three.post("/v1/embeddings", json={"input": long_text, "model": "nope"})
    assert "'nope'" in error_of(unknown, 404, "model_not_found")


def test_one_models_full_queue_does_not_refuse_anothers_requests(text_case, numeric_case):
    # A long batching wait keeps the first model's request queued, its queue full, while the others arrive.
    settings = several(text_case, numeric_case, max_queue_items=2, max_inputs_per_request=2, max_wait_ms=300)
    text, digits = text_case.bundle.manifest.name, numeric_case.bundle.manifest.name

    async def main():
        async with serving(create_app(settings)) as client:
            first = asyncio.ensure_future(client.post("/v1/atomize", json={"model": text, "inputs": ["t01", "t02"]}))
            await asyncio.sleep(0.05)
            refused = await client.post("/v1/embeddings", json={"model": text, "input": "t03"})
            others = await asyncio.gather(
                client.post("/v1/atomize", json={"model": digits, "inputs": [numeric_case.train_inputs[0]]}),
                client.post("/v1/embeddings", json={"model": "copy", "input": "t03"}))
            return await first, refused, others

    first, refused, others = run_async(main())
    assert first.status_code == 200
    assert error_of(refused, 429, "queue_full") == "the queue holds 2 items; the limit is max_queue_items=2"
    assert [answer.status_code for answer in others] == [200, 200]


def test_one_models_busy_prepare_threads_do_not_hold_up_anothers_requests(text_case, numeric_case):
    """Each model parses and tokenizes its bodies on its own prepare threads: with every prepare
    thread of the first model held, a request for `copy` is still answered."""
    settings = several(text_case, numeric_case, prepare_threads=1)
    text = text_case.bundle.manifest.name
    release = threading.Event()

    async def main():
        async with serving(create_app(settings)) as client:
            pools = client._transport.app.state.atom.prepare_pools
            assert list(pools) == [text, numeric_case.bundle.manifest.name, "copy"]
            assert len({id(pool) for pool in pools.values()}) == 3
            held = asyncio.get_running_loop().run_in_executor(pools[text], release.wait, 30)
            first = asyncio.ensure_future(client.post("/v1/embeddings", json={"model": text, "input": "t01"}))
            other = await asyncio.wait_for(client.post("/v1/embeddings", json={"model": "copy", "input": "t01"}), 10)
            waiting = not first.done()  # the first model's body waits for its only prepare thread
            release.set()
            await held
            return other, waiting, await first

    other, waiting, first = run_async(main())
    assert other.status_code == 200 and waiting and first.status_code == 200
    assert first.json()["data"][0]["embedding"] == other.json()["data"][0]["embedding"]  # the same bundle twice


def test_every_model_has_its_own_metric_series(text_case, numeric_case):
    with TestClient(create_app(several(text_case, numeric_case))) as client:
        digits = numeric_case.bundle.manifest.name
        for _ in range(2):
            assert client.post("/v1/atomize", json={"model": "copy", "inputs": ["t01", "t02 t03"]}).status_code == 200
        assert client.post("/v1/atomize", json={"model": digits, "inputs": [numeric_case.train_inputs[0]]}).status_code == 200
        assert client.post("/v1/atomize", json={"model": "nope", "inputs": ["t01"]}).status_code == 404
        text = client.get("/metrics").text
    assert metric(text, "atom_items_atomized_total", model="copy") == 4
    assert metric(text, "atom_items_atomized_total", model=digits) == 1
    assert metric(text, "atom_items_atomized_total", model=text_case.bundle.manifest.name) == 0
    assert metric(text, "atom_requests_total", route="/v1/atomize", status="200", model="copy") == 2
    assert metric(text, "atom_requests_total", route="/v1/atomize", status="404", model="") == 1  # named none served
    assert metric(text, "atom_failures_total", reason="model_not_found", model="") == 1
    assert metric(text, "atom_model_info", model="copy", name=text_case.bundle.manifest.name) == 1
    assert metric(text, "atom_bank_atoms", model=digits) == len(numeric_case.bundle.atoms)


def test_two_bundles_under_one_name_are_refused_at_start(text_case, tmp_path):
    with pytest.raises(ServeSetupError, match="two bundles are served under the name 'synthetic-atom'"):
        load_served(Settings(bundle=[str(text_case.path), str(text_case.path)], device="cpu"))
    with pytest.raises(ValueError, match="two bundles under one name"):
        Settings(bundle=[f"a={text_case.path}", f"a={text_case.path}"])
    with pytest.raises(ServeSetupError, match="'nope'"):
        load_served(Settings(bundle=[str(text_case.path), f"b={text_case.path}"], bank=["nope=/x"]))
    process, url = start(text_case.path, "--bundle", str(text_case.path), "--device", "cpu")
    assert process.wait(timeout=60) == 1
    lines = [line for line in process.stderr.read().splitlines() if line.strip()]
    assert len(lines) == 1 and "two bundles are served under the name" in lines[0]


def test_each_bundle_can_be_pinned_by_its_name(text_case, numeric_case):
    digits = numeric_case.bundle.manifest.name
    pinned = several(text_case, numeric_case, bundle_digest=[f"copy={text_case.bundle.digest}",
                                                             f"{digits}={numeric_case.bundle.digest}"])
    assert [item.name for item in load_served(pinned)][1:] == [digits, "copy"]
    wrong = several(text_case, numeric_case, bundle_digest=[f"{digits}={text_case.bundle.digest}"])
    with pytest.raises(Exception, match="is not the pinned"):
        load_served(wrong)


def test_the_openai_client_against_two_models(text_case, numeric_case):
    digits = numeric_case.bundle.manifest.name
    process, url = start(text_case.path, "--bundle", f"copy={text_case.path}", "--bundle", str(numeric_case.path),
                         "--device", "cpu")
    try:
        wait_ready(process, url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        name = text_case.bundle.manifest.name
        assert [m.id for m in client.models.list()] == [name, "copy", digits]
        expected = text_case.reference([0, 1])["embedding"]
        for model in (name, "copy"):
            response = client.embeddings.create(input=text_case.train_inputs[:2], model=model)
            assert response.model == name
            np.testing.assert_allclose([d.embedding for d in response.data], expected, atol=1e-5)
        with pytest.raises(openai.NotFoundError) as caught:
            client.embeddings.create(input="t01", model="text-embedding-3-small")
        assert "copy" in str(caught.value) and digits in str(caught.value)
        with pytest.raises(openai.UnprocessableEntityError) as numeric:
            client.embeddings.create(input="t01", model=digits)
        assert "numeric" in str(numeric.value)
        assert client.models.retrieve("copy").id == "copy"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_a_model_given_a_nice_value_runs_on_threads_that_yield_the_cores(text_case):
    """inference_nice: the named model's batch thread and the ONNX Runtime threads its session
    started take the value; the other model's threads and the event loop's keep theirs."""
    from service.priority import process_threads

    settings = Settings(bundle=[str(text_case.path), f"heavy={text_case.path}"], device="cpu", inference_threads=2,
                        inference_workers=1, inference_nice=["heavy=7"])
    before = {tid for tid in process_threads() if nice_of(tid) == 7}
    with TestClient(create_app(settings)) as client:
        for model in ("heavy", text_case.bundle.manifest.name):
            response = client.post("/v1/atomize", json={"model": model, "inputs": [text_case.train_inputs[0]],
                                                        "include": ["embedding"]})
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["results"][0]["embedding"],
                                       text_case.reference([0])["embedding"][0], atol=1e-5)
        served = client.app.state.atom.served

        def batch_thread(name: str) -> int:
            (thread,) = served[name].batcher._executor._threads
            return thread.native_id

        niced = {tid for tid in process_threads() if nice_of(tid) == 7} - before
        assert nice_of(batch_thread("heavy")) == 7 and nice_of(batch_thread(text_case.bundle.manifest.name)) == 0
        assert len(niced - {batch_thread("heavy")}) >= 1  # the intra-op thread its session started
        assert nice_of(threading.get_native_id()) == 0


def test_a_model_given_idle_runs_its_inference_threads_under_sched_idle(text_case):
    """inference_nice=NAME=idle: that model's batch thread and its session's threads run under
    SCHED_IDLE; the other model's threads and this one keep the normal policy, and both answer."""
    from service.priority import process_threads

    settings = Settings(bundle=[str(text_case.path), f"heavy={text_case.path}"], device="cpu", inference_threads=2,
                        inference_workers=1, inference_nice=["heavy=idle"])
    assert settings.nice_for("heavy") == "idle" and settings.nice_for(text_case.bundle.manifest.name) == 0
    before = {tid for tid in process_threads() if os.sched_getscheduler(tid) == os.SCHED_IDLE}
    with TestClient(create_app(settings)) as client:
        for model in ("heavy", text_case.bundle.manifest.name):
            response = client.post("/v1/embeddings", json={"model": model, "input": "a b"})
            assert response.status_code == 200, response.text
        served = client.app.state.atom.served
        (heavy,) = served["heavy"].batcher._executor._threads
        (light,) = served[text_case.bundle.manifest.name].batcher._executor._threads
        idle = {tid for tid in process_threads() if os.sched_getscheduler(tid) == os.SCHED_IDLE} - before
        assert heavy.native_id in idle and light.native_id not in idle
        assert len(idle - {heavy.native_id}) >= 1  # the intra-op thread its session started
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER


def test_each_model_gets_the_inference_threads_given_for_it_else_the_bare_count(text_case):
    """The threads a model is given are split among its workers: 2 threads run as 2 batches at
    once on one thread each (auto: up to 3 workers, no more than the threads given), or one batch
    on 2 threads (inference_workers=1)."""
    names = ("heavy", "light", "wide")
    for workers, expected in ((0, {"heavy": (1, 1), "light": (2, 1), "wide": (3, 1)}),
                              (1, {"heavy": (1, 1), "light": (1, 2), "wide": (1, 4)})):
        settings = Settings(bundle=[str(text_case.path), *(f"{name}={text_case.path}" for name in names)],
                            device="cpu", inference_threads=["2", "heavy=1", "wide=4"], inference_workers=workers)
        with TestClient(create_app(settings)) as client:
            served = client.app.state.atom.served
            got = {name: (served[name].batcher.workers,
                          served[name].runtime.session.get_session_options().intra_op_num_threads) for name in names}
            assert got == expected, workers
            for name in names:
                response = client.post("/v1/embeddings", json={"model": name, "input": ["a b", "c"]})
                assert response.status_code == 200, response.text
    assert Settings(bundle=[str(text_case.path)], inference_threads=3).threads_for("x") == 3  # the env's form: one count
    assert Settings(bundle=[str(text_case.path)]).threads_for("x") == 0
    with pytest.raises(ValueError, match="from 0 to 1024"):
        Settings(bundle=[str(text_case.path)], inference_threads=["heavy=many"])
    with pytest.raises(ServeSetupError, match="inference_threads: 'other=1' is for model 'other', which is not served"):
        with TestClient(create_app(Settings(bundle=[f"heavy={text_case.path}"], device="cpu", inference_threads=["other=1"]))):
            pass


def test_inference_nice_is_checked_at_start(text_case):
    two = [str(text_case.path), f"heavy={text_case.path}"]
    with pytest.raises(ValueError, match="names no model"):
        Settings(bundle=two, inference_nice=["7"])
    with pytest.raises(ValueError, match="from 0 to 19, or idle"):
        Settings(bundle=two, inference_nice=["heavy=25"])
    with pytest.raises(ValueError, match="from 0 to 19, or idle"):
        Settings(bundle=two, inference_nice=["heavy=lazy"])
    assert Settings(bundle=two, inference_nice=["heavy=5"]).nice_for("heavy") == 5
    assert Settings(bundle=two, inference_nice=["heavy=5"]).nice_for("other") == 0
    assert Settings(bundle=[str(text_case.path)], inference_nice="3").nice_for("anything") == 3
