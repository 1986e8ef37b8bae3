"""A peer server of the serving benchmark (benchmarks/peer_systems.py) runs in a process group of
its own and leaves nothing running when stopped, even children that ignore SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

with mock.patch.dict(os.environ):  # its offline switches (HF_HUB_OFFLINE, ...) stay out of this session
    import peer_systems  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups: POSIX only")

# A leader that starts a child which ignores SIGTERM, writes the child's pid, then waits.
LEADER = textwrap.dedent("""
    import signal, subprocess, sys, time
    if sys.argv[2] == "ignore-first":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    open(sys.argv[1], "w").write(str(child.pid))
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start(tmp_path: Path, mode: str) -> tuple[peer_systems._Server, int]:
    pid_file = tmp_path / "child.pid"
    server = peer_systems._Server([sys.executable, "-c", LEADER, str(pid_file), mode], cwd=tmp_path,
                                  env=dict(os.environ), log_path=tmp_path / "server.log")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline and server.proc.poll() is None, (tmp_path / "server.log").read_text()
        time.sleep(0.05)
    time.sleep(0.3)  # the child has set its handler
    return server, int(pid_file.read_text())


def test_a_server_is_the_leader_of_its_own_group_and_session(tmp_path, monkeypatch):
    monkeypatch.setattr(peer_systems, "GROUP_GRACE_S", 1.0)
    server, child = start(tmp_path, "plain")
    try:
        assert os.getpgid(server.proc.pid) == server.proc.pid == os.getsid(server.proc.pid)
        assert os.getpgid(child) == server.proc.pid  # its children join the group
        assert os.getpgid(server.proc.pid) != os.getpgid(0)  # and the group is not ours
    finally:
        server.stop()


def test_stop_takes_every_step_until_the_group_is_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(peer_systems, "STOP_GRACE_S", 1.0)
    monkeypatch.setattr(peer_systems, "GROUP_GRACE_S", 1.0)
    server, child = start(tmp_path, "ignore-first")
    started = time.monotonic()
    # SIGINT to the leader (ignored: STOP_GRACE_S), SIGTERM to the group (the child ignores it:
    # GROUP_GRACE_S), then SIGKILL
    assert server.stop(signal.SIGINT) is True
    assert 2.0 <= time.monotonic() - started < 10
    assert server.proc.returncode == -signal.SIGTERM and not alive(child)


def test_a_leader_that_stops_at_once_still_takes_its_children_along(tmp_path, monkeypatch):
    monkeypatch.setattr(peer_systems, "STOP_GRACE_S", 30.0)
    monkeypatch.setattr(peer_systems, "GROUP_GRACE_S", 1.0)
    server, child = start(tmp_path, "plain")
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) is True
    assert time.monotonic() - started < 10  # no wait for the leader's grace: it went at once
    assert server.proc.returncode == -signal.SIGTERM and not alive(child)


def test_a_peer_started_with_spinning_off_opens_every_onnx_runtime_session_without_spinning(tmp_path):
    """peer_apps/no_spin (Infinity's `spinning=False`): the session a peer opens, with or without
    options of its own, sleeps its idle intra-op threads as this service does; its own options stay."""
    import subprocess

    script = textwrap.dedent("""
        import onnxruntime as ort
        from onnx import TensorProto, helper
        x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
        model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                                  opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
        own = ort.SessionOptions()
        own.intra_op_num_threads = 1
        for options in (None, own):
            opened = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).get_session_options()
            print(opened.get_session_config_entry("session.intra_op.allow_spinning"), opened.intra_op_num_threads)
    """)
    hook = Path(peer_systems.__file__).resolve().parent / "peer_apps" / "no_spin"
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(hook)},
                         capture_output=True, text=True, timeout=120, check=True).stdout.split("\n")
    assert out[:2] == ["0 0", "0 1"]
