"""The explorer's routes: the page and its assets, offline docs, the report, and the bank map."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.projection import PROJECTION_FILE, fit_projection, read_projection
from service.app import create_app
from contract.bundle import MANIFEST_FILE, checksum_tree, load_bundle


def test_page_and_its_assets(text_client):
    page = text_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/explorer.js"' in page.text and 'href="static/explorer.css"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside
    urls = set()
    for name in ("explorer.js", "common.js", "map.js", "pad.js"):  # ES modules: a JavaScript type is required
        script = text_client.get(f"/static/{name}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        urls |= set(re.findall(r"https?://[^\s\"'`]+", script.text))
    assert urls == {"http://www.w3.org/2000/svg"}  # the SVG namespace: a name, not a fetch
    assert text_client.get("/static/explorer.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["../app.py", "..%2Fapp.py", "nothing.js", "docs/../../app.py", "docs/core.py"])
def test_static_files_are_a_fixed_list(text_client, name):
    response = text_client.get(f"/static/{name}")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_docs_and_redoc_are_served_offline(text_client):
    for path, asset in (("/docs", "/static/docs/swagger-ui-bundle.js"), ("/redoc", "/static/docs/redoc.standalone.js")):
        page = text_client.get(path)
        assert page.status_code == 200 and asset in page.text
        assert "cdn.jsdelivr" not in page.text and "fonts.googleapis" not in page.text
        assert "img-src 'self' data:" in page.headers["content-security-policy"]
        body = text_client.get(asset)
        assert body.status_code == 200 and len(body.content) > 500_000  # the real bundle, not a stub
    assert text_client.get("/static/docs/swagger-ui.css").status_code == 200
    assert "oauth2" in text_client.get("/docs/oauth2-redirect").text
    assert text_client.get("/openapi.json").json()["paths"]["/v1/bank/map"]["get"]["tags"] == ["explorer"]


def test_report_is_served_from_the_bundle(text_client, text_case):
    assert text_client.get("/report", follow_redirects=False).headers["location"] == "report/"
    page = text_client.get("/report/")
    assert page.status_code == 200 and page.text == (text_case.path / "report" / "report.html").read_text()
    figure = text_client.get("/report/atoms.png")
    assert figure.headers["content-type"] == "image/png" and figure.content[:4] == b"\x89PNG"
    assert text_client.get("/report/../manifest.json").status_code == 404
    assert text_client.get("/report/nothing.png").status_code == 404


def test_report_is_missing_from_a_bundle_exported_without_one(numeric_client):
    response = numeric_client.get("/report/")
    assert response.status_code == 404 and "has no training report" in response.json()["error"]["message"]


def test_map_holds_the_stored_projection(client_case):
    client, case = client_case
    bank = case.bundle.atoms
    body = client.get("/v1/bank/map").json()
    assert body["total"] == len(bank) == body["sampled"] == len(body["atoms"]["id"])  # tiny bank: all of it
    projection, xy = read_projection(case.path / PROJECTION_FILE, len(bank), case.bundle.manifest.embedding_dim)
    np.testing.assert_allclose(body["projection"]["axes"], projection.axes, atol=1e-6)
    rows = np.asarray(body["atoms"]["id"])  # bundle bank ids are the row numbers
    np.testing.assert_allclose(np.c_[body["atoms"]["x"], body["atoms"]["y"]], xy[rows], atol=1e-6)
    np.testing.assert_allclose(body["atoms"]["radius"], bank.radius[rows], atol=1e-6)
    names = case.bundle.manifest.label_names
    assert body["atoms"]["label"] == [names[i] for i in bank.label[rows]]
    if case.path.joinpath("report", "stats.json").is_file():  # the text bundle has a report
        assert body["stats"]["summary"]["atoms in bank"] == len(bank) and "top_tokens" in body["stats"]
    else:
        assert body["stats"] is None


def test_a_query_lands_where_its_bank_atom_is(client_case):
    """The page places a query by the map's projection; a training item lands on its own atom."""
    client, case = client_case
    rows = [0, 5, 17]
    body = client.get("/v1/bank/map").json()
    mean, axes = np.asarray(body["projection"]["mean"]), np.asarray(body["projection"]["axes"])
    answer = client.post("/v1/atomize", json={"inputs": [case.train_inputs[r] for r in rows], "include": ["embedding"]})
    embedding = np.asarray([result["embedding"] for result in answer.json()["results"]])
    placed = (embedding - mean) @ axes.T
    stored = np.c_[body["atoms"]["x"], body["atoms"]["y"]][rows]
    np.testing.assert_allclose(placed, stored, atol=1e-3)


