"""Every failure answers its status in the one error shape, and the service keeps serving."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.routes import atomize, bank_map, embeddings, meta, pages
from service.routes.deps import QUERY_TYPES, get_serving, query_spec
from contract.runner import OUTPUT_NAMES
from service.runtime import Runtime

from .conftest import run_async, serving
from .test_api_meta import metric


def error_of(response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["request_id"] == response.headers["x-request-id"]
    return error["message"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        ({"inputs": ["t01", ""]}, "inputs[1]: String should have at least 1 character"),
        ({"inputs": [[1.0, 2.0]]}, "inputs[0]: Input should be a valid string (model synthetic-atom takes text)"),
        ({"inputs": [{"a": 1}]}, "inputs[0]: Input should be a valid string"),
        ({"inputs": [5]}, "inputs[0]: Input should be a valid string"),
        ({"inputs": ["t01"], "rank_by": "mass"}, "rank_by: Input should be 'distance' or 'energy'"),
        ({"inputs": ["t01"], "include": ["spin"]}, "include[0]: Input should be"),
        ({"inputs": ["t01"], "neighbors": -1}, "neighbors: Input should be greater than or equal to 0"),
        ({"inputs": ["t01"], "neighbors": 101}, "neighbors=101 is more than max_neighbors=100"),
        ({"inputs": ["t01"], "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_invalid_text_requests_answer_422(text_client, body, words):
    assert words in error_of(text_client.post("/v1/atomize", json=body), 422, "invalid_input")


@pytest.mark.parametrize(
    "inputs, words",
    [
        ([[float("nan")] * 64], "inputs[0] contains NaN or Inf"),
        ([[0.0] * 64, [float("inf")] * 64], "inputs[1] contains NaN or Inf"),
        (["a string"], "inputs[0]: Input should be a valid array (model digits-atom takes 64 numbers, or 8 rows"),
        ([[1.0] * 10], "inputs[0]: List should have at least 64 items after validation, not 10"),
        ([[[1.0] * 8] * 7], "inputs[0]: List should have at least 8 items after validation, not 7"),
        ([[1e39] * 64], "inputs[0][0]: 1e+39 is past the largest magnitude accepted, 1e+18"),
    ],
)
def test_invalid_numeric_inputs_answer_422(numeric_client, inputs, words):
    # json.dumps writes NaN/Infinity literals, which Python's JSON parser (and so the service) accepts
    response = numeric_client.post("/v1/atomize", content=json.dumps({"inputs": inputs}),
                                   headers={"content-type": "application/json"})
    assert words in error_of(response, 422, "invalid_input")


def test_malformed_json_answers_422(text_client):
    response = text_client.post("/v1/atomize", content=b'{"inputs": [', headers={"content-type": "application/json"})
    error_of(response, 422, "invalid_input")


def test_too_many_inputs_and_too_long_inputs_answer_413(text_case):
    settings = text_case.settings(max_inputs_per_request=3, max_components_per_input=4, max_queue_items=10)
    with TestClient(create_app(settings, bundle=text_case.bundle)) as client:
        message = error_of(client.post("/v1/atomize", json={"inputs": ["t01"] * 4}), 413, "too_large")
        assert message == "inputs has 4 items; the limit is max_inputs_per_request=3"
        long = {"inputs": ["t01", "t01 t02 t03 t04 t05"], "truncate": False}
        message = error_of(client.post("/v1/atomize", json=long), 413, "too_large")
        assert message.startswith("inputs[1] is 19 characters long and has more than 4 tokens")
        message = error_of(client.post("/v1/embeddings", json={"input": ["t01"] * 4, "model": "m"}), 413, "too_large")
        assert "max_inputs_per_request=3" in message
        message = error_of(client.post("/v1/embeddings", json={"input": "t01 " * 5, "truncate": False}), 413, "too_large")
        assert message.startswith("input[0] is 20 characters long and has more than 4 tokens")


def test_request_bytes_are_limited_by_header_and_by_actual_size(text_case):
    settings = text_case.settings(max_request_bytes=2048)
    with TestClient(create_app(settings, bundle=text_case.bundle)) as client:
        big = json.dumps({"inputs": ["t01 " * 600]}).encode()
        message = error_of(client.post("/v1/atomize", content=big, headers={"content-type": "application/json"}),
                           413, "too_large")
        assert f"has {len(big)} bytes; the limit is max_request_bytes=2048" in message

        def chunks():  # no Content-Length: only the bytes actually received can tell
            yield b'{"inputs": ["'
            for _ in range(100):
                yield b"t01 " * 10
            yield b'"]}'

        streamed = client.post("/v1/atomize", content=chunks(), headers={"content-type": "application/json"})
        assert "max_request_bytes=2048" in error_of(streamed, 413, "too_large")
        assert client.post("/v1/atomize", json={"inputs": ["t01"]}).status_code == 200  # small is fine


def test_api_key_is_required_when_configured(text_case):
    with TestClient(create_app(text_case.settings(api_key="s3cret"), bundle=text_case.bundle)) as client:
        missing = client.post("/v1/atomize", json={"inputs": ["t01"]})
        assert "missing API key" in error_of(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/v1/atomize", json={"inputs": ["t01"]}, headers={"Authorization": "Bearer nope"})
        assert error_of(wrong, 401, "unauthorized") == "invalid API key"
        assert client.get("/v1/model").status_code == 401
        ok = client.post("/v1/atomize", json={"inputs": ["t01"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_a_full_queue_answers_429_with_retry_after(text_case):
    # A long batching wait keeps the first request queued while the second arrives.
    settings = text_case.settings(max_queue_items=4, max_inputs_per_request=4, max_wait_ms=300)

    async def main():
        async with serving(create_app(settings, bundle=text_case.bundle)) as client:
            first = asyncio.ensure_future(client.post("/v1/atomize", json={"inputs": ["t01"] * 3}))
            await asyncio.sleep(0.05)
            second = await client.post("/v1/atomize", json={"inputs": ["t02", "t03"]})
            return await first, second

    first, second = run_async(main())
    assert first.status_code == 200
    assert "max_queue_items=4" in error_of(second, 429, "queue_full")
    assert second.headers["retry-after"] == "1"


def test_a_passed_deadline_answers_504(text_case):
    settings = text_case.settings(request_timeout_ms=100, max_wait_ms=1000)

    async def main():
        async with serving(create_app(settings, bundle=text_case.bundle)) as client:
            return await client.post("/v1/atomize", json={"inputs": ["t01"]})

    error_of(run_async(main()), 504, "deadline")


def test_an_inference_failure_answers_500_and_the_service_keeps_serving(text_case, monkeypatch):
    original = Runtime.run_feeds
    poison = 7  # any batch holding token id 7 fails, as a broken model would

    def run_feeds(self, feeds, outputs=OUTPUT_NAMES):
        if (feeds["input_ids"] == poison).any():
            raise RuntimeError("simulated ONNX Runtime failure")
        return original(self, feeds, outputs)

    monkeypatch.setattr(Runtime, "run_feeds", run_feeds)
    with TestClient(create_app(text_case.settings(), bundle=text_case.bundle)) as client:
        token = client.app.state.atom.runtime.tokenizer.id_to_token(poison)
        failed = client.post("/v1/atomize", json={"inputs": [token]}, headers={"X-Request-ID": "req-42"})
        message = error_of(failed, 500, "inference_error")
        assert failed.json()["error"]["request_id"] == "req-42"
        assert "inference failed" in message
        after = client.post("/v1/atomize", json={"inputs": ["t01 t02"]})
        assert after.status_code == 200
        assert np.isfinite(after.json()["results"][0]["embedding"]).all()


def test_unknown_paths_use_the_same_error_shape(text_client):
    response = text_client.get("/v2/nothing")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


BAD_BODIES = {
    "lone surrogate": (b'{"inputs": ["\\ud800"]}', b'{"input": ["\\ud800"]}', "the body is not valid JSON"),
    "lone low surrogate": (b'{"inputs": ["a\\udc00b"]}', b'{"input": "a\\udc00b"}', "the body is not valid JSON"),
    "invalid UTF-8": (b'{"inputs": ["\xff\xfe"]}', b'{"input": "\xc3\x28"}', "the body is not valid JSON"),
    "deep nesting": (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                     "recursion limit exceeded"),
    "not an object": (b'["t01"]', b'"t01"', "body: Input should be an object"),
    "string for an integer": (b'{"inputs": ["t01"], "neighbors": "5"}', b'{"input": "t01", "dimensions": "16"}',
                              "Input should be a valid integer, not a string"),
    "boolean for an integer": (b'{"inputs": ["t01"], "neighbors": true}', b'{"input": "t01", "dimensions": true}',
                               "Input should be a valid integer, not a boolean"),
    "fraction for an integer": (b'{"inputs": ["t01"], "neighbors": 2.5}', b'{"input": "t01", "dimensions": 16.5}',
                                "fractional part"),
    "string for a boolean": (b'{"inputs": ["t01"], "truncate": "no"}', b'{"input": "t01", "truncate": "no"}',
                             "truncate: Input should be a valid boolean"),
    "number for a text": (b'{"inputs": [5]}', b'{"input": [5]}', "valid string"),
}
EMBEDDINGS_WORDS = {"number for a text": "token arrays are not accepted"}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_every_bad_body_is_a_422_and_no_failure_of_the_service(text_case, name):
    atomize_body, embeddings_body, words = BAD_BODIES[name]
    with TestClient(create_app(text_case.settings(), bundle=text_case.bundle)) as client:
        for path, body in (("/v1/atomize", atomize_body), ("/v1/embeddings", embeddings_body)):
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            expected = EMBEDDINGS_WORDS.get(name, words) if path == "/v1/embeddings" else words
            assert expected in error_of(response, 422, "invalid_input")
        assert client.post("/v1/atomize", json={"inputs": ["t01"]}).status_code == 200  # and it keeps serving
        text = client.get("/metrics").text
    # Only the service's own faults count as failures of the service: none here.
    assert metric(text, "atom_failures_total", reason="inference_error") == 0.0
    assert metric(text, "atom_failures_total", reason="internal_error") == 0.0
    assert metric(text, "atom_failures_total", reason="invalid_input") == 2.0
    assert not [line for line in text.splitlines() if line.startswith("atom_requests_total") and 'status="5' in line]


def test_every_query_parameter_goes_through_the_one_strict_check(text_client):
    """check_query (in get_serving) is where query parameters are held to one value of their
    type: a route that declared one elsewhere, or a type it cannot check, would slip past it."""
    routes = [route for module in (atomize, embeddings, bank_map, meta, pages) for route in module.router.routes]
    with_query = {route.path: query_spec(route) for route in routes if query_spec(route)}
    assert with_query == {"/v1/bank/map": (("limit", int), ("ids", str), ("model", str)), "/v1/model": (("model", str),)}
    document = text_client.get("/openapi.json").json()
    in_document = {path for path, operations in document["paths"].items() for operation in operations.values()
                   if any(parameter["in"] == "query" for parameter in operation.get("parameters", []))}
    assert in_document == set(with_query)  # no route of the app with query parameters was missed above
    for route in routes:
        if query_spec(route):
            assert any(dependency.call is get_serving for dependency in route.dependant.dependencies)
            assert all(kind in QUERY_TYPES for _, kind in query_spec(route))


def test_an_integral_number_is_an_integer_as_json_schema_says(text_client):
    body = text_client.post("/v1/atomize", json={"inputs": ["t01"], "neighbors": 2.0}).json()
    assert len(body["results"][0]["neighbors"]) == 2


def test_a_text_of_white_space_is_empty_and_one_with_no_token_is_the_unknown_token(text_client):
    assert error_of(text_client.post("/v1/atomize", json={"inputs": ["t01", " \n "]}), 422,
                    "invalid_input") == "inputs[1] is empty (white space only)"
    body = text_client.post("/v1/atomize", json={"inputs": ["\u0001", "\u0001\u0002"], "include": ["components"]}).json()
    assert [[c["token"] for c in r["components"]] for r in body["results"]] == [["[UNK]"], ["[UNK]"]]


def test_past_the_admission_limit_a_request_is_refused_before_its_body_is_read(text_case):
    settings = text_case.settings(max_concurrent_requests=2, max_wait_ms=300)

    async def main():
        async with serving(create_app(settings, bundle=text_case.bundle)) as client:
            first = [asyncio.ensure_future(client.post("/v1/atomize", json={"inputs": ["t01"]})) for _ in range(2)]
            await asyncio.sleep(0.05)  # both are in the batcher's 300 ms wait

            async def never_sent():  # a body that would stall forever if anything read it
                await asyncio.sleep(3600)
                yield b"{}"

            refused = await client.post("/v1/atomize", content=never_sent())
            health = await client.get("/healthz")  # never refused by the admission limit
            return await asyncio.gather(*first), refused, health

    first, refused, health = run_async(main())
    assert [r.status_code for r in first] == [200, 200]
    message = error_of(refused, 429, "overloaded")
    assert message == "2 requests are in flight; the limit is max_concurrent_requests=2"
    assert refused.headers["retry-after"] == "1" and health.status_code == 200


def test_a_full_queue_is_refused_before_the_body_is_parsed(text_case):
    settings = text_case.settings(max_queue_items=2, max_inputs_per_request=2, max_wait_ms=300)

    async def main():
        async with serving(create_app(settings, bundle=text_case.bundle)) as client:
            first = asyncio.ensure_future(client.post("/v1/atomize", json={"inputs": ["t01", "t02"]}))
            await asyncio.sleep(0.05)
            # not even JSON: a full queue answers before anything parses the body
            refused = await client.post("/v1/atomize", content=b"{not json", headers={"content-type": "application/json"})
            return await first, refused

    first, refused = run_async(main())
    assert first.status_code == 200
    assert error_of(refused, 429, "queue_full") == "the queue holds 2 items; the limit is max_queue_items=2"


def test_a_result_that_is_not_finite_answers_422_naming_its_input(text_case, monkeypatch):
    original = Runtime.run_feeds
    poison = 7

    def run_feeds(self, feeds, outputs=OUTPUT_NAMES):
        out = list(original(self, feeds, outputs))
        rows = (feeds["input_ids"] == poison).any(axis=1)
        out[0] = np.where(rows[:, None], np.nan, out[0]).astype(np.float32)  # that row's embedding overflows
        return tuple(out)

    monkeypatch.setattr(Runtime, "run_feeds", run_feeds)
    with TestClient(create_app(text_case.settings(max_wait_ms=50), bundle=text_case.bundle)) as client:
        token = client.app.state.atom.runtime.tokenizer.id_to_token(poison)
        message = error_of(client.post("/v1/atomize", json={"inputs": ["t01 t02", token]}), 422, "invalid_input")
        assert message.startswith("inputs[1] gives a result that is not finite")
        message = error_of(client.post("/v1/embeddings", json={"input": [token]}), 422, "invalid_input")
        assert message.startswith("input[0] gives a result that is not finite")
        assert client.post("/v1/atomize", json={"inputs": ["t01 t02"]}).status_code == 200


REQUESTS = [  # (path, body, headers): answers, refusals and errors of the serving routes
    ("/v1/atomize", {"inputs": ["t01 t02", "t03"], "include": ["neighbors", "components", "composition"]}, {}),
    ("/v1/embeddings", {"input": "t01 t02"}, {}),
    ("/v1/embeddings", {"input": ["t01", "t02 t03"], "encoding_format": "base64"}, {}),
    ("/v1/atomize", {"inputs": []}, {}),
    ("/v1/atomize", {"inputs": ["t01"], "model": "nope"}, {}),
    ("/v1/atomize?limit=1&limit=2", {"inputs": ["t01"]}, {}),  # a query parameter no serving route declares
    ("/v1/embeddings", b"{not json", {}),
    ("/v1/atomize", {"inputs": ["t01"]}, {"authorization": "Bearer wrong"}),
    ("/v1/atomize", {"inputs": ["t01"]}, {"authorization": "Bearer key"}),
]


@pytest.mark.parametrize("api_key", [None, "key"])
def test_direct_routes_answer_exactly_as_the_framework_does(text_case, api_key):
    """The middleware's direct call of the serving routes (the default) against FastAPI's own
    routing of them (direct_routes=False): the same status, headers of note and body."""
    answers = {}
    for direct in (True, False):
        settings = text_case.settings(direct_routes=direct, api_key=api_key)
        with TestClient(create_app(settings, bundle=text_case.bundle)) as client:
            routes = client.app.user_middleware[0].kwargs["direct"]
            assert (set(routes) if direct else routes) == ({"/v1/atomize", "/v1/embeddings"} if direct else None)
            answers[direct] = []
            for path, body, headers in REQUESTS:
                sent = {"content": body} if isinstance(body, bytes) else {"json": body}
                response = client.post(path, headers={"x-request-id": "same", **headers}, **sent)
                answers[direct].append((response.status_code, response.headers["content-type"],
                                        response.headers["x-request-id"], response.headers.get("retry-after"),
                                        response.json()))
            failures = metric(client.get("/metrics").text, "atom_failures_total")
            answers[direct].append(failures)
    assert answers[True] == answers[False]
    statuses = [answer[0] for answer in answers[True][:-1]]
    assert statuses == ([200, 200, 200, 422, 404, 200, 422, 200, 200] if api_key is None
                        else [401] * 8 + [200])
