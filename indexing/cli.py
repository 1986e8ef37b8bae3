"""What `atomize index` runs (the typer command itself lives with the others in training/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .bank import BankError
from .corpus import CorpusError
from .indexer import IndexOptions, build_bank


def run_index(params: dict[str, Any]) -> None:
    """Build the bank; a problem the user can fix ends in one line and exit status 2."""
    from contract.bundle import BundleError  # the bundle contract; moves into this package

    if params["index"] not in ("auto", "flat", "hnsw", "ivf"):
        raise typer.BadParameter(f"--index must be auto, flat, hnsw or ivf, got {params['index']!r}")
    options = IndexOptions(
        bundle=Path(params["bundle"]), input=Path(params["input"]), out=Path(params["out"]),
        input_column=params["input_column"], id_column=params["id_column"], label_column=params["label_column"],
        skip_bad_rows=params["skip_bad_rows"], index_kind=params["index"], batch_size=params["batch_size"],
        shard_rows=params["shard_rows"], device=params["device"], ray=params["ray"] or bool(params["ray_address"]),
        ray_address=params["ray_address"], ray_workers=params["ray_workers"], progress=params["progress"],
    )
    try:
        manifest = build_bank(options)
    except (CorpusError, BankError, BundleError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    skipped = manifest.source.rows_skipped
    typer.echo(f"bank: {options.out} ({manifest.count} atoms, index {manifest.index.kind}"
               f"{f', {skipped} bad rows skipped' if skipped else ''})")
