"""What the deployment files expect of the running app: health paths, the metrics endpoint, metric names.

The app runs on a tiny bundle (conftest.py); its routes and its /metrics are the truth the
Dockerfile, compose, Prometheus, Grafana and the Kubernetes manifests are checked against.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
METRIC_NAME = re.compile(r"\batom_[a-zA-Z0-9_]+")
# The metrics DESIGN section 5 and the dashboard brief name, by type.
REQUIRED_METRICS = {
    "atom_requests_total": "counter",
    "atom_request_duration_seconds": "histogram",
    "atom_failures_total": "counter",
    "atom_queue_items": "gauge",
    "atom_queue_wait_seconds": "histogram",
    "atom_batch_items": "histogram",
    "atom_batch_padded_components": "histogram",
    "atom_inference_seconds": "histogram",
    "atom_neighbor_search_seconds": "histogram",
    "atom_items_atomized_total": "counter",
    "atom_model_info": "gauge",
    "atom_bank_atoms": "gauge",
}


@pytest.fixture(scope="module")
def exported(app_client: TestClient) -> dict[str, str]:
    """PromQL-usable name -> metric type, read from the running app's /metrics.

    A histogram `h` is queried as h_bucket, h_sum, h_count (never `h`); a counter `c` as c_total.
    """
    response = app_client.get("/metrics")
    assert response.status_code == 200
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        if not family.name.startswith("atom_"):
            continue
        if family.type == "histogram":
            names.update({f"{family.name}{suffix}": "histogram" for suffix in ("_bucket", "_sum", "_count")})
        elif family.type == "counter":
            names[f"{family.name}_total"] = "counter"
        else:
            names[family.name] = family.type
    return names


def histogram_base(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/atomizer.json").read_text())
    expressions = [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        expressions.append((f"variable {variable['name']}", variable["query"]["query"]))
    return expressions


def served_by_app(path: str) -> bool:
    """Whether GET path reaches a route (asked of the app itself: routing is FastAPI's business).

    No lifespan: routes exist before anything is loaded, so /readyz may answer 503, never 404.
    """
    client = TestClient(create_app(Settings(bundle=Path("unused"))))
    return client.get(path).status_code not in (404, 405)


def test_exported_metrics_have_the_agreed_names_and_types(exported) -> None:
    for name, kind in REQUIRED_METRICS.items():
        key = f"{name}_bucket" if kind == "histogram" else name
        assert exported.get(key) == kind, f"{name} ({kind}) missing or of another type"


def test_every_dashboard_metric_is_exported(exported) -> None:
    for title, expr in dashboard_expressions():
        names = METRIC_NAME.findall(expr)
        assert names, f"{title}: no atom_* metric in {expr!r}"
        for name in names:
            assert name in exported, f"panel {title!r} queries {name}, which the service does not export"
            if name.endswith("_bucket"):
                assert "histogram_quantile" in expr, f"{title}: {name} outside histogram_quantile"


def test_dashboard_shows_what_operators_need() -> None:
    queried = {histogram_base(name) for _, expr in dashboard_expressions() for name in METRIC_NAME.findall(expr)}
    for needed in (
        "atom_requests_total",  # request rate
        "atom_failures_total",  # errors by reason
        "atom_request_duration_seconds",  # p50 / p99 latency
        "atom_batch_items",  # batch size
        "atom_queue_items",  # queue size
        "atom_inference_seconds",
        "atom_neighbor_search_seconds",
    ):
        assert needed in queried, f"no dashboard panel shows {needed}"
    exprs = " ".join(expr for _, expr in dashboard_expressions())
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert "sum by (reason)" in exprs


def test_autoscaling_metric_is_an_exported_gauge(exported, k8s) -> None:
    metric = k8s["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert exported.get(metric) == "gauge", "the HPA averages a gauge per pod"
    values = yaml.safe_load((ROOT / "deploy/k8s/prometheus-adapter-values.yaml").read_text())
    for rule in values["rules"]["custom"]:
        for name in METRIC_NAME.findall(rule["seriesQuery"] + rule["metricsQuery"]):
            assert name in exported, f"the adapter rule queries {name}, which is not exported"


def test_health_and_metrics_paths_exist_in_the_app(k8s, compose, prometheus_config) -> None:
    assert not served_by_app("/no-such-path"), "the probe below must be able to fail"
    container = k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    probes = {container[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")}
    scrapes = {job.get("metrics_path", "/metrics") for job in prometheus_config["scrape_configs"]}
    scrapes.add(k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    scrapes |= {endpoint["path"] for endpoint in k8s["ServiceMonitor"]["spec"]["endpoints"]}
    healthcheck = re.search(r"/\w+z\b", (ROOT / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1]).group(0)
    for path in probes | scrapes | {healthcheck, "/docs"}:
        assert served_by_app(path), f"{path} is used by the deployment but the app has no such route"


def test_readiness_waits_for_the_bundle_and_liveness_does_not(tiny_bundle, app_client) -> None:
    # Without the lifespan (nothing loaded) the app is alive but not ready: what the image's
    # HEALTHCHECK and the readiness probe rely on to hold traffic back.
    cold = TestClient(create_app(Settings(bundle=tiny_bundle, device="cpu")))
    assert cold.get("/healthz").status_code == 200
    assert cold.get("/readyz").status_code == 503
    assert app_client.get("/readyz").status_code == 200


def test_metrics_need_no_api_key(tiny_bundle) -> None:
    # Prometheus scrapes without credentials; an API key must protect /v1 only.
    app = create_app(Settings(bundle=tiny_bundle, device="cpu", api_key="secret"))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/model").status_code == 401
