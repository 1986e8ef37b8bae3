"""Fixtures for the deployment checks: the parsed files, ATOM_* settings, the app's contract."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


class Reset:
    """Compose's `!reset` tag: the override removes the attribute from the merged file."""

    def __repr__(self) -> str:
        return "!reset"


class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def _load(relative: str) -> Any:
    with open(ROOT / relative) as handle:
        return yaml.load(handle, Loader=_ComposeLoader)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return _load("docker-compose.yml")


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge for the keys used here: mappings merge, `!reset` removes, the rest replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            else:
                out[key] = _merge(base.get(key), value)
        return out
    return override


@pytest.fixture(scope="session")
def compose_cpu(compose: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml with docker-compose.cpu.yml applied, as `docker compose -f ... -f ...` would."""
    return _merge(compose, _load("docker-compose.cpu.yml"))


@pytest.fixture(scope="session")
def compose_two(compose: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml with docker-compose.two-models.yml applied."""
    return _merge(compose, _load("docker-compose.two-models.yml"))


@pytest.fixture(scope="session")
def prometheus_config() -> dict[str, Any]:
    return _load("deploy/prometheus/prometheus.yml")


@pytest.fixture(scope="session")
def k8s() -> dict[str, dict[str, Any]]:
    """Every manifest under deploy/k8s by kind (one object of each kind is expected)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        with open(path) as handle:
            for doc in yaml.safe_load_all(handle):
                if doc and "kind" in doc and doc["kind"] != "Kustomization" and "apiVersion" in doc:
                    assert doc["kind"] not in objects, f"two {doc['kind']} objects; the tests expect one"
                    objects[doc["kind"]] = doc
    return objects


@pytest.fixture
def check_atom_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any], str], Settings]:
    """Every ATOM_* variable names a Settings field, and together they validate."""

    def check(env: dict[str, Any], where: str) -> Settings:
        atom = {key: str(value) for key, value in env.items() if key.startswith("ATOM_")}
        assert atom, f"{where} sets no ATOM_* variable"
        for key in atom:
            assert key[len("ATOM_") :].lower() in Settings.model_fields, f"{where}: {key} is not a Settings field"
        for key in list(os.environ):
            if key.startswith("ATOM_"):
                monkeypatch.delenv(key)
        for key, value in atom.items():
            monkeypatch.setenv(key, value)
        return Settings()

    return check


@pytest.fixture(scope="session")
def tiny_bundle(text_bundle: Path) -> Path:
    """The session's tiny text bundle (tests/conftest.py), from the real pipeline (train + export)."""
    return text_bundle


@pytest.fixture(scope="session")
def app_client(tiny_bundle: Path):
    """The service on the tiny bundle, lifespan run (loaded, warmed), after a little traffic."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(Settings(bundle=tiny_bundle, device="cpu"))) as client:
        assert client.post("/v1/atomize", json={"inputs": ["a b c"], "neighbors": 2}).status_code == 200
        assert client.post("/v1/atomize", json={"inputs": []}).status_code == 422
        yield client
