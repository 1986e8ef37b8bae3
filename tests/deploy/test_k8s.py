"""deploy/k8s: the manifests agree with each other and with the service's settings."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from service.config import Settings
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]


def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def named_port(k8s: dict[str, dict[str, Any]], name: str) -> int:
    (port,) = [p["containerPort"] for p in container(k8s)["ports"] if p["name"] == name]
    return port


def test_kustomize_builds_the_base() -> None:
    # CI gets Debian's kubernetes-client (kubectl 1.20, kustomize v2.0.3) from `make tools`; the
    # base is kept in a form that it and a current kustomize (v5) build alike.
    kubectl = require_tool("kubectl", "Debian package kubernetes-client; `make tools` installs it as root")
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy/k8s")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Service"]


def test_make_test_installs_kubectl() -> None:
    """`make test` runs `tools`, which installs Debian's kubectl when missing (CI: root with apt-get)."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\btools\b", makefile, re.MULTILINE)
    (recipe,) = re.findall(r"^tools:\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert "command -v kubectl" in recipe and "install -y -q --no-install-recommends kubernetes-client" in recipe


def test_configmap_settings_validate(k8s, check_atom_env) -> None:
    settings = check_atom_env(k8s["ConfigMap"]["data"], "configmap.yaml")
    assert settings.host == "0.0.0.0" and settings.bundle == ("/models/bundle",)
    assert settings.device == "cuda"


def test_deployment_reads_the_configmap_and_real_settings(k8s) -> None:
    spec = container(k8s)
    (source,) = spec["envFrom"]
    assert "ATOM_REQUEST_TIMEOUT_MS" in k8s["ConfigMap"]["data"], "explicit: the grace period depends on it"
    assert source["configMapRef"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    for variable in spec["env"]:
        if variable["name"].startswith("ATOM_"):
            assert variable["name"][5:].lower() in Settings.model_fields, variable["name"]
    api_key = next(v for v in spec["env"] if v["name"] == "ATOM_API_KEY")
    assert api_key["valueFrom"]["secretKeyRef"]["optional"] is True, "the key comes from a Secret, optional"


def test_ports_agree_from_settings_to_service(k8s) -> None:
    port = int(k8s["ConfigMap"]["data"]["ATOM_PORT"])
    assert named_port(k8s, "http") == port
    (service_port,) = k8s["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == "http" and service_port["port"] == port
    annotations = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_selectors_match_the_pods(k8s) -> None:
    pod_labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        k8s["Deployment"]["spec"]["selector"]["matchLabels"],
        k8s["Service"]["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items(), selector
    # The ServiceMonitor selects the Service, and scrapes its named port.
    monitor = k8s["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= k8s["Service"]["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == [k8s["Service"]["spec"]["ports"][0]["name"]]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_one_gpu_per_pod_with_cpu_requests(k8s) -> None:
    resources = container(k8s)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    assert "cpu" in resources["requests"], "the HPA's CPU fallback is relative to the CPU request"
    assert "memory" in resources["limits"]


def test_probes_and_graceful_termination(k8s) -> None:
    spec = container(k8s)
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"
    command = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    # The grace period covers the preStop sleep plus uvicorn's drain (request_timeout + 1 s,
    # service/cli.py).
    request_timeout_s = float(k8s["ConfigMap"]["data"]["ATOM_REQUEST_TIMEOUT_MS"]) / 1000
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + request_timeout_s + 1


def test_pod_runs_as_the_image_user_on_a_read_only_root(k8s) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # USER in the Dockerfile
    spec = container(k8s)
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in spec["volumeMounts"]), "a writable /tmp"


def test_hpa_scales_the_deployment_on_queue_size_with_cpu_fallback(k8s) -> None:
    hpa = k8s["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", k8s["Deployment"]["metadata"]["name"])
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "atom_queue_items"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_prometheus_adapter_serves_the_hpa_metric(k8s) -> None:
    values = yaml.safe_load((ROOT / "deploy/k8s/prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa_metric = k8s["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rule["name"]["as"] == hpa_metric
    assert rule["seriesQuery"].startswith(hpa_metric + "{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
