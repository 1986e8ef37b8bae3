"""The `atomize` command line, called in-process through its main(argv) entry point."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from training.cli import app

runner = CliRunner()


def test_train_evaluate_export_through_the_cli(tmp_path):
    run_dir, bundle_dir = tmp_path / "run", tmp_path / "bundle"
    model = json.dumps({"d_model": 16, "n_layers": 1, "embedding_dim": 8, "n_heads": 2})
    result = runner.invoke(app, ["train", "--dataset", "digits", "--out", str(run_dir), "--epochs", "1", "--limit", "200",
                                 "--batch-size", "32", "--lambda", "0.5", "--potential", "lj", "--model", model, "--no-progress"])
    assert result.exit_code == 0, result.output
    config = json.loads((run_dir / "config.json").read_text())
    assert config["potential"] == "lj" and config["potential_weight"] == 0.5 and config["d_model"] == 16
    result = runner.invoke(app, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert 0.0 <= json.loads(result.output[result.output.index("{"):])["test_accuracy"] <= 1.0
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(bundle_dir)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["potential"]["kind"] == "lj" and manifest["potential"]["weight"] == 0.5
    assert manifest["graph"]["exporter"] == "torchscript" and manifest["graph"]["attention"] == "atom"  # no backbone


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--potential", "yukawa"], "--potential must be morse or lj"),
        (["train", "--head", "mlp"], "--head must be atom or plain"),
        (["train", "--dataset", "nope", "--out", "/tmp/atomize-unused"], "unknown dataset 'nope'"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output, result.output


def test_export_refuses_a_plain_run(tmp_path):
    from training.train import train

    from .conftest import tiny_options

    run_dir = train(tiny_options("digits", tmp_path / "plain", epochs=1, limit=200, head="plain"))
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "only atom models can be exported" in result.output
