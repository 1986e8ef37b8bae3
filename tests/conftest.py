"""Session-wide fixtures: the tiny real training runs and bundles, built once per test session.

Every test area (training, service, deploy) uses these same four artifacts: one text run
(`synthetic`) and one numeric run (`digits`), each exported once as a bundle. Building them
takes most of a test session's setup time, so nothing else trains a bundle of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_MODEL = {"d_model": 32, "n_layers": 1, "embedding_dim": 16, "n_heads": 2}


def tiny_options(dataset: str, out: Path, **changes):
    from training.train import TrainOptions

    values = dict(
        dataset=dataset, out=out, epochs=2, limit=400, seed=0, batch_size=32, progress=False,
        device="cpu", model_overrides=dict(TINY_MODEL), log_every=2,
    )
    values.update(changes)
    return TrainOptions(**values)


@pytest.fixture(scope="session")
def text_run(tmp_path_factory) -> Path:
    from training.train import train

    return train(tiny_options("synthetic", tmp_path_factory.mktemp("runs") / "synthetic"))


@pytest.fixture(scope="session")
def numeric_run(tmp_path_factory) -> Path:
    from training.train import train

    return train(tiny_options("digits", tmp_path_factory.mktemp("runs") / "digits"))


@pytest.fixture(scope="session")
def text_bundle(text_run, tmp_path_factory) -> Path:
    """The text bundle, with its training report (tests read it; the service ignores it)."""
    from training.export import export_bundle

    return export_bundle(text_run, tmp_path_factory.mktemp("bundles") / "synthetic")


@pytest.fixture(scope="session")
def numeric_bundle(numeric_run, tmp_path_factory) -> Path:
    from training.export import export_bundle

    return export_bundle(numeric_run, tmp_path_factory.mktemp("bundles") / "digits", report=False)
