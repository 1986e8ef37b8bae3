"""A bundle's encoder as a plain function: raw inputs in, embedding, radius and charge out.

Used by `atomize index`, on one machine or inside Ray actors: ONNX Runtime only, no torch, no
HTTP. Inputs are prepared as the service prepares them (the tokenizer saved in the bundle, its
truncation included; numeric arrays per the manifest's preprocess spec), so a bank atom and a
served query of the same input get the same embedding.

Bundle loading and tokenization come from the bundle contract in this package
(`contract/bundle.py`, `contract/preprocess.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from contract import preprocess
from contract.bundle import Bundle, load_bundle

log = logging.getLogger(__name__)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@dataclass(frozen=True)
class Atoms:
    """Outputs for a batch of inputs, in input order."""

    embedding: np.ndarray  # (B, k) float32
    radius: np.ndarray  # (B,) float32
    charge: np.ndarray  # (B,) float32


class Atomizer:
    def __init__(self, bundle: Bundle | Path | str, *, device: str = "cpu", threads: int | None = None,
                 batch_size: int = 64):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        manifest = self.bundle.manifest
        self.spec = manifest.input
        self.batch_size = batch_size
        self.tokenizer = preprocess.load_tokenizer(self.bundle.tokenizer_path) if self.spec.modality == "text" else None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = [CUDA, CPU] if device == "cuda" and CUDA in ort.get_available_providers() else [CPU]
        self.session = ort.InferenceSession(str(self.bundle.onnx_path), options, providers=providers)
        self._input_names = [spec.name for spec in manifest.onnx_inputs]
        fields = manifest.composition_fields
        self._radius, self._charge = fields.index("radius"), fields.index("charge")

    def prepare(self, values: Sequence[Any]) -> list[np.ndarray | str]:
        """Each value as model components, or a string saying why the model cannot take it."""
        if self.spec.modality == "text":
            texts = [value if isinstance(value, str) else None for value in values]
            ids = preprocess.tokenize(self.tokenizer, [text or "" for text in texts])
            out: list[np.ndarray | str] = []
            for text, row in zip(texts, ids):
                if text is None:
                    out.append("this model takes text, the value is an array")
                elif not row:
                    out.append("the text has no tokens this model knows")
                else:
                    out.append(np.asarray(row, np.int64))
            return out
        return [self._numeric(value) for value in values]

    def _numeric(self, value: Any) -> np.ndarray | str:
        if isinstance(value, str):
            return "this model takes arrays of numbers, the value is text"
        array = np.asarray(value, dtype=np.float32)
        options, f = self.spec.preprocess, self.spec.component_dim
        if options.get("kind") == "patches":
            height, width = options["image_shape"]
            if array.size != height * width:
                return f"has {array.size} values; this model takes {height} x {width} images"
            return preprocess.patchify(array.reshape(1, height, width), tuple(options["patch_shape"]))[0]
        if array.ndim == 1 and f == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != f:
            return f"has shape {array.shape}; this model takes (n, {f}) arrays"
        if array.shape[0] > self.spec.max_components:
            return f"has {array.shape[0]} components; this model takes at most {self.spec.max_components}"
        return array

    def run(self, components: Sequence[np.ndarray]) -> Atoms:
        """Atoms for prepared inputs; batches group similar lengths to cut padding."""
        count = len(components)
        dim = self.bundle.manifest.embedding_dim
        embedding = np.zeros((count, dim), np.float32)
        composition = np.zeros((count, len(self.bundle.manifest.composition_fields)), np.float32)
        order = np.argsort([len(c) for c in components], kind="stable")
        for start in range(0, count, self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = [components[i] for i in rows]
            out_embedding, out_composition = self.session.run(["embedding", "composition"], self._pad(batch))
            embedding[rows], composition[rows] = out_embedding, out_composition
        return Atoms(embedding, composition[:, self._radius].copy(), composition[:, self._charge].copy())

    def _pad(self, batch: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        n = max(len(c) for c in batch)
        dtype = np.int64 if self.spec.modality == "text" else np.float32
        values = np.zeros((len(batch), n, *batch[0].shape[1:]), dtype)
        mask = np.zeros((len(batch), n), np.int64)
        for row, item in enumerate(batch):
            values[row, : len(item)], mask[row, : len(item)] = item, 1
        return dict(zip(self._input_names, (values, mask)))

    def atomize(self, values: Sequence[Any]) -> tuple[Atoms, list[str | None]]:
        """Prepare and run: atoms for every value (zeros where it failed) and each value's problem."""
        prepared = self.prepare(values)
        problems = [item if isinstance(item, str) else None for item in prepared]
        good = [i for i, item in enumerate(prepared) if not isinstance(item, str)]
        dim = self.bundle.manifest.embedding_dim
        atoms = Atoms(np.zeros((len(values), dim), np.float32), np.zeros(len(values), np.float32),
                      np.zeros(len(values), np.float32))
        if good:
            found = self.run([prepared[i] for i in good])
            atoms.embedding[good], atoms.radius[good], atoms.charge[good] = found.embedding, found.radius, found.charge
        return atoms, problems
