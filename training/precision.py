"""Reduced-precision copies of an exported encoder, and what each costs against fp32.

- fp16 (for GPUs): every weight and activation in half precision, float32 at the edges.
- int8 (for CPUs): **static** quantization. Weights per output channel; activations with one
  scale per tensor fixed at export from the training split (calibration), so an input's answer
  never depends on the other inputs of its batch. Dynamic quantization, the scheme of earlier
  bundles, computes each activation's scale over the whole batch at run time: one text's
  embedding moved by up to 0.03 with its neighbours in the batch (issue 22). The MatMuls that read
  a GELU output (the feed-forward down projections) stay fp32: their inputs have outliers that
  a per-tensor scale cannot hold (cosine to fp32 0.929 with them quantized, 0.994 without, on
  MiniLM; `benchmarks/int8_schemes.py`).

`batch_invariance` measures the property itself: the same items alone, in one mixed batch and in
that batch reordered.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from contract.bundle import BATCH_TOLERANCE

from .data import Split

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("embedding", "roles", "composition")
CALIBRATION_ITEMS = 512  # training items whose activation ranges fix the int8 scales
INT8_SCHEME = "static"  # recorded in the manifest: the service batches a static copy freely


def write_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: clients send and receive float32 whatever copy the service runs
    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))


def model_feeds(names: tuple[str, str], split: Split, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The rows as the ONNX model takes them, cut to their longest item."""
    n = max(int(split.mask[rows].sum(1).max()), 1)
    values = split.inputs[rows, :n].astype(np.int64 if names[0] == "input_ids" else np.float32)
    return {names[0]: values, names[1]: split.mask[rows, :n].astype(np.int64)}


def _quiet_quantizer():
    """The quantizer logs a line per tensor it leaves alone, on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    return lambda: root.setLevel(level)


def write_int8_dynamic(source: Path, target: Path) -> None:
    """The earlier scheme, kept for the comparison benchmark: activation scales per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    restore = _quiet_quantizer()
    try:
        quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        restore()


