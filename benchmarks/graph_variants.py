"""Which export path and graph optimisation serve the bundle's model fastest, at export parity.

    python benchmarks/graph_variants.py [--run runs/tweets] [--plain runs/peers/minilm-onnx/model.onnx]

The run's model (the default bundle's, `make bundle`) is exported four ways: by the dynamo
exporter, by the TorchScript one, by the TorchScript one with the backbone's attention in its eager
form (matmul + softmax instead of one sdpa call, the pattern that the attention fusion looks for:
what `atomize export` does), and that last one with the role MLP run on every token instead of the
role table that every other variant looks the roles up in (`AtomModel.tabulated_roles`). Each is
then optimised either by ONNX Runtime's basic level (export's step) or by ONNX Runtime's
transformer optimizer (`onnxruntime.transformers`: attention, LayerNorm, GELU and bias fusions).
A file that fails the
export's own parity check (1e-4 against PyTorch on its three cases) is reported and not timed.
The plain MiniLM graph the peers serve (`benchmarks/peer_systems.py --export`) is timed beside
them, as exported and through the same transformer optimizer (Infinity serves such a copy).

Timing as in graph_cost.py: 1,024 test tweets cut into the service's batches, the service's
session options, runs alternating, the best of 3 per file. Writes
benchmarks/results/graph_variants.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from batch_padding import policy_batches  # noqa: E402
from common import describe, machine  # noqa: E402
from graph_cost import best_items_per_s  # noqa: E402

OPTIMISATIONS = ("basic", "transformer")


def transformer_optimise(source: Path, target: Path, heads: int, hidden: int) -> None:
    """ONNX Runtime's transformer optimizer, for the CPU (fusions only: no fp16 conversion)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimised = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden, use_gpu=False)
    optimised.save_model_to_file(str(target))


def fused_ops(path: Path) -> dict[str, int]:
    """How many of the fused operators a graph holds (what the optimizer managed to fuse)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "tweets")
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets", help="its tokenizer and batch policy")
    parser.add_argument("--plain", type=Path, default=ROOT / "runs" / "peers" / "minilm-onnx" / "model.onnx")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from contract.bundle import load_bundle
    from contract.runner import session_options
    from peers import test_texts
    from service.runtime import Runtime
    from training.checkpoint import load_model, load_run_dataset
    from training.export import (OUTPUT_NAMES, PARITY_TOLERANCE, check_parity, export_onnx, optimise,
                                 parity_batches)

    model = load_model(args.run).eval()
    data = load_run_dataset(args.run)
    backbone = model.config.backbone_config or {}
    heads, hidden = backbone.get("num_attention_heads", 12), backbone.get("hidden_size", 384)
    cases = parity_batches(data.train, model.config.modality, model.config.max_components)
    example = cases["mixed lengths with padding"]
    work = Path(tempfile.mkdtemp(prefix="graph-variants-"))
    raw = {"dynamo": work / "dynamo.raw.onnx", "torchscript": work / "torchscript.raw.onnx",
           "torchscript, eager attention": work / "torchscript-eager.raw.onnx"}
    export_onnx(model, example, raw["dynamo"], exporter="dynamo")
    export_onnx(model, example, raw["torchscript, eager attention"], exporter="torchscript")  # what export does
    if model.config.head == "atom":  # the role MLP on every token, as exported before the role table
        raw["torchscript, eager attention, role MLP"] = work / "torchscript-eager-mlp.raw.onnx"
        export_onnx(model, example, raw["torchscript, eager attention, role MLP"], exporter="torchscript", role_table=False)
    if model.config.backbone_config:  # the TorchScript exporter on the attention as the model runs it (sdpa)
        export_onnx(model, example, raw["torchscript"], exporter="torchscript", attention="sdpa")
    else:  # no backbone: one attention form
        raw.pop("torchscript")

    rows: dict[str, dict] = {}
    files: dict[str, tuple[Path, list[str] | None]] = {}
    for exporter, source in raw.items():
        for optimisation in OPTIMISATIONS:
            name = f"{exporter} + {optimisation}"
            path = work / f"{exporter.replace(', ', '-').replace(' ', '-')}.{optimisation}.onnx"
            row = rows[name] = {"exporter": exporter, "optimisation": optimisation}
            try:
                if optimisation == "basic":
                    optimise(source, path)
                else:
                    transformer_optimise(source, path, heads, hidden)
                row["fused"] = fused_ops(path)
                row["parity"] = check_parity(model, path, cases, PARITY_TOLERANCE)
                files[name] = (path, list(OUTPUT_NAMES))
            except Exception as error:  # noqa: BLE001 - a variant that fails to build or to match is a result
                row["failed"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    if args.plain.exists():
        plain_fused = work / "plain.transformer.onnx"
        transformer_optimise(args.plain, plain_fused, heads, hidden)
        for name, path in (("plain MiniLM", args.plain), ("plain MiniLM + transformer", plain_fused)):
            rows[name] = {"exporter": "peers (TorchScript)", "optimisation": name.partition(" + ")[2] or "as exported",
                          "fused": fused_ops(path)}
            files[name] = (path, None)

    bundle = load_bundle(args.bundle)
    runtime = Runtime(bundle, device="cpu", precision="fp32")
    items = runtime.prepare(test_texts(1024))
    feeds = policy_batches(runtime, items, 32, 0.1)
    sessions = {name: (ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"]), outputs)
                for name, (path, outputs) in files.items()}
    load = os.getloadavg()[0]
    best = best_items_per_s(sessions, feeds, args.rounds)
    reference = max((best[n] for n in best if n.startswith("plain MiniLM")), default=None)
    for name, value in best.items():
        rows[name]["items_per_s"] = value
        rows[name]["over_best_plain"] = value / reference if reference else None

    result = {"command": "python benchmarks/graph_variants.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "load_average_before": load, "onnxruntime": ort.__version__, "items": len(items),
              "mean_batch_items": len(items) / len(feeds), "rounds": args.rounds, "variants": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graph_variants.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# The bundle's graph: export path and graph optimisation", "",
             f"`{result['command'].strip()}` on {describe(machine())} (load average {load:.2f} before), "
             f"{len(items)} test tweets cut by the service's policy (mean batch {result['mean_batch_items']:.1f}), "
             f"the service's session options, best of {args.rounds} alternating runs. Parity: the export's check "
             f"(max |onnx - torch| / max(1, |torch|) <= {PARITY_TOLERANCE:g} on its 3 cases).", "",
             "| graph | fused operators | parity (worst case) | items/s | / best plain MiniLM |", "|---|---|---:|---:|---:|"]
    for name, row in rows.items():
        fused = ", ".join(f"{op} {n}" for op, n in sorted(row.get("fused", {}).items())) or "–"
        parity = f"{max(row['parity'].values()):.1e}" if "parity" in row else ("failed" if "failed" in row else "–")
        speed = f"{row['items_per_s']:.0f}" if "items_per_s" in row else "–"
        ratio = f"{row['over_best_plain']:.2f}" if row.get("over_best_plain") else "–"
        lines.append(f"| {name} | {fused} | {parity} | {speed} | {ratio} |")
    failed = [f"- {name}: {row['failed']}" for name, row in rows.items() if "failed" in row]
    if failed:
        lines += ["", "Not timed (failed to build or to match PyTorch):", *failed]
    lines.append("")
    (args.out / "graph_variants.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
