"""A bundle's model, run: the one place that chooses the copy, opens the ONNX Runtime session,
validates and prepares inputs, pads a batch and runs it.

The service (`service/runtime.py`, which adds the bank search and the metrics) and
`atomize index` (`indexing/`) both run a bundle through a `ModelRunner`, so a bank atom and a
served query of the same input, on the same device, come from the same copy (int8 on a CPU when
the bundle has it), prepared the same way and refused for the same reasons. Synchronous, NumPy
in and out: no asyncio, no HTTP. ONNX Runtime releases the GIL while it computes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from . import preprocess
from .bundle import Bundle
from .inputs import NumericInputs, Prepared, TextInputs

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("embedding", "roles", "composition")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class DeviceError(RuntimeError):
    """device=cuda or a precision was asked for and cannot be had here."""


def session_options(threads: int = 0) -> ort.SessionOptions:
    """ONNX Runtime's options; `threads` intra-op threads (0: ONNX Runtime's default, one per core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # ONNX Runtime's threads spin after each run by default, holding the cores that the event
    # loop, tokenization, the neighbor search and JSON need next; without spinning a 2-core CPU
    # served a batch of 32 in ~4 ms instead of ~6 ms and the search stopped stalling.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(bundle: Bundle, device: str, precision: str = "auto",
                   threads: int = 0) -> tuple[ort.InferenceSession, str, str]:
    """(session, provider, model file): CUDA when asked for or available and working, else CPU.

    precision "auto" takes the bundle's copy made for the device: fp16 on CUDA, int8 on the CPU
    (each only when the bundle has it), else fp32; "fp32", "fp16" or "int8" takes that copy or
    refuses to start. Inputs and outputs are float32 / int64 whatever the copy.
    """
    if precision != "auto" and bundle.model_path(precision) is None:
        raise DeviceError(f"precision={precision} was asked for but the bundle has no {precision} model "
                          f"(it has {', '.join(bundle.precisions())})")
    if device in ("auto", "cuda") and CUDA in ort.get_available_providers():
        # ONNX Runtime falls back to CPU by itself when the CUDA libraries or the GPU are
        # missing; the providers it ended up with say whether CUDA really works.
        path = bundle.model_path(precision) if precision != "auto" else (bundle.fp16_onnx_path or bundle.onnx_path)
        try:
            session = ort.InferenceSession(str(path), session_options(threads), providers=[CUDA, CPU])
            if session.get_providers()[0] == CUDA:
                return session, CUDA, path.name
            log.info("the CUDA execution provider did not start (ONNX Runtime said why above); using CPU")
        except Exception as exc:  # onnxruntime raises its own exception types
            log.warning("CUDA execution provider failed (%s); using CPU", str(exc).splitlines()[0])
    if device == "cuda":
        raise DeviceError("device=cuda was asked for but the CUDA execution provider is not working here")
    path = bundle.model_path(precision) if precision != "auto" else (bundle.int8_onnx_path or bundle.onnx_path)
    return ort.InferenceSession(str(path), session_options(threads), providers=[CPU]), CPU, path.name


class ModelRunner:
    """One bundle's model on one device: `prepare_components` of raw inputs, `infer` them.

    `max_components_per_input`: the caller's own limit on an input's components (the service's
    setting), below the model's when lower; a longer text is cut to it (or refused).
    """

    def __init__(self, bundle: Bundle, *, device: str = "auto", precision: str = "auto", threads: int = 0,
                 max_components_per_input: int | None = None):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.spec = bundle.manifest.input
        self.max_components_per_input = max_components_per_input or self.spec.max_components
        self.tokenizer = preprocess.load_tokenizer(bundle.tokenizer_path) if self.spec.modality == "text" else None
        self.special_ids = list(self.spec.special_token_ids)  # e.g. [CLS], [SEP]: attended to, no components
        self.inputs = (
            TextInputs(self.tokenizer, self.max_components_per_input, self.manifest.name, self.special_ids)
            if self.tokenizer is not None
            else NumericInputs(self.spec, self.max_components_per_input, self.manifest.name)
        )
        self.session, self.provider, self.model_file = create_session(bundle, device, precision, threads)
        self.precision = bundle.precision_of(self.model_file)
        # A copy whose answer for an input depends on the rest of its batch (the dynamic int8 of
        # older bundles) runs one input per call: the batcher may group inputs however the
        # traffic falls, the answers may not change with it.
        self.per_input = not bundle.batch_invariant(self.precision)
        if self.per_input:
            log.warning("%s quantizes activations per batch: it runs one input per call (re-export the "
                        "bundle for static int8, which batches)", self.model_file)
        self._input_names = [spec.name for spec in self.manifest.onnx_inputs]  # (values, attention_mask)
        self._values_dtype = np.int64 if self.spec.modality == "text" else np.float32

    def prepare_components(self, values: Sequence[Any], *, field: str = "inputs",
                           truncate: bool = True) -> list[Prepared]:
        """One `Prepared` per raw input; raises contract.inputs.InputProblem for the first input
        the model cannot take. CPU work (tokenizing up to megabytes)."""
        if isinstance(self.inputs, TextInputs):
            return self.inputs.prepare(values, field, truncate)
        return self.inputs.prepare(values, field)

    def prepare_chunks(self, values: Sequence[Any], *, field: str = "inputs", overlap: int | None = None,
                       max_chunks: int = 16) -> list[list[Prepared]]:
        """Each raw input as its windows (one for a text that fits, and for any numeric input):
        texts past the model's length are read whole in windows sharing `overlap` tokens (the
        bundle's chunk_overlap by default) instead of being cut."""
        if isinstance(self.inputs, TextInputs):
            overlap = self.spec.chunk_overlap if overlap is None else overlap
            return self.inputs.chunk(values, field, overlap, max_chunks)
        return [[item] for item in self.inputs.prepare(values, field)]

    def pad(self, components: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Pad a batch to its longest input: values (B, n[, f]) and attention_mask (B, n) int64."""
        n = max(len(c) for c in components)
        values = np.zeros((len(components), n, *components[0].shape[1:]), dtype=self._values_dtype)
        mask = np.zeros((len(components), n), dtype=np.int64)
        for row, c in enumerate(components):
            values[row, : len(c)] = c
            mask[row, : len(c)] = 1
        return dict(zip(self._input_names, (values, mask)))

    def run_feeds(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] = OUTPUT_NAMES) -> list[np.ndarray]:
        """One ONNX Runtime call on padded feeds; float32 outputs (fp16 graphs may return half)."""
        return [np.asarray(out, dtype=np.float32) for out in self.session.run(list(outputs), feeds)]

    def infer(self, components: Sequence[np.ndarray],
              outputs: Sequence[str] = OUTPUT_NAMES) -> tuple[Sequence[np.ndarray], ...]:
        """The named outputs for a batch, in input order: embedding (B, k), roles (B, n, 3) or B
        arrays (n_i, 3), composition (B, 6). One padded call, or one call per input for a copy
        that is not batch-invariant."""
        if not self.per_input:
            return tuple(self.run_feeds(self.pad(components), outputs))
        each = [self.run_feeds(self.pad([c]), outputs) for c in components]
        return tuple(np.concatenate([out[i] for out in each]) if name != "roles" else [out[i][0] for out in each]
                     for i, name in enumerate(outputs))

    def blank(self, n: int) -> np.ndarray:
        """Components of an input of length n that any model of this modality takes (warm-up)."""
        if self.spec.modality == "text":
            return np.ones(n, dtype=np.int64)  # any id below vocab_size will do
        return np.zeros((n, self.spec.component_dim), dtype=np.float32)
