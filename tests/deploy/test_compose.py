"""docker-compose.yml, its CPU override, and the Prometheus and Grafana files they mount."""

from __future__ import annotations

import json
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

from service.config import Settings
from tests.conftest import require_module, require_tool

ROOT = Path(__file__).resolve().parents[2]

SERVICE = "atomizer"


def env_dict(environment: Any) -> dict[str, str]:
    if isinstance(environment, list):  # the KEY=VALUE list form
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in (environment or {}).items()}


def container_port(service: dict[str, Any]) -> int:
    (mapping,) = service["ports"]
    return int(str(mapping).rsplit(":", 1)[1].split("/")[0])


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """host path (relative to the repo) -> container path, for ./ bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[source[2:]] = target
    return mounts


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy", {})
    return deploy.get("resources", {}).get("reservations", {}).get("devices", [])


def test_compose_files_follow_the_compose_schema(compose, compose_cpu, compose_two) -> None:
    check_jsonschema = require_module("check_jsonschema", "the Compose schema ships with check-jsonschema")
    import jsonschema  # a dependency of check-jsonschema

    schema = json.loads(files(check_jsonschema.__name__).joinpath("builtin_schemas/vendor/compose-spec.json").read_text())
    jsonschema.validate(compose, schema)
    jsonschema.validate(compose_cpu, schema)
    jsonschema.validate(compose_two, schema)


def test_service_port_health_and_settings(compose, check_atom_env) -> None:
    service = compose["services"][SERVICE]
    env = env_dict(service["environment"])
    settings = check_atom_env(env, f"docker-compose.yml {SERVICE}")
    assert container_port(service) == settings.port
    assert str(service["ports"][0]).startswith("127.0.0.1:"), "published on the loopback address only"
    assert settings.bundle == ("/models/bundle",)
    assert settings.host == "0.0.0.0", "inside the container the service must listen beyond loopback"
    assert settings.device == "cuda"


def test_stop_grace_period_covers_the_drain(compose, check_atom_env) -> None:
    service = compose["services"][SERVICE]
    settings = check_atom_env(env_dict(service["environment"]), "docker-compose.yml")
    grace_s = int(service["stop_grace_period"].removesuffix("s"))
    # service/cli.py gives uvicorn request_timeout + 1 s to finish the requests in flight.
    assert grace_s > settings.request_timeout_s + 1


def test_service_reserves_one_gpu(compose) -> None:
    (device,) = gpu_devices(compose["services"][SERVICE])
    assert device["driver"] == "nvidia" and device["count"] == 1 and device["capabilities"] == ["gpu"]


def test_trainer_builds_the_bundle_before_the_service_starts(compose) -> None:
    services = compose["services"]
    trainer, service = services["trainer"], services[SERVICE]
    assert trainer["build"]["target"] == "train" and service["build"]["target"] == "serve"
    assert service["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert trainer["entrypoint"] == ["build-bundle"] and trainer["command"] == ["/models/bundle"]
    assert trainer.get("restart") == "no", "one-shot: a restarted trainer never 'completes'"
    # The same named volume: written by the trainer, read-only for the service.
    assert "models:/models" in trainer["volumes"]
    assert "models:/models:ro" in service["volumes"]
    assert "models" in compose["volumes"]


def test_cpu_override_drops_every_gpu_reservation(compose, compose_cpu) -> None:
    for name, service in compose_cpu["services"].items():
        assert not gpu_devices(service), f"{name} still reserves a GPU in the CPU variant"
    assert env_dict(compose_cpu["services"][SERVICE]["environment"])["ATOM_DEVICE"] == "cpu"
    # The override only changes device settings: same images, ports and volumes.
    assert compose_cpu["services"][SERVICE]["volumes"] == compose["services"][SERVICE]["volumes"]


def test_cpu_override_settings_validate(compose_cpu, check_atom_env) -> None:
    settings = check_atom_env(env_dict(compose_cpu["services"][SERVICE]["environment"]), "docker-compose.cpu.yml")
    assert settings.device == "cpu"


def test_bind_mounted_files_exist(compose) -> None:
    for name, service in compose["services"].items():
        for source in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts ./{source}, which does not exist"


def test_prometheus_scrapes_the_compose_service(compose, prometheus_config) -> None:
    service = compose["services"][SERVICE]
    (job,) = [job for job in prometheus_config["scrape_configs"] if job["job_name"] == SERVICE]
    (static,) = job["static_configs"]
    assert static["targets"] == [f"{SERVICE}:{container_port(service)}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    mounts = bind_mounts(compose["services"]["prometheus"])
    assert mounts["deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


def test_prometheus_config_passes_promtool() -> None:
    promtool = require_tool("promtool", "Debian package prometheus; `make check-prometheus` installs it as root")
    result = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_compose(compose) -> None:
    import yaml

    grafana = compose["services"]["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"

    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    prometheus_port = int(compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1])
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{prometheus_port}"

    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/atomizer.yml").read_text())
    (provider,) = providers["providers"]
    assert mounts["deploy/grafana/dashboards"] == provider["options"]["path"]

    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/atomizer.json").read_text())
    panel_sources = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    panel_sources |= {t["datasource"]["uid"] for panel in dashboard["panels"] for t in panel["targets"]}
    assert panel_sources == {source["uid"]}, "every panel uses the provisioned datasource"
    home = env_dict(grafana["environment"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent.as_posix() == provider["options"]["path"]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()


def test_settings_default_port_is_the_deployed_port(compose) -> None:
    assert container_port(compose["services"][SERVICE]) == Settings.model_fields["port"].default


def makefile_variable(name: str) -> str:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(f"{name} ?="):
            return line.split("?=", 1)[1].strip()
    raise AssertionError(f"no {name} in the Makefile")


def test_the_trainer_builds_the_default_bundle_as_make_bundle_does(compose) -> None:
    env = env_dict(compose["services"]["trainer"]["environment"])
    flags = f"--epochs {env['TRAIN_EPOCHS']} {env['TRAIN_ARGS']}".split()
    make = makefile_variable("DEFAULT_TRAIN").split()
    assert env["TRAIN_DATASET"] == "tweets" and env["TRAIN_BACKBONE"] == "minilm"
    recipe = (ROOT / "Makefile").read_text().split("$(BUNDLE)/manifest.json: | $(STAMP)")[1].split("\n\n")[0]
    assert "--backbone minilm --train-layers 0" in recipe and "--int8 --fp16" in recipe
    assert dict(zip(make[::2], make[1::2])).items() <= dict(zip(flags[::2], flags[1::2])).items()  # same values
    assert "--train-layers 0" in env["TRAIN_ARGS"] and env["EXPORT_ARGS"].split() == ["--int8", "--fp16"]


def test_the_two_model_override_serves_both_bundles(compose_two, check_atom_env) -> None:
    services = compose_two["services"]
    settings = check_atom_env(env_dict(services[SERVICE]["environment"]), "two-models override")
    refs = settings.bundle_refs()
    assert [(str(r.path), r.name) for r in refs] == [("/models/bundle", None), ("/models/small", "small")]
    small = services["trainer-small"]
    assert small["command"] == ["/models/small"] and "models:/models" in small["volumes"]
    assert services[SERVICE]["depends_on"]["trainer-small"]["condition"] == "service_completed_successfully"
    assert services[SERVICE]["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
