"""Input preprocessing shared by training and the serving service.

Everything here is pure NumPy plus the Hugging Face ``tokenizers`` library, and deliberately
does not import torch: the serving image installs only the base dependencies (DESIGN section 4),
and training must turn raw inputs into components exactly the way serving will. Keeping a single
implementation of these steps is what guarantees that.

- ``patchify`` / ``unpatchify``: images (N, H, W) <-> patch components (N, n, ph*pw).
- ``load_tokenizer`` / ``tokenize``: a saved ``tokenizer.json`` -> token ids per text. The
  truncation length is stored inside ``tokenizer.json`` itself, so the file alone reproduces the
  encoding used in training; padding is left to the caller.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # imported lazily so that numeric-only callers need no tokenizers install
    from tokenizers import Tokenizer

__all__ = ["PAD_ID", "patchify", "unpatchify", "load_tokenizer", "tokenize", "encode", "without_padding"]

# Token id 0 is padding in every tokenizer of this project ("[PAD]").
PAD_ID = 0


def _check_patch_shape(image_shape: tuple[int, int], patch_shape: Sequence[int]) -> tuple[int, int]:
    if len(patch_shape) != 2 or any(int(p) < 1 for p in patch_shape):
        raise ValueError(f"patch_shape must be two positive ints, got {tuple(patch_shape)}")
    ph, pw = (int(p) for p in patch_shape)
    h, w = image_shape
    if h % ph or w % pw:
        raise ValueError(
            f"image shape {h}x{w} is not divisible by patch shape {ph}x{pw}"
        )
    return ph, pw


def patchify(images: np.ndarray, patch_shape: tuple[int, int]) -> np.ndarray:
    """Cut images into non-overlapping patches, one component per patch.

    images: (N, H, W) -> (N, (H/ph)*(W/pw), ph*pw). Patches are listed in row-major order over
    the patch grid and each patch is flattened row-major, so for 2x2 patches of an 8x8 image
    component 1 holds pixels (0,2), (0,3), (1,2), (1,3). The dtype is preserved.
    Raises ValueError naming the shapes if H or W is not divisible by the patch size.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"patchify expects images of shape (N, H, W), got shape {images.shape}")
    n, h, w = images.shape
    ph, pw = _check_patch_shape((h, w), patch_shape)
    gh, gw = h // ph, w // pw
    # (N, gh, ph, gw, pw) -> (N, gh, gw, ph, pw): group the pixels of each patch together.
    grid = images.reshape(n, gh, ph, gw, pw).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(grid.reshape(n, gh * gw, ph * pw))


def unpatchify(
    patches: np.ndarray, image_shape: tuple[int, int], patch_shape: tuple[int, int]
) -> np.ndarray:
    """Inverse of ``patchify``: (N, (H/ph)*(W/pw), ph*pw) -> (N, H, W).

    Useful for showing which image region a component (and its role) covers.
    """
    patches = np.asarray(patches)
    h, w = (int(s) for s in image_shape)
    ph, pw = _check_patch_shape((h, w), patch_shape)
    gh, gw = h // ph, w // pw
    if patches.ndim != 3 or patches.shape[1:] != (gh * gw, ph * pw):
        raise ValueError(
            f"patches of shape {patches.shape} do not match image {h}x{w} with patches {ph}x{pw} "
            f"(expected (N, {gh * gw}, {ph * pw}))"
        )
    n = patches.shape[0]
    grid = patches.reshape(n, gh, gw, ph, pw).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(grid.reshape(n, h, w))


def load_tokenizer(path: str | os.PathLike[str]) -> "Tokenizer":
    """Load a tokenizer saved with ``Tokenizer.save`` (a ``tokenizer.json`` file)."""
    from tokenizers import Tokenizer

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return Tokenizer.from_file(path)


def tokenize(tokenizer: "Tokenizer", texts: Sequence[str]) -> list[list[int]]:
    """Token ids for each text, without padding.

    Truncation is whatever the tokenizer carries (saved in ``tokenizer.json``). Special tokens
    are whatever its post-processor adds: [CLS] ... [SEP] for a pretrained backbone's tokenizer
    (the model needs them; the manifest lists their ids, which are not components), nothing for
    the project's own WordPiece tokenizers. An empty list of ids is possible (e.g. an empty
    string with the project's tokenizers); callers decide what to do with it.

    Id 0 is reserved for padding, so an id 0 produced by the text itself (the literal "[PAD]"
    in a vocabulary-based tokenizer) is removed: padding never appears inside a sequence, and
    masks can be derived from lengths alone.
    """
    return [ids for ids, _, _ in encode(tokenizer, texts)]


def without_padding(encoding) -> tuple[list[int], list[tuple[int, int]]]:
    """An encoding's ids and character offsets, with any id 0 (a literal "[PAD]" in the text) left out."""
    ids, offsets = encoding.ids, encoding.offsets
    if PAD_ID in ids:
        kept = [j for j, i in enumerate(ids) if i != PAD_ID]
        return [ids[j] for j in kept], [offsets[j] for j in kept]
    return ids, offsets


def encode(tokenizer: "Tokenizer", texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]], bool]]:
    """``tokenize``, with each id's character offsets [start, end) in the text ((0, 0) for an added
    special token), and for each text whether the tokenizer's truncation cut it."""
    if isinstance(texts, str):
        # A bare string would otherwise be tokenized character by character.
        raise TypeError("tokenize expects a list of strings, got a single str")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"tokenize: texts[{i}] is {type(t).__name__}, not str")
    if not texts:
        return []
    # One text (nearly every request): `encode` costs half of what `encode_batch` spends starting its pool.
    encodings = ([tokenizer.encode(texts[0], add_special_tokens=True)] if len(texts) == 1
                 else tokenizer.encode_batch(texts, add_special_tokens=True))
    return [(*without_padding(enc), bool(enc.overflowing)) for enc in encodings]
