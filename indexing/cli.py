"""The `atomize index` command (training/cli.py lists it with the other commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer


def run_index(params: dict[str, Any]) -> None:
    """Build the bank; a problem the user can fix ends in one line and exit status 2."""
    # ONNX Runtime and FAISS load when the command runs, not when `atomize --help` lists it
    from contract.bank import BankError
    from contract.bundle import BundleError
    from contract.runner import DeviceError

    from .corpus import CorpusError
    from .indexer import index_corpus
    from .shards import IndexOptions

    if params["precision"] not in ("auto", "fp32", "fp16", "int8"):
        raise typer.BadParameter(f"--precision must be auto, fp32, fp16 or int8, got {params['precision']!r}")
    if params["long"] not in ("pool", "chunks", "truncate"):
        raise typer.BadParameter(f"--long must be pool, chunks or truncate, got {params['long']!r}")
    if params["long"] == "chunks" and (params["ray"] or params["ray_address"]):
        raise typer.BadParameter("--long chunks (one atom per window) runs on one machine; with --ray use --long pool")
    if params["index"] not in ("auto", "flat", "hnsw", "ivf"):
        raise typer.BadParameter(f"--index must be auto, flat, hnsw or ivf, got {params['index']!r}")
    options = IndexOptions(
        bundle=Path(params["bundle"]), input=Path(params["input"]), out=Path(params["out"]),
        input_column=params["input_column"], id_column=params["id_column"], label_column=params["label_column"],
        skip_bad_rows=params["skip_bad_rows"], index_kind=params["index"], batch_size=params["batch_size"],
        shard_rows=params["shard_rows"], device=params["device"], precision=params["precision"], long=params["long"],
        ray=params["ray"] or bool(params["ray_address"]), ray_address=params["ray_address"], ray_workers=params["ray_workers"], progress=params["progress"],
    )
    try:
        manifest = index_corpus(options)
    except (CorpusError, BankError, BundleError, DeviceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    skipped = manifest.source.rows_skipped
    typer.echo(f"bank: {options.out} ({manifest.count} atoms, index {manifest.index.kind}, "
               f"{manifest.built_with.precision} copy"
               f"{f', {skipped} bad rows skipped' if skipped else ''})")


def index(
    bundle: Annotated[Path, typer.Option(help="model bundle to atomize with")],
    input: Annotated[Path, typer.Option("--input", help="corpus: .csv, .jsonl or .npz")],
    out: Annotated[Path, typer.Option(help="bank folder to write")],
    input_column: Annotated[Optional[str], typer.Option(help="text or array column (default: text, input or values)")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="id column (default: id, if present)")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="label column (default: label, if present)")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="skip and count bad rows instead of stopping")] = False,
    index: Annotated[str, typer.Option(help="auto, flat (exact), hnsw or ivf")] = "auto",
    batch_size: int = 64,
    shard_rows: Annotated[int, typer.Option(help="records per resumable shard")] = 4096,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    precision: Annotated[str, typer.Option(
        help="auto (the copy the service runs on this device: int8 on a CPU when the bundle has it), fp32, fp16 or int8"
    )] = "auto",
    long: Annotated[str, typer.Option(
        help="a text past the model's length: pool (read whole in windows, one pooled atom per document), chunks "
             "(one atom per window, id <id>#<j>, with the document and the window's characters in its metadata) "
             "or truncate (cut to the model's length)"
    )] = "pool",
    ray: Annotated[bool, typer.Option("--ray", help="atomize on Ray (local unless --ray-address)")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address, e.g. ray://head:10001")] = None,
    ray_workers: Annotated[int, typer.Option(help="Ray actors running the model")] = 2,
    progress: bool = True,
) -> None:
    """Atomize a corpus with a bundle into a bank folder that `atomize serve --bank` serves."""
    run_index(locals())
