"""The real thing: `python -m service` under uvicorn on 127.0.0.1, used by the official openai client."""

from __future__ import annotations

import base64
import shutil
import signal

import httpx
import numpy as np
import openai
import pytest

from .processes import start, wait_ready
from .test_api_meta import metric

API_KEY = "test-key"


@pytest.fixture(scope="module")
def server(text_case):
    process, url = start(text_case.path, "--api-key", API_KEY, "--device", "cpu")
    try:
        wait_ready(process, url)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_the_openai_client_works_unchanged(server, text_case):
    _, url = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
    rows = [0, 1, 2]
    texts = [text_case.train_inputs[r] for r in rows]
    expected = text_case.reference(rows)["embedding"]

    default = client.embeddings.create(input=texts, model=text_case.bundle.manifest.name)  # the client asks for base64
    as_floats = client.embeddings.create(input=texts, model=text_case.bundle.manifest.name, encoding_format="float")
    single = client.embeddings.create(input=texts[0], model=text_case.bundle.manifest.name)

    for response in (default, as_floats):
        assert response.model == text_case.bundle.manifest.name
        assert [d.index for d in response.data] == [0, 1, 2]
        np.testing.assert_allclose([d.embedding for d in response.data], expected, atol=1e-5)
        assert response.usage.prompt_tokens == int(text_case.model_mask[rows].sum())
    np.testing.assert_allclose(single.data[0].embedding, expected[0], atol=1e-5)


def test_the_openai_client_sees_a_bad_key_as_authentication_error(server):
    _, url = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(input="t01", model="synthetic-atom")


def test_plain_http_against_the_server(server):
    _, url = server
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(f"{url}/v1/atomize", json={"inputs": ["t01 t02"], "neighbors": 2}, headers=headers)
    assert response.status_code == 200
    assert len(response.json()["results"][0]["neighbors"]) == 2
    assert response.headers["x-request-id"]
    encoded = httpx.post(f"{url}/v1/embeddings", json={"input": "t01 t02", "encoding_format": "base64"},
                         headers=headers).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), "<f4")
    np.testing.assert_allclose(decoded, response.json()["results"][0]["embedding"], atol=0)
    assert metric(httpx.get(f"{url}/metrics").text, "atom_requests_total", route="/v1/atomize", status="200") >= 1


def test_sigterm_stops_the_server_cleanly(text_case):
    process, url = start(text_case.path, "--device", "cpu")
    wait_ready(process, url)
    process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown, so the status says SIGTERM
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    stderr = process.stderr.read()
    assert "service.app: stopped" in stderr  # the lifespan's shutdown ran: queue drained, batcher stopped
    assert "Traceback" not in stderr


def test_a_broken_bundle_stops_the_start_with_one_line(text_case, tmp_path):
    broken = tmp_path / "bundle"
    shutil.copytree(text_case.path, broken)
    (broken / "atoms.npz").unlink()
    process, _ = start(broken, "--device", "cpu")
    assert process.wait(timeout=60) == 1
    lines = [line for line in process.stderr.read().splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].endswith(f"cannot start: {broken / 'atoms.npz'}: missing file")


def test_the_openai_client_lists_and_retrieves_the_model_and_is_told_of_an_unknown_one(server, text_case):
    _, url = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
    name = text_case.bundle.manifest.name
    assert [m.id for m in client.models.list()] == [name]
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(input="t01", model="text-embedding-3-small")
    assert name in str(caught.value)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
