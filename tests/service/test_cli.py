"""`python -m service` / `atomize serve`: flags, environment, and clear start-up errors."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from service import cli
from service.app import create_app
from contract.bundle import BundleError


@pytest.fixture
def captured(monkeypatch):
    """Replace the uvicorn start with a recorder of the settings it would run with."""
    seen = []
    monkeypatch.setattr(cli, "run", seen.append)
    return seen


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    assert "--max-batch-items" in capsys.readouterr().out


def test_flags_win_over_environment_which_wins_over_defaults(captured, monkeypatch, tmp_path):
    monkeypatch.setenv("ATOM_PORT", "9999")
    monkeypatch.setenv("ATOM_MAX_WAIT_MS", "7.5")
    assert cli.main(["--bundle", str(tmp_path), "--port", "1234", "--max-batch-items", "8"]) == 0
    (settings,) = captured
    assert settings.port == 1234  # flag
    assert settings.max_wait_ms == 7.5  # environment
    assert settings.max_batch_items == 8
    assert settings.host == "127.0.0.1"  # default
    assert settings.bundle == (str(tmp_path),)


def test_invalid_values_exit_two_naming_the_setting(captured, capsys):
    assert cli.main(["--device", "tpu"]) == 2
    assert "invalid setting device" in capsys.readouterr().err
    assert cli.main(["--max-batch-items", "many"]) == 2
    assert captured == []


def test_a_missing_bundle_is_one_error_line(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert cli.main(["--bundle", str(tmp_path / "nothing")]) == 1
    (record,) = caplog.records
    assert record.getMessage() == f"cannot start: {tmp_path / 'nothing'}: bundle folder does not exist"


def test_the_app_refuses_to_start_on_a_tampered_bundle(text_case, tmp_path, caplog):
    tampered = tmp_path / "bundle"
    shutil.copytree(text_case.path, tampered)
    (tampered / "tokenizer.json").write_text("{}")
    app = create_app(text_case.settings(bundle=tampered))
    with caplog.at_level(logging.ERROR), pytest.raises(BundleError):
        with TestClient(app):
            pass
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("service")]
    assert messages == [f"cannot start: {tampered / 'tokenizer.json'}: checksum mismatch (file changed after export)"]


def test_the_service_never_imports_torch_model_or_training():
    code = ("import sys, service.app, service.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'model', 'training')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
