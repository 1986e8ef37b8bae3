"""The offline parts of the image check (the live run is `bash deploy/check_image.sh`).

The OCI runtime wrapper is run for real with a stand-in for runc that records what it was given;
real runc runs behind it in the live check.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "deploy" / "tools" / "oci-runtime-no-rlimits"


@pytest.fixture(scope="module")
def check():
    sys.path.insert(0, str(ROOT / "deploy"))  # check_image imports check_prometheus beside it
    try:
        spec = importlib.util.spec_from_file_location("check_image", ROOT / "deploy" / "check_image.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["check_image"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    yield module
    sys.modules.pop("check_image", None)


def limited_spec() -> dict:
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["python", "-m", "service"], "user": {"uid": 10001},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]},
        "linux": {"namespaces": [{"type": "pid"}], "resources": {"pids": {"limit": 2048}},
                  "cgroupsPath": "machine.slice:libpod:abc"},
    }


def run_wrapper(tmp_path: Path, *args: str) -> list[str]:
    """Run the wrapper with RUNC = a script that records its arguments; returns them."""
    recorded = tmp_path / "runc-args"
    fake_runc = tmp_path / "runc"
    fake_runc.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {recorded}\n')
    fake_runc.chmod(0o755)
    result = subprocess.run([str(WRAPPER), *args], capture_output=True, text=True, timeout=30,
                            env={"RUNC": str(fake_runc), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return recorded.read_text().splitlines()


@pytest.mark.parametrize("style", ["--bundle", "--bundle=", "-b"])
def test_wrapper_strips_limits_from_the_bundle_config(tmp_path: Path, style: str) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(limited_spec()))
    given = [f"{style}{bundle}"] if style.endswith("=") else [style, str(bundle)]
    args = ["--root", "/run/runc", "create", *given, "--pid-file", "/run/x.pid", "container-id"]

    assert run_wrapper(tmp_path, *args) == args  # handed over unchanged
    config = json.loads((bundle / "config.json").read_text())
    assert "rlimits" not in config["process"]
    assert "resources" not in config["linux"] and "cgroupsPath" not in config["linux"]
    # Everything else is left as podman wrote it.
    assert config["process"]["args"] == ["python", "-m", "service"]
    assert config["process"]["user"] == {"uid": 10001}
    assert config["linux"]["namespaces"] == [{"type": "pid"}]


def test_wrapper_strips_limits_from_an_exec_process_file(tmp_path: Path) -> None:
    process = tmp_path / "exec-process.json"
    process.write_text(json.dumps(limited_spec()["process"]))
    args = ["exec", "--process", str(process), "--detach", "container-id"]

    assert run_wrapper(tmp_path, *args) == args
    assert json.loads(process.read_text()) == {"args": ["python", "-m", "service"], "user": {"uid": 10001}}


def test_wrapper_passes_other_commands_through(tmp_path: Path) -> None:
    args = ["--root", "/run/runc", "kill", "container-id", "15"]
    assert run_wrapper(tmp_path, *args) == args


def test_grace_period_is_the_documented_one(check, compose) -> None:
    """The check stops within what users are told to allow: compose, the Dockerfile, the README."""
    assert compose["services"]["atomizer"]["stop_grace_period"] == f"{check.GRACE_S}s"
    assert f"docker stop -t {check.GRACE_S}" in (ROOT / "Dockerfile").read_text()
    assert f"docker stop -t {check.GRACE_S}" in (ROOT / "deploy" / "README.md").read_text()
    # Requests held in the batcher must be answered well inside the grace period.
    assert check.MAX_WAIT_MS / 1000 < check.GRACE_S / 4


def test_pip_trust_is_a_build_time_mount_only(check, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways, whatever this machine has: the test makes its own CA file, then takes it away."""
    assert check.HOST_CA_BUNDLE == Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's bundle
    ca_file = tmp_path / "ca-certificates.crt"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(check, "HOST_CA_BUNDLE", ca_file)
    work = tmp_path / "work"
    work.mkdir()

    args = check.pip_trust(work)
    volumes = [args[i + 1] for i, arg in enumerate(args) if arg == "--volume"]
    assert len(args) == 2 * len(volumes), "volumes only"
    assert volumes == [f"{ca_file}:/etc/pip-ca.crt:ro", f"{work / 'pip.conf'}:/etc/pip.conf:ro"]
    assert (work / "pip.conf").read_text() == "[global]\ncert = /etc/pip-ca.crt\n"
    # Build-time only: the image's own files never name the CA or the pip.conf.
    assert "pip-ca" not in (ROOT / "Dockerfile").read_text()

    ca_file.unlink()
    (work / "pip.conf").unlink()
    assert check.pip_trust(work) == [] and not (work / "pip.conf").exists()


def test_build_arguments_exist_in_the_dockerfile(check) -> None:
    """The check builds through build arguments the Dockerfile declares (a typo would be ignored)."""
    declared = set(re.findall(r"^ARG (\w+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE))
    source = (ROOT / "deploy" / "check_image.py").read_text()
    used = set(re.findall(r'"--build-arg", f"(\w+)=', source))
    assert used == {"CUDA_RUNTIME_IMAGE", "PYTHON_BASE_IMAGE", "PYTHON_VERSION"}
    assert used <= declared


def test_ci_runs_the_image_check() -> None:
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert steps == ["make check-prometheus", "make check-image", "make test"]
    assert re.search(r"^check-image: setup\n\t.*deploy/check_image\.sh", (ROOT / "Makefile").read_text(), re.MULTILINE)
