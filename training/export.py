"""Export a training run to a model bundle (DESIGN section 4), verified before it is written.

Steps: ONNX export (the TorchScript exporter, a backbone's attention in eager form: chosen by
measurement, see `export_onnx`; dynamic batch and component axes) -> ONNX Runtime basic graph
optimisation (provider-independent, so the same file serves CPU and CUDA) ->
parity check against PyTorch -> optional fp16 and int8 copies (`precision`) -> reference bank from the training split
-> report -> manifest with a checksum of every file. The bundle is built in a temporary folder
and moved into place only when everything passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from torch import nn

from contract.bank import ATOMS_METADATA_FILE
from contract.projection import PROJECTION_FILE, write_projection
from contract.bundle import (
    COMPOSITION_FIELDS,
    ROLE_NAMES,
    SCHEMA_VERSION,
    InputSpec,
    Manifest,
    PotentialSpec,
    TensorSpec,
    TrainingSummary,
    checksum_tree,
)

from .checkpoint import load_json, load_model, load_run_dataset
from .data import Dataset, Split
from .errors import ExportError
from .precision import BATCH_TOLERANCE, INT8_SCHEME, batch_invariance, measure_precision, write_fp16, write_int8
from .train import predict

log = logging.getLogger(__name__)

# max |onnx - torch| / max(1, |torch|) for fp32: absolute for embeddings and roles (below 1),
# relative for the composition's counts, which sum over the components (at 256 tokens a count
# near 100 differed by 1.5e-4 in float32 summation order)
PARITY_TOLERANCE = 1e-4
# How a text read in windows is pooled into one atom (contract/chunks.py): chosen on the validation
# documents of benchmarks/documents.py (kNN accuracy 0.99 by mass against 0.98 by mean, 200
# documents; benchmarks/results/documents.md)
CHUNK_POOLING = "mass"
FP16_TOLERANCE = 5e-2  # fp16 is checked loosely; it is an optional GPU copy
OUTPUT_NAMES = ("embedding", "roles", "composition")
BATCH_CHECK_ITEMS = 256  # test items run alone and in batches of 16 before an int8 copy ships
EXPORTER = "torchscript"  # chosen by benchmarks/graph_variants.py (items/s at export parity)


class OnnxEncoder(nn.Module):
    """The serving signature: (inputs, attention_mask int64) -> (embedding, roles, composition)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(inputs, attention_mask != 0)
        return out.embedding, out.roles, out.composition


def input_names(modality: str) -> tuple[str, str]:
    return ("input_ids" if modality == "text" else "components", "attention_mask")


def export_onnx(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path,
                exporter: str = EXPORTER, attention: str = "eager", role_table: bool = True) -> dict[str, str]:
    """The model as an ONNX file with dynamic batch and component axes; returns how it was made
    (`_export_graph`). role_table: a text model's component roles are looked up per token id in
    the graph (`AtomModel.tabulated_roles`) rather than computed by the role MLP on every token."""
    with model.tabulated_roles() if role_table else contextlib.nullcontext(False) as tabulated:
        graph = _export_graph(model, example, path, exporter, attention)
    if model.config.head == "atom":
        graph["roles"] = "table" if tabulated else "mlp"
    return graph


def _export_graph(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path,
                  exporter: str, attention: str) -> dict[str, str]:
    """exporter "torchscript" (the default) writes a pretrained backbone's attention in its eager form
    (matmul, mask, softmax): on the default bundle that graph served 0.94 of the plain MiniLM
    graph's items/s against 0.83 for the dynamo exporter's graph with one sdpa call
    (benchmarks/results/graph_variants.md); attention "sdpa" keeps the one call the model runs.
    "dynamo": torch.export, attention as the model runs it (sdpa)."""
    config = model.config
    first, mask = input_names(config.modality)
    if exporter == "dynamo":
        _export_dynamo(model, example, path)
        return {"exporter": "dynamo", "attention": "sdpa" if config.backbone_config else "atom"}
    if exporter != "torchscript":
        raise ValueError(f"exporter must be torchscript or dynamo, got {exporter!r}")
    axes = {first: {0: "batch", 1: "components"}, mask: {0: "batch", 1: "components"},
            "embedding": {0: "batch"}, "roles": {0: "batch", 1: "components"}, "composition": {0: "batch"}}
    if attention not in ("eager", "sdpa"):
        raise ValueError(f"attention must be eager or sdpa, got {attention!r}")
    backbone = model.encoder.model.config if config.backbone_config else None
    before = backbone._attn_implementation if backbone is not None else None
    if backbone is not None:
        backbone._attn_implementation = attention  # read by the attention layers at each call
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            torch.onnx.export(OnnxEncoder(model).eval(), example, str(path), dynamo=False, opset_version=17,
                              input_names=[first, mask], output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                              do_constant_folding=True)
    finally:
        if backbone is not None:
            backbone._attn_implementation = before
    return {"exporter": "torchscript", "attention": attention if backbone is not None else "atom"}


