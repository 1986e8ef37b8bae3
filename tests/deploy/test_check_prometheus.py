"""The offline parts of deploy/check_prometheus.py (the live run is `bash deploy/check_prometheus.sh`)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("check_prometheus", ROOT / "deploy" / "check_prometheus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_local_config_changes_only_the_target_and_interval(check, prometheus_config) -> None:
    expected = copy.deepcopy(prometheus_config)
    expected["global"]["scrape_interval"] = check.SCRAPE_INTERVAL
    (job,) = [job for job in expected["scrape_configs"] if job["job_name"] == check.JOB]
    for static in job["static_configs"]:
        static["targets"] = ["127.0.0.1:18000"]
    assert check.local_scrape_config("127.0.0.1:18000") == expected


def test_dashboard_queries_have_every_variable_filled_in(check) -> None:
    queries = check.dashboard_queries()
    assert len(queries) >= 14
    for title, expr in queries:
        assert "$" not in expr, f"{title}: {expr}"


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ({"modality": "text", "max_components": 32, "component_dim": 1}, None),
        ({"modality": "numeric", "max_components": 64, "component_dim": 1}, (16,)),
        ({"modality": "numeric", "max_components": 10, "component_dim": 3}, (10, 3)),
        (
            {"modality": "numeric", "max_components": 16, "component_dim": 4,
             "preprocess": {"kind": "patches", "image_shape": [8, 8], "patch_shape": [2, 2]}},
            (8, 8),
        ),
    ],
)
def test_example_inputs_fit_the_modality(check, spec, shape) -> None:
    inputs = check.example_inputs({"input": spec})
    assert len(inputs) == 3
    for value in inputs:
        if shape is None:
            assert isinstance(value, str) and value
        else:
            dims = []
            while isinstance(value, list):
                dims.append(len(value))
                value = value[0]
            assert tuple(dims) == shape
