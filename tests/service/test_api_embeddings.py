"""POST /v1/embeddings: the OpenAI shape, float and base64, usage, and numeric models refused."""

from __future__ import annotations

import base64

import numpy as np

from service.schemas import EmbeddingsResponse


def test_float_embeddings_equal_the_onnx_model(text_client, text_case):
    rows = [0, 2, 4]
    response = text_client.post("/v1/embeddings", json={"input": [text_case.train_inputs[r] for r in rows], "model": "synthetic-atom"})
    assert response.status_code == 200, response.text
    body = EmbeddingsResponse.model_validate(response.json())
    expected = text_case.reference(rows)["embedding"]
    assert body.object == "list" and body.model == text_case.bundle.manifest.name
    assert [d.index for d in body.data] == [0, 1, 2]
    for data, embedding in zip(body.data, expected):
        assert data.object == "embedding"
        np.testing.assert_allclose(data.embedding, embedding, atol=1e-5)
    tokens = int(text_case.model_mask[rows].sum())
    assert body.usage.prompt_tokens == tokens and body.usage.total_tokens == tokens


def test_base64_is_little_endian_float32_of_the_same_vector(text_client, text_case):
    text = text_case.train_inputs[1]
    floats = text_client.post("/v1/embeddings", json={"input": text, "model": "synthetic-atom"}).json()["data"][0]["embedding"]
    encoded = text_client.post("/v1/embeddings", json={"input": text, "model": "synthetic-atom", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.asarray(floats, dtype=np.float32))


def test_a_single_string_gives_one_embedding(text_client):
    body = text_client.post("/v1/embeddings", json={"input": "t01 t02", "model": "synthetic-atom"}).json()
    assert len(body["data"]) == 1 and body["usage"]["prompt_tokens"] == 2


def test_numeric_models_answer_422_naming_the_endpoint(numeric_client):
    response = numeric_client.post("/v1/embeddings", json={"input": "hello", "model": "synthetic-atom"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert "/v1/embeddings takes text" in error["message"] and "/v1/atomize" in error["message"]


def test_wrong_dimensions_and_token_arrays_are_refused(text_client):
    wrong = text_client.post("/v1/embeddings", json={"input": "t01", "model": "synthetic-atom", "dimensions": 3})
    assert wrong.status_code == 422 and "dimensions=3" in wrong.json()["error"]["message"]
    size = text_client.get("/v1/model").json()["embedding_dim"]
    assert text_client.post("/v1/embeddings", json={"input": "t01", "dimensions": size}).status_code == 200
    tokens = text_client.post("/v1/embeddings", json={"input": [[1, 2, 3]], "model": "synthetic-atom"})
    assert tokens.status_code == 422 and "token arrays are not accepted" in tokens.json()["error"]["message"]
    empty = text_client.post("/v1/embeddings", json={"input": [], "model": "synthetic-atom"})
    assert empty.status_code == 422
    assert empty.json()["error"]["message"] == "input: List should have at least 1 item after validation, not 0"
