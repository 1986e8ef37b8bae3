"""The model backend: synchronous, NumPy in and NumPy out, no asyncio and no HTTP.

`prepare` turns raw request inputs into `Item`s (tokenize / patchify / validate) and `run`
turns a batch of items into `ItemResult`s: pad to the longest item, one ONNX Runtime call,
one vectorised neighbor search. The batcher calls `run` from its worker thread; ONNX Runtime
releases the GIL while it computes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from contract import preprocess
from contract.bundle import Bundle

from .inputs import NumericInputs, TextInputs
from .metrics import Metrics
from .neighbors import EMPTY, Neighbors, RankBy, ServedBank, load_served_bank

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("embedding", "roles", "composition")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class DeviceError(RuntimeError):
    """device=cuda was asked for and the CUDA execution provider does not work."""


@dataclass(frozen=True)
class Item:
    """One input, ready for the model."""

    components: np.ndarray  # text: (n,) int64 token ids; numeric: (n, f) float32, unscaled
    neighbors: int = 0  # how many bank atoms to return
    rank_by: RankBy = "distance"
    truncated: bool = False  # text cut to the model's maximum length

    @property
    def length(self) -> int:
        return int(self.components.shape[0])


@dataclass(frozen=True)
class ItemResult:
    embedding: np.ndarray  # (k,) float32
    roles: np.ndarray  # (n, 3) float32, rows sum to 1
    composition: np.ndarray  # (6,) float32, columns = manifest.composition_fields
    neighbors: Neighbors
    bank: ServedBank  # the bank the neighbors' rows index: the one the batch started with


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


class Runtime:
    def __init__(self, bundle: Bundle, *, device: str = "auto", precision: str = "auto",
                 max_components_per_input: int = 1024, metrics: Metrics | None = None,
                 bank: ServedBank | None = None, threads: int = 0):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.spec = bundle.manifest.input
        self.max_components_per_input = max_components_per_input
        self.metrics = metrics
        self.tokenizer = preprocess.load_tokenizer(bundle.tokenizer_path) if self.spec.modality == "text" else None
        self._special_ids = list(self.spec.special_token_ids)  # e.g. [CLS], [SEP]: attended to, no components
        self.inputs = (
            TextInputs(self.tokenizer, max_components_per_input, self.manifest.name, self._special_ids)
            if self.tokenizer is not None
            else NumericInputs(self.spec, max_components_per_input, self.manifest.name)
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
        composition = self.manifest.composition_fields
        self._radius_col, self._charge_col = composition.index("radius"), composition.index("charge")
        # Replaced whole by a bank reload (SIGHUP); each batch reads it once (see `run`).
        self.bank = bank if bank is not None else load_served_bank(bundle)
        log.info("model %s %s: %s on %s (onnxruntime %s), bank of %d atoms", self.manifest.name,
                 self.manifest.version, self.model_file, self.provider, ort.__version__, len(self.bank))

    # ---- preprocessing -------------------------------------------------------------------

    def prepare(self, inputs: Sequence[Any], *, neighbors: int = 0, rank_by: RankBy = "distance",
                field: str = "inputs", truncate: bool = True) -> list[Item]:
        """Validate raw inputs and turn them into items; `field` names them in error messages.

        CPU work (tokenizing up to megabytes): call it from a worker thread, not the event loop.
        """
        if isinstance(self.inputs, TextInputs):
            prepared = self.inputs.prepare(inputs, field, truncate)
        else:
            prepared = self.inputs.prepare(inputs, field)
        return [Item(components, neighbors, rank_by, truncated) for components, truncated in prepared]

    def component_positions(self, item: Item) -> list[int]:
        """Positions of the item's real components: all but the tokenizer's special tokens."""
        if not self._special_ids:
            return list(range(item.length))
        return np.flatnonzero(~np.isin(item.components, self._special_ids)).tolist()

    def token_strings(self, item: Item) -> list[str] | None:
        """What each component is, for display: token text (text) or None (numeric, use the index)."""
        if self.tokenizer is None:
            return None
        return [self.tokenizer.id_to_token(int(i)) or "" for i in item.components]

    # ---- inference -----------------------------------------------------------------------

    def pad(self, items: Sequence[Item]) -> dict[str, np.ndarray]:
        """Pad a batch to its longest item: values (B, n[, f]) and attention_mask (B, n) int64."""
        n = max(item.length for item in items)
        values = np.zeros((len(items), n, *items[0].components.shape[1:]), dtype=self._values_dtype)
        mask = np.zeros((len(items), n), dtype=np.int64)
        for row, item in enumerate(items):
            values[row, : item.length] = item.components
            mask[row, : item.length] = 1
        return dict(zip(self._input_names, (values, mask)))

    def infer(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """embedding (B, k), roles (B, n, 3), composition (B, 6), all float32."""
        outputs = self.session.run(list(OUTPUT_NAMES), feeds)
        return tuple(np.asarray(out, dtype=np.float32) for out in outputs)  # fp16 graphs may return half

    def infer_items(self, items: Sequence[Item]) -> tuple[np.ndarray, Sequence[np.ndarray], np.ndarray]:
        """embedding (B, k), roles (B, n, 3) or B arrays (n_i, 3), composition (B, 6): one padded
        call, or one call per input for a copy that is not batch-invariant."""
        if not self.per_input:
            return self.infer(self.pad(items))
        outputs = [self.infer(self.pad([item])) for item in items]
        return (np.concatenate([out[0] for out in outputs]), [out[1][0] for out in outputs],
                np.concatenate([out[2] for out in outputs]))

    def run(self, items: Sequence[Item], *, record: bool = True) -> list[ItemResult]:
        """The batch's results, in order; `record=False` keeps it out of the metrics (warm-up)."""
        started = time.perf_counter()
        bank = self.bank  # one bank for the whole batch, even if a reload swaps it meanwhile
        embedding, roles, composition = self.infer_items(items)
        searched = time.perf_counter()
        counts = [item.neighbors for item in items]
        if any(counts):
            neighbors = bank.search(embedding, composition[:, self._radius_col], composition[:, self._charge_col],
                                    counts, [item.rank_by for item in items])
        else:
            neighbors = [EMPTY] * len(items)
        if self.metrics is not None and record:
            self.metrics.inference.observe(searched - started)
            if any(counts):
                self.metrics.neighbor_search.observe(time.perf_counter() - searched)
            self.metrics.items_atomized.inc(len(items))
        return [
            ItemResult(embedding[i], roles[i][: item.length], composition[i], neighbors[i], bank)
            for i, item in enumerate(items)
        ]

    def warm_up(self) -> None:
        """One short and one longest input through the model and the neighbor search.

        The first run allocates memory and (on CUDA) picks kernels; doing it before /readyz says
        ready keeps that cost off the first user request, and proves the whole path works.
        """
        longest = min(self.spec.max_components, self.max_components_per_input)
        items = [Item(self._blank(1), neighbors=1), Item(self._blank(longest), neighbors=1, rank_by="energy")]
        results = self.run(items, record=False)
        if not all(np.isfinite(r.embedding).all() for r in results):
            raise RuntimeError("warm-up produced a non-finite embedding")

    def _blank(self, n: int) -> np.ndarray:
        if self.spec.modality == "text":
            return np.ones(n, dtype=np.int64)  # any id below vocab_size will do
        return np.zeros((n, self.spec.component_dim), dtype=np.float32)