def _export_dynamo(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    config = model.config
    batch = torch.export.Dim("batch")
    components = torch.export.Dim("components", max=config.max_components)
    program = torch.onnx.export(
        OnnxEncoder(model).eval(),
        example,
        dynamo=True,
        input_names=list(input_names(config.modality)),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={"inputs": {0: batch, 1: components}, "attention_mask": {0: batch, 1: components}},
        verbose=False,
    )
    # The exporter may give an inner value the same name as a graph output (aten.embedding is
    # named "embedding"), which ONNX Runtime rejects as a duplicate definition: rename the inner one.
    graph = program.model.graph
    output_ids = {id(value) for value in graph.outputs}
    for node in graph:
        for value in node.outputs:
            if value.name in OUTPUT_NAMES and id(value) not in output_ids:
                value.name = f"{value.name}_inner"
    program.save(str(path))


def optimise(source: Path, target: Path) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def parity_batches(split: Split, modality: str, max_components: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """batch 1, a middle batch of mixed lengths with padding, and the maximum length."""
    dtype = torch.long if modality == "text" else torch.float32
    inputs = torch.as_tensor(split.inputs, dtype=dtype)
    mask = torch.as_tensor(split.mask, dtype=torch.long)
    lengths = mask.sum(1)
    order = torch.argsort(lengths)
    mixed = order[torch.linspace(0, len(order) - 1, min(7, len(order))).long()]  # short to long
    longest = int(lengths[mixed].max())
    cases = {
        "batch 1": (inputs[:1, : max(int(lengths[0]), 1)], mask[:1, : max(int(lengths[0]), 1)]),
        "mixed lengths with padding": (inputs[mixed, :longest], mask[mixed, :longest]),
        "maximum length": (inputs[:3, :max_components], mask[:3, :max_components]),
    }
    if modality == "text" and inputs.shape[1] < max_components:
        # a backbone bundle reads longer texts than it trained on: each row's tokens repeated to
        # the full length (the values need not make sense, the positions must all be run)
        rows = [np.resize(row[: max(int(n), 1)].numpy(), max_components) for row, n in zip(inputs[:3], lengths[:3])]
        cases["maximum length"] = (torch.as_tensor(np.stack(rows)), torch.ones(len(rows), max_components, dtype=torch.long))
    if modality == "numeric":
        # numeric items all have the full length: cut rows to lengths 1..n and put junk under
        # the padding, which must not leak (the mask, not the values, defines padding)
        padded_inputs, padded_mask = cases["mixed lengths with padding"]
        rows, n = padded_mask.shape
        keep = torch.arange(n)[None, :] < torch.linspace(1, n, rows).round().long()[:, None]  # (rows, n)
        cases["mixed lengths with padding"] = (padded_inputs + (~keep)[..., None] * 3.0, keep.long())
    return cases


def check_parity(model: nn.Module, onnx_path: Path, cases: dict, tolerance: float) -> dict[str, float]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = input_names(model.config.modality)
    wrapper = OnnxEncoder(model).eval()
    worst: dict[str, float] = {}
    for label, (inputs, mask) in cases.items():
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(inputs, mask)]
        got = session.run(list(OUTPUT_NAMES), {names[0]: inputs.numpy(), names[1]: mask.numpy()})
        diff = max(float((np.abs(g - e) / np.maximum(1.0, np.abs(e))).max()) for g, e in zip(got, expected))
        worst[label] = diff
        if not diff <= tolerance:
            raise ExportError(f"{onnx_path.name}: {label}: max |onnx - torch| / max(1, |torch|) = {diff:.2e} "
                              f"> {tolerance:.0e}")
    return worst


def write_training_atoms(model: nn.Module, data: Dataset, path: Path,
                         states: torch.Tensor | None = None, texts: bool = True) -> dict[str, np.ndarray]:
    """The reference atoms: every training item; ids are training-split row indices. `states`: a
    frozen backbone's states of the training split, when already computed (fp16: the bank then
    differs from what the ONNX model computes by about 1e-3). `texts`: keep each item's text
    beside them (atoms.metadata.jsonl), so neighbours show what they are."""
    pred = predict(model, data.train, model.config.modality, torch.device("cpu"), states=states)
    bank = {
        "embedding": pred["embedding"].astype(np.float32),
        "radius": pred["composition"][:, COMPOSITION_FIELDS.index("radius")].astype(np.float32),
        "charge": pred["composition"][:, COMPOSITION_FIELDS.index("charge")].astype(np.float32),
        "id": np.arange(len(data.train.labels), dtype=np.int64),
        "label": data.train.labels.astype(np.int64),
    }
    np.savez(path, **bank)
    if texts and data.train.texts is not None:
        lines = [(json.dumps({"text": text}, ensure_ascii=False) + "\n").encode() for text in data.train.texts]
        (path.parent / ATOMS_METADATA_FILE).write_bytes(b"".join(lines))
    bank["roles"] = pred["roles"]
    return bank


def tensor_specs(config, k: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    first, mask = input_names(config.modality)
    if config.modality == "text":
        inputs = [TensorSpec(name=first, dtype="int64", shape=["batch", "components"])]
    else:
        inputs = [TensorSpec(name=first, dtype="float32", shape=["batch", "components", config.component_dim])]
    inputs.append(TensorSpec(name=mask, dtype="int64", shape=["batch", "components"]))
    outputs = [
        TensorSpec(name="embedding", dtype="float32", shape=["batch", k]),
        TensorSpec(name="roles", dtype="float32", shape=["batch", "components", 3]),
        TensorSpec(name="composition", dtype="float32", shape=["batch", len(COMPOSITION_FIELDS)]),
    ]
    return inputs, outputs


def bundle_name(dataset: str) -> str:
    return Path(dataset.split(":", 1)[1]).stem if ":" in dataset else dataset


def export_bundle(run_dir: Path | str, out_dir: Path | str, *, fp16: bool = False, int8: bool = False,
                  report: bool = True, train_states: torch.Tensor | None = None, texts: bool = True) -> Path:
    """Turn a run folder into a verified bundle folder; returns out_dir. `train_states`: a frozen
    backbone's states of the training split, to build the bank without recomputing them.
    `texts`: keep the training texts beside the bundle's atoms (neighbours then carry them)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model = load_model(run_dir)
    config = model.config
    if config.head != "atom":
        raise ExportError(f"{run_dir}: only atom models can be exported (this run has head={config.head!r})")
    info = load_json(run_dir / "run.json")
    data = load_run_dataset(run_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write_bundle_files(model, run_dir, data, info, staging, fp16=fp16, int8=int8, report=report, texts=texts,
                           train_states=train_states)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed export leaves nothing behind
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    log.info("bundle written to %s", out_dir)
    return out_dir


def write_bundle_files(model, run_dir: Path, data: Dataset, info: dict, staging: Path, *, fp16: bool, int8: bool,
                       texts: bool = True,
                       report: bool, train_states: torch.Tensor | None = None) -> None:
    """Everything of the bundle into `staging`, the manifest last (it checksums the rest)."""
    config = model.config
    cases = parity_batches(data.train, config.modality, config.max_components)
    raw = staging / "encoder.raw.onnx"
    graph = export_onnx(model, cases["mixed lengths with padding"], raw)
    optimise(raw, staging / "encoder.onnx")
    raw.unlink()
    parity = check_parity(model, staging / "encoder.onnx", cases, PARITY_TOLERANCE)
    log.info("ONNX parity (max abs diff): %s", parity)
    graph = {**graph, "optimisation": "basic", "parity_max": max(parity.values())}
    precisions: dict[str, dict[str, float]] = {}
    if fp16:
        write_fp16(staging / "encoder.onnx", staging / "encoder.fp16.onnx")
        log.info("fp16 parity: %s", check_parity(model, staging / "encoder.fp16.onnx", cases, FP16_TOLERANCE))
    if int8:
        names = input_names(config.modality)
        write_int8(staging / "encoder.onnx", staging / "encoder.int8.onnx", data.train, names)
        precisions["int8"] = measure_precision(model, staging / "encoder.onnx", staging / "encoder.int8.onnx", data.test, names)
        # recorded: the service batches this copy only if no input's answer moved with its batch
        # (else it runs it one input per call, slower but never a different answer)
        invariance = batch_invariance(staging / "encoder.int8.onnx", data.test, names, items=BATCH_CHECK_ITEMS)
        if invariance["embedding"] > BATCH_TOLERANCE:
            log.warning("encoder.int8.onnx: %.0f of %.0f items' embeddings alone and in a batch differ by up to "
                        "%.2e > %.0e: the service will run it one input per call", invariance["items_off"],
                        invariance["items"], invariance["embedding"], BATCH_TOLERANCE)
        precisions["int8"].update(scheme=INT8_SCHEME, batch_max_abs_diff=invariance["embedding"],
                                  batch_items_checked=invariance["items"])
        log.info("int8 against fp32: %s", precisions["int8"])
    if data.tokenizer is not None:  # cut at the bundle's limit, which may be past the training texts' length
        tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
        tokenizer.enable_truncation(**{**(tokenizer.truncation or {}), "max_length": config.max_components})
        tokenizer.save(str(staging / "tokenizer.json"))
    bank = write_training_atoms(model, data, staging / "atoms.npz", train_states, texts=texts)
    bank["projection"] = write_projection(staging / PROJECTION_FILE, bank["embedding"])  # the explorer's map
    evaluation = load_json(run_dir / "evaluation.json") if (run_dir / "evaluation.json").exists() else None
    if report:
        write_bundle_report(staging / "report", run_dir, data, bank, evaluation)
    write_manifest(staging, config, data, info, parity, evaluation, run_dir, precisions, graph)


def write_manifest(staging: Path, config, data: Dataset, info: dict, parity: dict, evaluation: dict | None,
                   run_dir: Path, precisions: dict[str, dict[str, float]], graph: dict[str, str | float]) -> None:
    onnx_inputs, onnx_outputs = tensor_specs(config, config.embedding_dim)
    best = load_json(run_dir / "state.json")["best_val_accuracy"] if (run_dir / "state.json").exists() else None
    metrics = {"best_val_accuracy": best, **{k: v for k, v in (evaluation or {}).items() if isinstance(v, float)}}
    metrics.update({f"parity_{key.replace(' ', '_')}": value for key, value in parity.items()})
    created = dt.datetime.now(dt.timezone.utc)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=f"{bundle_name(data.name)}-atom",
        version=created.strftime("%Y.%m.%d.%H%M%S"),
        created_at=created.isoformat(timespec="seconds"),
        input=InputSpec(
            modality=config.modality,
            max_components=config.max_components,
            vocab_size=config.vocab_size if config.modality == "text" else 0,
            component_dim=config.component_dim if config.modality == "numeric" else 1,
            preprocess=data.preprocess,
            special_token_ids=list(config.special_token_ids),
            # neighbouring windows of a chunked text share an eighth of a window
            chunk_overlap=config.max_components // 8 if config.modality == "text" else 0,
            chunk_pooling=CHUNK_POOLING,
        ),
        onnx_inputs=onnx_inputs,
        onnx_outputs=onnx_outputs,
        embedding_dim=config.embedding_dim,
        role_names=list(ROLE_NAMES),
        composition_fields=list(COMPOSITION_FIELDS),
        label_names=list(data.label_names),
        potential=PotentialSpec(
            kind=config.potential,
            well_depth=config.well_depth,
            nonbonded_scale=config.nonbonded_scale,
            morse_alpha=config.morse_alpha,
            cutoff_widths=config.cutoff_widths,
            lj_force_cap_ratio=config.lj_force_cap_ratio,
            coulomb_strength=config.coulomb_strength,
            coulomb_screening=config.coulomb_screening,
            coulomb_softening=config.coulomb_softening,
            weight=config.potential_weight,
        ),
        radius_range=[config.r_min, config.r_max],
        training=TrainingSummary(
            dataset=data.name, backbone=config.backbone and Path(config.backbone).name, seed=info["options"]["seed"],
            epochs=info["options"]["epochs"], metrics=metrics,
        ),
        precisions=precisions,
        graph=graph,
        files=checksum_tree(staging),
    )
    manifest.write(staging)


def write_bundle_report(report_dir: Path, run_dir: Path, data: Dataset, bank: dict, evaluation: dict | None) -> None:
    from .report import write_report

    sample = slice(0, min(2000, len(data.train.labels)))
    tokenizer = data.tokenizer
    write_report(
        report_dir,
        title=f"{data.name} atom model",
        metrics_path=run_dir / "metrics.jsonl",
        bank_embedding=bank["embedding"],
        bank_radius=bank["radius"],
        bank_label=bank["label"],
        label_names=list(data.label_names),
        roles=bank["roles"][sample],
        mask=data.train.mask[sample],
        token_ids=data.train.inputs[sample] if data.modality == "text" else None,
        id_to_token=tokenizer.id_to_token if tokenizer is not None else None,
        preprocess=data.preprocess,
        evaluation=evaluation,
        projection=bank["projection"],
    )
