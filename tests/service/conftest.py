"""Service fixtures on the two tiny bundles of tests/conftest.py (text and numeric).

The bundles come from the real pipeline (`training.train` + `training.export`), once per
session, so these tests check the service against the contract as the exporter writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from contract.bundle import Bundle, load_bundle
from service.config import Settings
from contract.preprocess import unpatchify


@dataclass(frozen=True)
class BundleCase:
    """A bundle plus what tests need to check it: the training split its bank was built from."""

    path: Path
    bundle: Bundle
    train_inputs: list  # service-ready inputs of the training split, row i = bank id i
    model_inputs: np.ndarray  # the same rows as the model sees them: ids (N, n) or patches (N, n, f)
    model_mask: np.ndarray  # (N, n)

    def settings(self, **overrides) -> Settings:
        # device=cpu: "auto" would first try CUDA, and ONNX Runtime logs its failure loudly here
        return Settings(**{"bundle": self.path, "device": "cpu", **overrides})

    def reference(self, rows: list[int]) -> dict[str, np.ndarray]:
        """Outputs of the ONNX model for training rows, run directly with ONNX Runtime, one row at a time."""
        session = ort.InferenceSession(str(self.path / "encoder.onnx"), providers=["CPUExecutionProvider"])
        names = [spec.name for spec in self.bundle.manifest.onnx_inputs]
        outputs: dict[str, list] = {"embedding": [], "roles": [], "composition": []}
        for row in rows:
            n = int(self.model_mask[row].sum())
            feeds = dict(zip(names, (self.model_inputs[row : row + 1, :n], self.model_mask[row : row + 1, :n].astype(np.int64))))
            for name, value in zip(outputs, session.run(list(outputs), feeds)):
                outputs[name].append(value[0])
        return {name: values for name, values in outputs.items()}


def _case(run_dir: Path, bundle_dir: Path) -> BundleCase:
    from training.checkpoint import load_run_dataset

    bundle = load_bundle(bundle_dir)
    train_split = load_run_dataset(run_dir).train
    spec = bundle.manifest.input
    if spec.modality == "text":
        train_inputs = list(train_split.texts)
        model_inputs = np.asarray(train_split.inputs, dtype=np.int64)
    else:
        model_inputs = np.asarray(train_split.inputs, dtype=np.float32)
        preprocess = spec.preprocess
        images = unpatchify(model_inputs, preprocess["image_shape"], preprocess["patch_shape"])
        train_inputs = [image.reshape(-1).tolist() for image in images]  # flat pixel lists, as clients send
    return BundleCase(bundle_dir, bundle, train_inputs, model_inputs, np.asarray(train_split.mask))


@pytest.fixture(scope="session")
def text_case(text_run, text_bundle) -> BundleCase:
    return _case(text_run, text_bundle)


@pytest.fixture(scope="session")
def numeric_case(numeric_run, numeric_bundle) -> BundleCase:
    return _case(numeric_run, numeric_bundle)


@pytest.fixture(params=["text", "numeric"])
def case(request) -> BundleCase:
    return request.getfixturevalue(f"{request.param}_case")


@contextlib.asynccontextmanager
async def serving(app) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, and an async client on it (real concurrency, one loop)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def run_async(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(scope="session")
def text_client(text_case):
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(text_case.settings(), bundle=text_case.bundle)) as client:
        yield client


@pytest.fixture(scope="session")
def numeric_client(numeric_case):
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(numeric_case.settings(), bundle=numeric_case.bundle)) as client:
        yield client


@pytest.fixture(params=["text", "numeric"])
def client_case(request):
    """(client, case) for each modality."""
    return request.getfixturevalue(f"{request.param}_client"), request.getfixturevalue(f"{request.param}_case")
