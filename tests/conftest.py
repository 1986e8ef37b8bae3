"""Session-wide fixtures: the tiny real training runs and bundles, built once per test session.

Every test area (training, service, deploy) uses these same four artifacts: one text run
(`synthetic`) and one numeric run (`digits`), each exported once as a bundle. Building them
takes most of a test session's setup time, so nothing else trains a bundle of its own.

Under CI (CI=true) every collected test must run: a test whose tool or package is missing fails
instead of skipping (`require_tool`, `require_module`, and the report hook below for the rest).
`make test` installs what it can (the Makefile's `browser` and `tools` targets).
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"true", "1", "yes"}

# Skips that stay skips under CI: they depend on the machine's hardware or platform, and CI's
# (a Linux machine without a GPU) never takes them. Any other skip under CI is a failure.
SKIPS_ALLOWED_IN_CI = (
    "CUDA works on this machine",  # tests/service/test_runtime.py: the CPU fallback, on a GPU machine
    "no SIGHUP on this platform",  # tests/service/test_bank_serving.py: not Linux
)


def _missing(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{message}; under CI=true every test must run, so CI must install it "
                    "(the Makefile's setup, browser and tools targets)", pytrace=False)
    pytest.skip(message)


def require_tool(name: str, hint: str = "") -> str:
    """The path of the program `name`; without it the test skips, or fails under CI=true."""
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} not installed" + (f" ({hint})" if hint else ""))
    return path


def require_module(name: str, hint: str = "") -> ModuleType:
    """The Python module `name`; without it the test skips, or fails under CI=true."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        _missing(f"{name} not importable: {error}" + (f" ({hint})" if hint else ""))


def _fail_skip_in_ci(report) -> None:
    """Under CI=true a skip not in SKIPS_ALLOWED_IN_CI becomes a failure (importorskip, skipif, ...)."""
    if not (IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not any(allowed in reason for allowed in SKIPS_ALLOWED_IN_CI):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _fail_skip_in_ci((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _fail_skip_in_ci((yield).get_result())  # a whole module skipped


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