def test_map_sample_and_requested_atoms(numeric_client, numeric_case):
    bank = numeric_case.bundle.atoms
    first = numeric_client.get("/v1/bank/map", params={"limit": 50}).json()
    assert first["sampled"] == 50 and first["total"] == len(bank) and len(set(first["atoms"]["id"])) == 50
    assert numeric_client.get("/v1/bank/map", params={"limit": 50}).json()["atoms"] == first["atoms"]  # seeded
    outside = [i for i in range(len(bank)) if i not in set(first["atoms"]["id"])][:3]
    body = numeric_client.get("/v1/bank/map", params={"limit": 0, "ids": ",".join(map(str, outside)) + ",999999,x"}).json()
    assert body["sampled"] == 0 and body["requested"]["id"] == outside  # unknown ids are left out
    too_many = numeric_client.get("/v1/bank/map", params={"ids": ",".join(map(str, range(101)))})
    assert too_many.status_code == 413 and too_many.json()["error"]["type"] == "too_large"
    assert numeric_client.get("/v1/bank/map", params={"limit": 20_001}).status_code == 422


@pytest.mark.parametrize("query", [
    "limit=true&limit=3",  # FastAPI alone took the last one
    "limit=3&limit=3",
    "ids=1&ids=2",
    "limit=5.0",  # FastAPI alone read it as 5
    "limit=true",
    "limit=1e3",
    "limit=%2B5",
    "limit=%205",
    "limit=",
    "limit=-1",  # an integer, out of range
    "limit=20001",
])
def test_map_query_parameters_are_validated_strictly(numeric_client, query):
    response = numeric_client.get(f"/v1/bank/map?{query}")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input" and error["request_id"] == response.headers["x-request-id"]
    assert error["message"].startswith(f"query.{query.split('=')[0]}: ")


def test_map_takes_a_plain_integer_limit(numeric_client):
    body = numeric_client.get("/v1/bank/map?limit=3&ids=0").json()
    assert body["sampled"] == len(body["atoms"]["id"]) == 3 and body["requested"]["id"] == [0]
    assert numeric_client.get("/v1/bank/map?limit=0").json()["sampled"] == 0
    assert numeric_client.get("/v1/bank/map?unknown=1&unknown=2").status_code == 200  # undeclared: ignored


def test_map_and_page_with_an_api_key(text_case):
    key = "explorer-test-key"
    with TestClient(create_app(text_case.settings(api_key=key), bundle=text_case.bundle)) as client:
        page = client.get("/")
        assert page.status_code == 200 and key not in page.text  # the page is public, and holds no secret
        assert client.get("/v1/bank/map").status_code == 401
        assert client.get("/v1/bank/map?limit=5.0").status_code == 401  # the key first: nothing else is told
        assert client.get("/v1/bank/map", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_bundle_without_a_stored_map_gets_one_fitted(text_case, tmp_path):
    """A bundle exported before the explorer has no projection.npz: the map is fitted at first use."""
    old = tmp_path / "old"
    shutil.copytree(text_case.path, old)
    (old / PROJECTION_FILE).unlink()
    manifest = text_case.bundle.manifest
    manifest.model_copy(update={"files": checksum_tree(old)}).write(old)
    bundle = load_bundle(old)
    assert PROJECTION_FILE not in bundle.manifest.files and (old / MANIFEST_FILE).is_file()
    with TestClient(create_app(text_case.settings(bundle=old), bundle=bundle)) as client:
        body = client.get("/v1/bank/map").json()
    expected = fit_projection(bundle.atoms.embedding)
    np.testing.assert_allclose(body["projection"]["axes"], expected.axes, atol=1e-6)
    np.testing.assert_allclose(body["atoms"]["x"], expected.apply(bundle.atoms.embedding)[:, 0], atol=1e-5)
