"""GET /v1/model, /healthz, /readyz, /metrics, /docs."""

from __future__ import annotations

import os
import re

import pytest

from fastapi.testclient import TestClient

from service.app import create_app
from service.schemas import ModelInfo


def test_model_describes_the_bundle_runtime_and_batching(text_client, text_case):
    response = text_client.get("/v1/model")
    assert response.status_code == 200
    info = ModelInfo.model_validate(response.json())
    manifest = text_case.bundle.manifest
    assert (info.name, info.version, info.modality) == (manifest.name, manifest.version, "text")
    assert info.embedding_dim == manifest.embedding_dim
    assert info.label_names == manifest.label_names
    assert info.potential["kind"] == manifest.potential.kind
    assert info.runtime["provider"] == "CPUExecutionProvider" and info.runtime["device"] == "cpu"
    assert info.runtime["model_file"] == "encoder.onnx"
    workers, threads = text_client.app.state.atom.settings.workers_for(manifest.name)
    assert (info.runtime["workers"], info.runtime["threads_per_worker"]) == (workers, threads)
    assert (workers, threads) == (3, max(1, len(os.sched_getaffinity(0)) // 3))  # auto on a CPU
    assert info.bank["atoms"] == len(text_case.bundle.atoms)
    assert info.batching == {"max_batch_items": 32, "max_batch_components": 8192, "max_wait_ms": 0.0,
                             "max_queue_items": 2048, "max_batch_padding": 0.1,  # auto on CPU
                             "max_round_items": 128}
    assert info.limits["max_inputs_per_request"] == 256


def test_health_and_readiness(text_client):
    assert text_client.get("/healthz").json() == {"status": "ok"}
    ready = text_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and all(ready.json()["checks"].values())


def test_not_ready_before_start_and_after_shutdown(text_case):
    app = create_app(text_case.settings(), bundle=text_case.bundle)
    client = TestClient(app)  # not entered: the lifespan has not run, nothing is loaded
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["session_warmed_up"] is False
    assert response.json()["checks"]["batcher_running"] is False
    refused = client.post("/v1/atomize", json={"inputs": ["t01"]})
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "not_ready"
    assert client.get("/healthz").status_code == 200  # alive all the same
    with client:
        assert client.get("/readyz").status_code == 200
        app.state.atom.stopping = True  # the first thing the lifespan's shutdown does
        assert client.get("/readyz").json()["checks"]["accepting_requests"] is False
        refused = client.post("/v1/atomize", json={"inputs": ["t01"]})
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    assert client.get("/readyz").status_code == 503  # after shutdown: the batcher has stopped


def metric(text: str, series: str, /, **labels) -> float:
    """The sum of the samples of `series` whose labels include these (others, such as `model`,
    may be anything); no such sample fails the test (it is not read as 0)."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == series and all(sample.labels.get(k) == v for k, v in labels.items())]
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    assert values, f"no series {series}{{{label_text}}} in /metrics"
    return float(sum(values))


def test_the_metric_helper_fails_on_a_missing_series_and_sums_the_others():
    text = ('atom_requests_total{route="/v1/atomize",status="200",model="a"} 1.0\n'
            'atom_requests_total{route="/v1/atomize",status="200",model="b"} 2.0\n'
            'atom_requests_total{route="/v1/embeddings",status="200",model="b"} 4.0\n')
    with pytest.raises(AssertionError, match="no series atom_nothing"):
        metric(text, "atom_nothing")
    with pytest.raises(AssertionError):
        metric(text, "atom_requests_total", route="/v1/model")
    assert metric(text, "atom_requests_total", route="/v1/atomize") == 3.0
    assert metric(text, "atom_requests_total", model="b") == 6.0
    assert metric(text, "atom_requests_total", route="/v1/atomize", model="a") == 1.0


def test_metrics_count_the_requests_just_made(text_case):
    with TestClient(create_app(text_case.settings(), bundle=text_case.bundle)) as client:
        for _ in range(3):
            assert client.post("/v1/atomize", json={"inputs": ["t01 t02", "t03"]}).status_code == 200
        assert client.post("/v1/atomize", json={"inputs": []}).status_code == 422
        assert client.post("/v1/embeddings", json={"input": "t01", "model": "synthetic-atom"}).status_code == 200
        client.get("/nowhere")
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "atom_requests_total", route="/v1/atomize", status="200") == 3
    assert metric(text, "atom_requests_total", route="/v1/atomize", status="422") == 1
    assert metric(text, "atom_requests_total", route="/v1/embeddings", status="200") == 1
    assert metric(text, "atom_requests_total", route="other", status="404") == 1
    assert metric(text, "atom_request_duration_seconds_count", route="/v1/atomize") == 4
    assert metric(text, "atom_failures_total", reason="invalid_input") == 1
    assert metric(text, "atom_failures_total", reason="queue_full") == 0  # present from the start
    assert metric(text, "atom_items_atomized_total") == 3 * 2 + 1  # the warm-up is not counted
    assert metric(text, "atom_batch_items_count") >= 1
    batches = metric(text, "atom_batch_items_count")
    assert metric(text, "atom_inference_seconds_count") == batches  # one inference per batch
    assert 1 <= metric(text, "atom_neighbor_search_seconds_count") <= batches  # embeddings skip the search
    assert metric(text, "atom_bank_atoms") == len(text_case.bundle.atoms)
    manifest = text_case.bundle.manifest
    assert metric(text, "atom_model_info", digest=text_case.bundle.digest, name=manifest.name,
                  provider="CPUExecutionProvider", version=manifest.version) == 1
    assert text_case.bundle.digest.startswith("sha256:")
    assert metric(text, "atom_queue_items") == 0
    for name in ("atom_queue_wait_seconds_count", "atom_batch_padded_components_count"):
        assert metric(text, name) >= 1


def test_docs_and_openapi_are_served(text_client):
    assert text_client.get("/docs").status_code == 200
    paths = text_client.get("/openapi.json").json()["paths"]
    assert {"/v1/atomize", "/v1/embeddings", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(paths)


def test_models_lists_the_served_bundle_and_refuses_other_names(text_client, text_case):
    name = text_case.bundle.manifest.name
    listed = text_client.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [name]
    assert listed["data"][0]["object"] == "model" and listed["data"][0]["created"] > 1_600_000_000
    assert text_client.get(f"/v1/models/{name}").json()["id"] == name
    missing = text_client.get("/v1/models/other")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "model_not_found"
    named = text_client.post("/v1/atomize", json={"inputs": ["t01"], "model": name})
    assert named.status_code == 200
    wrong = text_client.post("/v1/atomize", json={"inputs": ["t01"], "model": "other"})
    assert wrong.status_code == 404 and repr(name) in wrong.json()["error"]["message"]


def test_request_ids_are_32_hex_digits_unique_per_request_and_a_harmless_client_id_is_echoed(text_case):
    import re

    from fastapi.testclient import TestClient

    from service.app import create_app

    ids = []
    for _ in range(2):  # two processes' worth of services: their ids differ too
        with TestClient(create_app(text_case.settings(), bundle=text_case.bundle)) as client:
            ids += [client.post("/v1/embeddings", json={"input": "t01"}).headers["x-request-id"] for _ in range(3)]
            ids.append(client.get("/healthz").headers["x-request-id"])
            assert client.get("/healthz", headers={"x-request-id": "mine-1"}).headers["x-request-id"] == "mine-1"
            assert client.get("/healthz", headers={"x-request-id": "bad id!"}).headers["x-request-id"] != "bad id!"
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == len(ids)
    assert ids[0][:16] != ids[4][:16]  # each service draws its own random prefix
