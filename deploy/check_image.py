"""Live check: the serving images are built from the Dockerfile and run as a user would run them.

    python deploy/check_image.py [--bundle DIR] [--train] [--deadline-s 1500]

(deploy/check_image.sh installs podman, runc and debootstrap first, then runs this.)

No public image registry is reachable from CI, so the CUDA and Ubuntu base images the Dockerfile
names by default cannot be pulled. The check builds through the Dockerfile's base-image build
arguments instead:

1. A Debian base image made from Debian's own packages (debootstrap, then `podman import`),
   from the mirror apt is configured with; kept as localhost/debian:SUITE for later runs.
2. `podman build --target serve` and `--target serve-bundled` (the bundle from the named build
   context `bundle`, a tiny one trained with `atomize train` + `atomize export`), with
   CUDA_RUNTIME_IMAGE, PYTHON_BASE_IMAGE and PYTHON_VERSION pointing at that base. Build time
   and image size are printed.
3. Each image run as a user runs it (the bundle mounted at /models/bundle for `serve`, nothing
   mounted for `serve-bundled`), published on 127.0.0.1: /readyz, the image's own HEALTHCHECK,
   uid 10001 and no torch inside, one /v1/atomize and one /v1/embeddings, then `podman stop`
   (SIGTERM) under requests in flight: all answered, exit status 0, within the grace period.
   Then the serving image with two models (ATOM_BUNDLE=/models/bundle,second=/models/second):
   both listed by /v1/models, both answering /v1/atomize.
4. `podman-compose config` merges docker-compose.yml (and the CPU override) as a real compose
   implementation does.
5. Only with --train (not in CI: its torch from PyPI is the CUDA build, about 6 GB of image):
   `--target train`, then the image's `build-bundle` trains and exports a small bundle into a
   mounted folder as docker compose's trainer does, and the serving image serves that bundle.

The serving images stay tagged (localhost/atomizer:check, :check-bundled) so a rerun reuses
their layers; every container the check starts is removed on the way out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The helpers of the Prometheus check (same folder, on sys.path when run as a script).
from check_prometheus import CheckFailed, example_inputs, free_port, http, make_tiny_bundle, wait_until

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_WRAPPER = ROOT / "deploy" / "tools" / "oci-runtime-no-rlimits"
SUITE = "trixie"
PYTHON_VERSION = "3.13"  # trixie's python3; the Dockerfile's default (3.12) is Ubuntu 24.04's
IMAGE = "localhost/atomizer:check"
BUNDLED_IMAGE = "localhost/atomizer:check-bundled"
TRAIN_IMAGE = "localhost/atomizer-train:check"
# The host's CA bundle (Debian's ca-certificates), handed to pip for the build when present.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What deploy/README.md and the compose file tell users to allow for a stop (`docker stop -t 40`,
# stop_grace_period); uvicorn drains for at most the request deadline + 1 s inside it.
GRACE_S = 40
# Requests held in the batcher while SIGTERM arrives: ATOM_MAX_WAIT_MS makes each one wait
# that long for its batch to fill, so they are certainly in flight when the stop begins.
IN_FLIGHT = 8
MAX_WAIT_MS = 1500


def say(message: str) -> None:
    print(f"check_image: {message}", flush=True)


def run(command: list[str], timeout_s: float, what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command; its output is shown only when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=max(1.0, timeout_s), **kwargs)
    if result.returncode != 0:
        raise CheckFailed(f"{what} failed (status {result.returncode}): {' '.join(command[:6])} ...\n"
                          f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def left(deadline: float) -> float:
    return deadline - time.monotonic()


@dataclass(frozen=True)
class Podman:
    """How to call podman on this host: the runtime wrapper and chroot builds only where needed."""

    runtime: Path | None

    def __call__(self, *args: str) -> list[str]:
        return ["podman", *(["--runtime", str(self.runtime)] if self.runtime else []), *args]

    @property
    def isolation(self) -> str:
        # chroot builds run RUN steps without an OCI runtime, so they are unaffected too.
        return "chroot" if self.runtime else "oci"


def debian_mirror() -> str:
    """The Debian archive apt is configured with (the check uses no other network source)."""
    result = run(["apt-get", "indextargets", "--format", "$(REPO_URI)", "Label: Debian", "Origin: Debian"],
                 30, "apt-get indextargets")
    mirrors = sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})
    if not mirrors:
        raise CheckFailed("apt has no Debian archive configured (see /etc/apt/sources.list*)")
    return mirrors[0]


def ensure_base_image(base: str, deadline: float) -> None:
    """localhost/debian:SUITE from Debian's packages, unless it exists already."""
    if subprocess.run(["podman", "image", "exists", base], timeout=60).returncode == 0:
        say(f"base image {base} exists")
        return
    mirror = debian_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="atom-rootfs-") as rootfs:
        run(["debootstrap", "--variant=minbase", SUITE, rootfs, mirror], left(deadline), "debootstrap")
        # The downloaded .debs and package lists are leftovers, not part of a base image (Docker's
        # Debian images ship without them too; every Dockerfile RUN starts with apt-get update).
        apt = Path(rootfs, "var")
        for leftover in (*(apt / "cache/apt/archives").glob("*.deb"), *(apt / "lib/apt/lists").iterdir()):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        try:
            run(["podman", "import", "-q", "-", base], left(deadline), "podman import", stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait(timeout=60)
    say(f"base image {base} made from {mirror} ({SUITE}) in {time.monotonic() - started:.0f} s")


def choose_runtime(base: str, deadline: float) -> Podman:
    """Plain podman where containers can start; the rlimit-free runtime wrapper where they cannot."""
    probe = subprocess.run(["podman", "run", "--rm", base, "true"], capture_output=True, text=True,
                           timeout=left(deadline))
    if probe.returncode == 0:
        say("containers start with podman's own runtime")
        return Podman(runtime=None)
    if "rlimit" not in probe.stderr:
        raise CheckFailed(f"podman cannot start a container: {probe.stderr[-1500:]}")
    say(f"this host forbids setrlimit in containers: running them through {RUNTIME_WRAPPER.relative_to(ROOT)}")
    podman = Podman(runtime=RUNTIME_WRAPPER)
    run(podman("run", "--rm", base, "true"), left(deadline), "podman run through the runtime wrapper")
    return podman


def build(podman: Podman, target: str, tag: str, base: str, workdir: Path, deadline: float,
          extra: tuple[str, ...] = ()) -> None:
    command = [
        *podman("build"), "--isolation", podman.isolation,
        # OCI images drop HEALTHCHECK; the Docker format keeps it (what `docker build` makes).
        "--format", "docker",
        "--target", target, "--tag", tag,
        "--build-arg", f"CUDA_RUNTIME_IMAGE={base}",
        "--build-arg", f"PYTHON_BASE_IMAGE={base}",
        "--build-arg", f"PYTHON_VERSION={PYTHON_VERSION}",
        *pip_trust(workdir), *extra, str(ROOT),
    ]
    started = time.monotonic()
    run(command, left(deadline), f"podman build --target {target}")
    built_s = time.monotonic() - started
    size = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", tag], 30, "podman image inspect").stdout)
    say(f"built {tag} (target {target}) in {built_s:.0f} s: {size / 1e6:.0f} MB")


def pip_trust(workdir: Path) -> list[str]:
    """Build-time volumes that make pip trust the host's CA bundle (TLS may be re-signed on CI).

    A pip.conf mounted for the RUN steps only: nothing of it reaches the image or the Dockerfile.
    """
    if not HOST_CA_BUNDLE.is_file():
        return []
    conf = workdir / "pip.conf"
    conf.write_text("[global]\ncert = /etc/pip-ca.crt\n")
    return ["--volume", f"{HOST_CA_BUNDLE}:/etc/pip-ca.crt:ro", "--volume", f"{conf}:/etc/pip.conf:ro"]


def inspect(podman: Podman, container: str, template: str) -> str:
    return run(podman("inspect", "--format", template, container), 30, "podman inspect").stdout.strip()


@contextmanager
def container(podman: Podman, image: str, name: str, port: int, bundle: Path | None,
              extra: tuple[str, ...] = ()) -> Iterator[str]:
    """A detached container published on 127.0.0.1:port; its log is shown if the check fails."""
    command = podman(
        "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000",
        # The image's HEALTHCHECK is run explicitly below; podman's periodic timer needs systemd.
        "--health-interval", "disable",
        "--env", f"ATOM_MAX_WAIT_MS={MAX_WAIT_MS}",
        *(["--volume", f"{bundle}:/models/bundle:ro"] if bundle else []),
        *extra,
        image,
    )
    run(command, 120, f"podman run {image}")
    try:
        yield name
    except BaseException:
        logs = subprocess.run(podman("logs", name), capture_output=True, text=True, timeout=30)
        lines = [line for line in (logs.stdout + logs.stderr).splitlines() if ' HTTP/1.1" ' not in line]
        say(f"--- last lines of {name}'s log ---\n" + "\n".join(lines[-25:]))
        raise
    finally:
        subprocess.run(podman("rm", "--force", "--time", "0", name), capture_output=True, timeout=60)


def in_container(podman: Podman, name: str, code: str, what: str) -> str:
    return run(podman("exec", name, "python", "-c", code), 60, what).stdout.strip()


# Run inside the container: the uid of every process, and whether any torch is installed.
PROCESSES = """
import json, pathlib
rows = []
for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
        cmd = (proc / "cmdline").read_bytes().replace(b"\\0", b" ").decode().strip()
        uid = next(l.split()[1] for l in (proc / "status").read_text().splitlines() if l.startswith("Uid:"))
    except OSError:
        continue
    rows.append([int(proc.name), int(uid), cmd])
print(json.dumps(rows))
"""
NO_TORCH = """
import importlib.metadata, importlib.util, json
names = sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()})
print(json.dumps({"find_spec": importlib.util.find_spec("torch") is not None,
                  "torch_like": [n for n in names if n.startswith(("torch", "nvidia-"))]}))
"""


def check_image_contract(podman: Podman, image: str, name: str) -> None:
    """The image's own HEALTHCHECK passes, its service runs as uid 10001, and there is no torch."""
    declared = json.loads(run(["podman", "image", "inspect", "--format", "{{json .Config.Healthcheck}}", image],
                              30, "podman image inspect").stdout)
    if not declared or "/readyz" not in " ".join(declared.get("Test", [])):
        raise CheckFailed(f"{image} declares no /readyz HEALTHCHECK: {declared}")
    health = subprocess.run(podman("healthcheck", "run", name), capture_output=True, text=True, timeout=60)
    status = inspect(podman, name, "{{.State.Health.Status}}")
    if health.returncode != 0 or status != "healthy":
        raise CheckFailed(f"the image's HEALTHCHECK failed (status {health.returncode}, {status}): "
                          f"{health.stdout}{health.stderr}")
    say(f"  HEALTHCHECK ({' '.join(declared['Test'][:2])} ...) passes: {status}")

    processes = json.loads(in_container(podman, name, PROCESSES, "listing the container's processes"))
    service = [row for row in processes if row[2] == "python -m service"]
    if not service:
        raise CheckFailed(f"no `python -m service` process in the container: {processes}")
    pid1 = [row for row in processes if row[0] == 1]
    if any(uid != 10001 for _, uid, _ in service + pid1):
        raise CheckFailed(f"processes not running as uid 10001: {service + pid1}")
    say(f"  PID 1 `{pid1[0][2]}` and `{service[0][2]}` run as uid 10001")

    torch = json.loads(in_container(podman, name, NO_TORCH, "looking for torch"))
    if torch["find_spec"] or torch["torch_like"]:
        raise CheckFailed(f"torch (or CUDA wheels for it) in the serving image: {torch}")
    say("  no torch in the image (no `torch` module, no torch*/nvidia-* distribution)")


def check_requests(base: str, bundle: Path) -> list[Any]:
    """/v1/model names the mounted bundle; one /v1/atomize and one /v1/embeddings answer in shape."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    status, body = http("GET", f"{base}/v1/model")
    model = json.loads(body)
    if status != 200 or (model["name"], model["version"]) != (manifest["name"], manifest["version"]):
        raise CheckFailed(f"GET /v1/model answered {status} for another model: {body[:300]!r}")
    inputs = example_inputs(model)
    dim = manifest["embedding_dim"]

    status, body = http("POST", f"{base}/v1/atomize", {"inputs": inputs, "neighbors": 3})
    results = json.loads(body).get("results", []) if status == 200 else []
    if status != 200 or [r["index"] for r in results] != list(range(len(inputs))) or any(
        len(r["embedding"]) != dim or len(r["neighbors"]) != 3 for r in results
    ):
        raise CheckFailed(f"POST /v1/atomize answered {status}: {body[:300]!r}")

    status, body = http("POST", f"{base}/v1/embeddings", {"input": inputs, "model": model["name"]})
    data = json.loads(body).get("data", []) if status == 200 else []
    if status != 200 or len(data) != len(inputs) or any(len(d["embedding"]) != dim for d in data):
        raise CheckFailed(f"POST /v1/embeddings answered {status}: {body[:300]!r}")
    say(f"  /v1/atomize and /v1/embeddings answer 200 through 127.0.0.1 ({len(inputs)} inputs, dim {dim}, "
        f"model {model['name']} on {model['runtime']['provider']})")
    return inputs


def check_graceful_stop(podman: Podman, name: str, base: str, inputs: list[Any]) -> None:
    """`podman stop` (SIGTERM) while requests wait in the batcher: all answered, exit status 0."""
    answers: list[tuple[int, float]] = []

    def request(index: int) -> None:
        status, _ = http("POST", f"{base}/v1/atomize", {"inputs": [inputs[index % len(inputs)]]}, timeout_s=GRACE_S)
        answers.append((status, time.monotonic()))

    threads = [threading.Thread(target=request, args=(i,)) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    time.sleep(MAX_WAIT_MS / 1000 / 3)  # sent and queued, their batch not yet due
    stop_sent = time.monotonic()
    run(podman("stop", "--time", str(GRACE_S), name), GRACE_S + 30, "podman stop")
    stopped_s = time.monotonic() - stop_sent
    for thread in threads:
        thread.join(timeout=GRACE_S)
    statuses = sorted(status for status, _ in answers)
    after_stop = sum(1 for _, done in answers if done > stop_sent)
    exit_code = inspect(podman, name, "{{.State.ExitCode}}")
    logs = subprocess.run(podman("logs", name), capture_output=True, text=True, timeout=30)
    if statuses != [200] * IN_FLIGHT:
        raise CheckFailed(f"requests in flight at SIGTERM answered {statuses}, expected {IN_FLIGHT} x 200")
    if after_stop != IN_FLIGHT:
        raise CheckFailed(f"only {after_stop} of {IN_FLIGHT} requests were still in flight at SIGTERM")
    if exit_code != "0" or stopped_s >= GRACE_S:
        raise CheckFailed(f"stopped in {stopped_s:.1f} s with exit status {exit_code} (expected 0 within {GRACE_S} s)")
    if "Application shutdown complete" not in logs.stdout + logs.stderr:
        raise CheckFailed("the app's shutdown did not run to the end")
    say(f"  SIGTERM with {IN_FLIGHT} requests in flight: all 200, exit status {exit_code} "
        f"after {stopped_s:.1f} s (grace period {GRACE_S} s)")


def exercise(podman: Podman, image: str, bundle: Path, mount: bool, deadline: float) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    name = f"atomizer-check-{port}"
    where = "mounted at /models/bundle" if mount else "inside the image"
    with container(podman, image, name, port, bundle if mount else None):
        def ready() -> bool:
            if inspect(podman, name, "{{.State.Running}}") != "true":
                raise CheckFailed(f"{image} exited with status {inspect(podman, name, '{{.State.ExitCode}}')}")
            return http("GET", f"{base}/readyz", timeout_s=2)[0] == 200

        started = time.monotonic()
        wait_until(f"{image}: /readyz answers 200", ready, min(deadline, time.monotonic() + 120))
        say(f"{image} ready on {base} in {time.monotonic() - started:.1f} s (bundle {where})")
        check_image_contract(podman, image, name)
        inputs = check_requests(base, bundle)
        check_graceful_stop(podman, name, base, inputs)


def exercise_two_models(podman: Podman, image: str, bundle: Path, deadline: float) -> None:
    """Two models in one container (issue 21): the bundle under its own name and again as `second`,
    set through the environment as compose sets it; both listed, both answer."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    name = f"atomizer-check-two-{port}"
    extra = ("--volume", f"{bundle}:/models/second:ro", "--env", "ATOM_BUNDLE=/models/bundle,second=/models/second")
    with container(podman, image, name, port, bundle, extra):
        wait_until(f"{image} with two models: /readyz answers 200",
                   lambda: http("GET", f"{base}/readyz", timeout_s=2)[0] == 200, min(deadline, time.monotonic() + 120))
        status, body = http("GET", f"{base}/v1/models")
        names = [m["id"] for m in json.loads(body)["data"]] if status == 200 else []
        if len(names) != 2 or names[1] != "second":
            raise CheckFailed(f"GET /v1/models answered {status}: {body[:300]!r}")
        inputs = example_inputs(json.loads(http("GET", f"{base}/v1/model")[1]))[:2]
        for model in names:
            status, body = http("POST", f"{base}/v1/atomize", {"model": model, "inputs": inputs, "neighbors": 2})
            if status != 200 or len(json.loads(body)["results"]) != len(inputs):
                raise CheckFailed(f"POST /v1/atomize for {model} answered {status}: {body[:300]!r}")
        status, _ = http("POST", f"{base}/v1/atomize", {"inputs": inputs})
        if status != 422:
            raise CheckFailed(f"a request naming no model answered {status}, not 422, with two models served")
        say(f"{image} serves two models ({', '.join(names)}): /v1/models lists them, each answers /v1/atomize")


def check_compose(deadline: float) -> None:
    """A real compose implementation reads both files; the CPU override removes the GPUs."""
    podman_compose = Path(sys.executable).parent / "podman-compose"
    if not podman_compose.exists():
        raise CheckFailed("podman-compose not found: install the dev extra")
    merged = {}
    for files in (["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cpu.yml"]):
        command = [str(podman_compose), *(arg for f in files for arg in ("-f", f)), "config"]
        merged[len(files)] = yaml.safe_load(run(command, left(deadline), "podman-compose config", cwd=ROOT).stdout)
    gpu, cpu = merged[1]["services"], merged[2]["services"]
    for service in ("trainer", "atomizer"):
        if "deploy" not in gpu[service] or "deploy" in cpu[service]:
            raise CheckFailed(f"compose: {service} should reserve a GPU, and not with the CPU override")
    devices = (gpu["atomizer"]["environment"]["ATOM_DEVICE"], cpu["atomizer"]["environment"]["ATOM_DEVICE"])
    if devices != ("cuda", "cpu"):
        raise CheckFailed("compose: ATOM_DEVICE is not cuda (GPU) / cpu (CPU override)")
    if cpu["atomizer"]["stop_grace_period"] != f"{GRACE_S}s":
        raise CheckFailed(f"compose: stop_grace_period is not {GRACE_S}s")
    say(f"podman-compose config merges docker-compose.yml (+ cpu override): services {sorted(cpu)}")


def train_in_image(podman: Podman, workdir: Path, deadline: float) -> Path:
    """The training image's `build-bundle` (compose's trainer) writes a bundle into a mounted folder."""
    models = workdir / "models"
    models.mkdir()
    models.chmod(0o777)  # the image trains as uid 10001
    started = time.monotonic()
    run(podman("run", "--rm", "--entrypoint", "build-bundle", "--env", "TRAIN_DATASET=synthetic",
               "--env", "TRAIN_EPOCHS=1", "--volume", f"{models}:/models", TRAIN_IMAGE, "/models/bundle"),
        left(deadline), "build-bundle in the training image")
    bundle = models / "bundle"
    manifest = bundle / "manifest.json"
    if not manifest.is_file() or manifest.stat().st_uid != 10001:
        raise CheckFailed(f"build-bundle left no manifest owned by uid 10001 in {bundle}")
    say(f"{TRAIN_IMAGE}: build-bundle trained and exported {bundle} in {time.monotonic() - started:.0f} s")
    return bundle


def run_check(bundle: Path | None, deadline_s: float, workdir: Path, with_train: bool = False) -> None:
    begun = time.monotonic()
    deadline = begun + deadline_s
    base = f"localhost/debian:{SUITE}"
    check_compose(deadline)
    ensure_base_image(base, deadline)
    podman = choose_runtime(base, deadline)
    if bundle is None:
        bundle = make_tiny_bundle(workdir, deadline)
        say(f"made a tiny bundle in {bundle} with `atomize train` + `atomize export`")
    build(podman, "serve", IMAGE, base, workdir, deadline)
    build(podman, "serve-bundled", BUNDLED_IMAGE, base, workdir, deadline, ("--build-context", f"bundle={bundle}"))
    exercise(podman, IMAGE, bundle, mount=True, deadline=deadline)
    exercise(podman, BUNDLED_IMAGE, bundle, mount=False, deadline=deadline)
    exercise_two_models(podman, IMAGE, bundle, deadline)
    if with_train:
        build(podman, "train", TRAIN_IMAGE, base, workdir, deadline)
        exercise(podman, IMAGE, train_in_image(podman, workdir, deadline), mount=True, deadline=deadline)
    say(f"whole check: {time.monotonic() - begun:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="text bundle folder (default: a tiny bundle made for the check)")
    parser.add_argument("--train", action="store_true",
                        help="also build the training image (CUDA torch, ~6 GB) and serve a bundle it trains")
    parser.add_argument("--deadline-s", type=float, default=1500.0, help="the whole check's time limit")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="atom-image-") as workdir:
        try:
            run_check(args.bundle and args.bundle.resolve(), args.deadline_s, Path(workdir), args.train)
        except (CheckFailed, subprocess.SubprocessError) as exc:
            say(f"FAILED: {exc}")
            return 1
    say("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
