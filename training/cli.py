"""The `atomize` command line: train, evaluate, export (here), index and serve (registered).

Heavy imports (torch, the training package) happen inside the commands, so `atomize serve`
works in a serving image that has no torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

@contextlib.contextmanager
def user_errors():
    """Errors a user can fix (bad dataset, bad file, failed export check) end in one line, exit 2."""
    from contract.bundle import BundleError

    from .backbone import BackboneError
    from .data import DatasetError
    from .errors import ExportError

    try:
        yield
    except (DatasetError, ExportError, BundleError, BackboneError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train, export and serve atom-modeled encoders.")


@app.callback()
def configure(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one line per rewritten initializer


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="synthetic, digits, mnist5k, tweets, csv:PATH or npz:PATH")] = "tweets",
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/tweets"),
    epochs: int = 10,
    max_steps: Annotated[Optional[int], typer.Option(help="stop after this many steps")] = None,
    seed: int = 0,
    potential: Annotated[str, typer.Option(help="morse or lj")] = "morse",
    lambda_: Annotated[Optional[float], typer.Option("--lambda", help="potential weight; 0 = baseline")] = None,
    potential_warmup_epochs: Annotated[
        float, typer.Option(help="lambda rises linearly from 0 over this many epochs; 0 = off")
    ] = 0.0,
    head: Annotated[str, typer.Option(help="atom, or plain (mean pooling, no atom head)")] = "atom",
    backbone: Annotated[
        Optional[str], typer.Option(help="pretrained text encoder: minilm, or a local Hugging Face folder")
    ] = None,
    train_layers: Annotated[
        int, typer.Option(help="backbone layers fine-tuned from the top: -1 all, 0 frozen")
    ] = -1,
    backbone_lr: Annotated[float, typer.Option(help="learning rate of the backbone's weights")] = 5e-5,
    adapter_layers: Annotated[int, typer.Option(help="new Transformer blocks trained on top of the backbone")] = 0,
    max_components: Annotated[Optional[int], typer.Option(
        help="a backbone bundle's input limit in tokens, [CLS]/[SEP] included (default: the backbone's own, "
             "all-MiniLM-L6-v2: 256); training texts stay cut at 64")] = None,
    batch_size: int = 128,
    lr: Annotated[float, typer.Option(help="learning rate (the atom head's, with a backbone)")] = 2e-3,
    limit: Annotated[Optional[int], typer.Option(help="subsample the dataset to this many items")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    resume: Annotated[bool, typer.Option(help="continue from the run folder's last state")] = False,
    model: Annotated[Optional[str], typer.Option(
        help='JSON of AtomConfig overrides, e.g. \'{"valence": 0, "potential_projection": 64, "bond_source": "predicted"}\''
    )] = None,
    progress: bool = True,
) -> None:
    """Train an atom-modeled encoder (or its baselines) and keep the best-on-validation weights."""
    from .train import TrainOptions, train as run_training

    if potential not in ("morse", "lj"):
        raise typer.BadParameter(f"--potential must be morse or lj, got {potential!r}")
    if head not in ("atom", "plain"):
        raise typer.BadParameter(f"--head must be atom or plain, got {head!r}")
    options = TrainOptions(
        dataset=dataset, out=out, epochs=epochs, max_steps=max_steps, seed=seed, potential=potential,
        potential_weight=lambda_, potential_warmup_epochs=potential_warmup_epochs, head=head, backbone=backbone,
        backbone_train_layers=train_layers, max_components=max_components,
        backbone_lr=backbone_lr, backbone_adapter_layers=adapter_layers, batch_size=batch_size, lr=lr, limit=limit, device=device,
        resume=resume, progress=progress, model_overrides=json.loads(model) if model else {},
    )
    with user_errors():
        run_dir = run_training(options)
    typer.echo(f"trained: {run_dir}")


@app.command()
def evaluate(
    run_dir: Path,
    device: str = "cpu",
) -> None:
    """Test accuracy, kNN accuracy, silhouette, uniformity, neighbour distances, role recovery."""
    from .evaluate import evaluate_run

    with user_errors():
        results = evaluate_run(run_dir, device=device)
    typer.echo(json.dumps(results, indent=2))


@app.command()
def export(
    run_dir: Path,
    out: Annotated[Path, typer.Option(help="bundle folder to write")] = Path("bundles/tweets"),
    fp16: Annotated[bool, typer.Option(help="also write encoder.fp16.onnx for GPUs")] = False,
    int8: Annotated[bool, typer.Option(help="also write encoder.int8.onnx for CPUs (measured against fp32)")] = False,
    texts: Annotated[bool, typer.Option(help="keep the training texts with the bundle's atoms (neighbours show "
                                             "them); --no-texts leaves them out")] = True,
) -> None:
    """Export a run to a self-describing, self-verified ONNX bundle."""
    from contract.bundle import bundle_digest

    from .export import export_bundle

    with user_errors():
        bundle = export_bundle(run_dir, out, fp16=fp16, int8=int8, texts=texts)
    typer.echo(f"bundle: {bundle}")
    typer.echo(f"digest: {bundle_digest(bundle)}  (pin it: ATOM_BUNDLE_DIGEST)")


def _register_commands() -> None:
    """`index` (indexing/cli.py, torch-free) and `serve` (service/cli.py, when the serving extra is
    installed) are defined beside what they run; this app only lists them."""
    from indexing.cli import index

    app.command("index")(index)
    try:
        from service.cli import serve
    except ImportError:  # the serving extra is not installed
        return
    app.command("serve")(serve)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    app(args=argv)


if __name__ == "__main__":
    main()