def quantizable_matmuls(model_path: Path) -> tuple[list[str], list[str]]:
    """(MatMuls with a constant weight, those of them that read a GELU output)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {output: node for node in graph.node for output in node.output}
    weighted = [n for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in constants]
    after_gelu = [n.name for n in weighted if _gelu_output(n.input[0], producer)]
    return [n.name for n in weighted], after_gelu


def _gelu_output(name: str, producer: dict, depth: int = 3) -> bool:
    """Whether a value is a GELU's output: a Gelu node (the dynamo exporter), or the erf form
    x * 0.5 * (1 + erf(x / sqrt 2)) that the TorchScript exporter writes, whose last Mul has an Erf
    within `depth` nodes above it (only GELU uses Erf in these models)."""
    node = producer.get(name)
    if node is None or node.op_type not in ("Gelu", "Mul"):
        return False
    if node.op_type == "Gelu":
        return True
    frontier = [node]
    for _ in range(depth):
        frontier = [producer[i] for n in frontier for i in n.input if i in producer]
        if any(n.op_type == "Erf" for n in frontier):
            return True
    return False


def write_int8(source: Path, target: Path, calibration: Split, names: tuple[str, str],
               items: int = CALIBRATION_ITEMS, batch_size: int = 32, gelu_inputs_fp32: bool = True) -> None:
    """Static int8 (see the module docstring), calibrated on the first `items` of `calibration`;
    `gelu_inputs_fp32=False` quantizes the MatMuls after GELU too (the benchmark's comparison)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rows = np.arange(min(items, len(calibration.labels)))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(model_feeds(names, calibration, rows[s : s + batch_size]) for s in range(0, len(rows), batch_size))

        def get_next(self):
            return next(self.batches, None)

    prepared = target.with_name(target.stem + ".prepared.onnx")
    restore = _quiet_quantizer()
    try:
        # the quantizer wants shapes inferred; the exporter's symbolic shapes defeat ORT's own
        # symbolic inference, so ONNX's plain shape inference does it
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        include, exclude = quantizable_matmuls(prepared)
        exclude = exclude if gelu_inputs_fp32 else []
        # QOperator (QLinearMatMul): fused int8 kernels on the CPU; uint8 activations with a zero
        # point take the asymmetric ranges after LayerNorm; MinMax over real items (the
        # histogram methods of ORT 1.31 fail on batches of different lengths)
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=include,
                        nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax)
    finally:
        restore()
        prepared.unlink(missing_ok=True)
    log.info("int8: %d MatMuls quantized, %d after GELU kept fp32", len(include) - len(exclude), len(exclude))


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batch_invariance(path: Path, split: Split, names: tuple[str, str], items: int = 16, batch: int = 16) -> dict[str, float]:
    """Max |difference| of each output between an item run alone and inside batches of `batch`
    mixed-length items (spread over the split's lengths, shuffled; then each batch reversed), the
    role changes (argmax) seen, and how many items' embeddings moved at all or by more than 1e-5."""
    session = cpu_session(path)
    lengths = split.mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    rows = order[np.unique(np.linspace(0, len(order) - 1, min(items, len(order))).round().astype(int))]
    rows = np.random.default_rng(0).permutation(rows)
    alone = {int(row): dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), model_feeds(names, split, np.array([row])))))
             for row in rows}
    worst = {"embedding": 0.0, "roles": 0.0, "composition": 0.0, "role_changes": 0.0, "items": float(len(rows)),
             "items_changed": 0.0, "items_off": 0.0}
    changed: dict[int, float] = {}
    for start in range(0, len(rows), batch):
        for batch_rows in (rows[start : start + batch], rows[start : start + batch][::-1]):
            outputs = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), model_feeds(names, split, batch_rows))))
            for position, row in enumerate(batch_rows):
                single = alone[int(row)]
                n = single["roles"].shape[1]
                moved = float(np.abs(outputs["embedding"][position] - single["embedding"][0]).max())
                changed[int(row)] = max(changed.get(int(row), 0.0), moved)
                worst["embedding"] = max(worst["embedding"], moved)
                worst["composition"] = max(worst["composition"], float(np.abs(outputs["composition"][position] - single["composition"][0]).max()))
                batched_roles = outputs["roles"][position, :n]
                worst["roles"] = max(worst["roles"], float(np.abs(batched_roles - single["roles"][0]).max()))
                worst["role_changes"] += float((batched_roles.argmax(-1) != single["roles"][0].argmax(-1)).sum())
    worst["items_changed"] = float(sum(value > 0 for value in changed.values()))
    worst["items_off"] = float(sum(value > BATCH_TOLERANCE for value in changed.values()))
    return worst


@torch.no_grad()
def measure_precision(model: nn.Module, fp32_path: Path, copy_path: Path, split: Split, names: tuple[str, str],
                      limit: int = 1000, batch_size: int = 64) -> dict[str, float]:
    """A reduced-precision copy against fp32 on held-out items (the test split at export, never
    used for a choice): cosine of the embeddings, and the classifier's accuracy on each copy's outputs."""
    rows = np.arange(min(limit, len(split.labels)))
    predicted: dict[str, list[np.ndarray]] = {"fp32": [], "copy": []}
    embeddings: dict[str, list[np.ndarray]] = {"fp32": [], "copy": []}
    for key, path in (("fp32", fp32_path), ("copy", copy_path)):
        session = cpu_session(path)
        for start in range(0, len(rows), batch_size):
            feeds = model_feeds(names, split, rows[start : start + batch_size])
            embedding, _, composition = session.run(list(OUTPUT_NAMES), feeds)
            logits, _ = model.classify(torch.as_tensor(embedding, dtype=torch.float32), torch.as_tensor(composition, dtype=torch.float32))
            predicted[key].append(logits.argmax(1).numpy())
            embeddings[key].append(np.asarray(embedding, dtype=np.float32))
    a, b = np.concatenate(embeddings["fp32"]), np.concatenate(embeddings["copy"])
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    labels = split.labels[rows]
    return {
        "items": float(len(rows)),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "accuracy_fp32": float((np.concatenate(predicted["fp32"]) == labels).mean()),
        "accuracy": float((np.concatenate(predicted["copy"]) == labels).mean()),
    }
