"""Input preparation: raw inputs -> the components the model reads (synchronous, NumPy).

The one validator of the service's requests and of `atomize index`'s corpus rows (through
`contract.runner.ModelRunner`), so both refuse the same inputs and prepare them the same way.
In the service it runs in a worker thread, never on the event loop. Text is tokenized
with the bundle's `tokenizer.json`; a text longer than the model takes is cut (`truncate`) or
refused (413). Tokenizing a long text whole only to keep its first tokens would cost seconds for
megabytes, so a long text is first cut at a space after a prefix that already holds more tokens
than the model takes: the tokens before that space are the same as in the whole text (the
pre-tokenizer splits words at spaces, and every later word only adds tokens), so the result is
exactly the whole text's, truncated.

Numeric inputs become (n, f) float32 components (patches for images) and are checked for
NaN/Inf. A problem raises `InputProblem` naming the input; the service answers it 413 when
`too_large`, else 422, and the indexer refuses or skips the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import preprocess
from .bundle import InputSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

Prepared = tuple[np.ndarray, bool]  # components (n,) int64 or (n, f) float32, and "was cut"
_SPACES = (" ", "\n", "\t", "\r")


class InputProblem(ValueError):
    """An input the model cannot take; the message names it (e.g. `inputs[3]`) and says why."""

    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.message = message
        self.too_large = too_large  # past a size limit (HTTP 413), rather than malformed (422)


def cut_at_space(text: str, chars: int) -> str:
    """The text up to its last space before `chars` characters; the whole text if it has none."""
    if len(text) <= chars:
        return text
    space = max(text.rfind(c, 0, chars) for c in _SPACES)
    return text[:space] if space > 0 else text


class TextInputs:
    def __init__(self, tokenizer: "Tokenizer", max_components: int, model_name: str,
                 special_ids: Sequence[int] = ()):
        truncation = dict(tokenizer.truncation or {})
        self.max_components = min(max_components, truncation.get("max_length", max_components))
        # The service's limit may be below the model's: the tokenizer cuts to the lower one.
        truncation["max_length"] = self.max_components
        tokenizer.enable_truncation(**truncation)
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.special_ids = frozenset(special_ids)  # [CLS], [SEP]...: attended to, not components
        unk = getattr(tokenizer.model, "unk_token", None)
        self.unk_id = tokenizer.token_to_id(unk) if unk else None
        # A first prefix long enough for almost every text: 16 characters per token allowed.
        self.probe_chars = 16 * self.max_components

    def prepare(self, texts: Sequence[Any], field: str, truncate: bool) -> list[Prepared]:
        for i, value in enumerate(texts):
            if not isinstance(value, str):
                raise InputProblem(f"{field}[{i}] is not a string; model {self.model_name} takes text")
        encoded = self.encode(list(texts))
        out: list[Prepared] = []
        for i, (text, (ids, truncated)) in enumerate(zip(texts, encoded)):
            if truncated and not truncate:
                raise InputProblem(
                    f"{field}[{i}] is {len(text)} characters long and has more than {self.max_components} tokens, "
                    f"the most model {self.model_name} takes here; send \"truncate\": true to cut it", too_large=True)
            if all(token in self.special_ids for token in ids):  # no component at all
                if not text or self.unk_id is None:
                    raise InputProblem(f"{field}[{i}] is empty")
                # control characters only (the request schema refuses white space alone): the
                # unknown token, inside the special tokens
                ids = [*ids[: len(ids) // 2], self.unk_id, *ids[len(ids) // 2 :]]
            out.append((np.asarray(ids, dtype=np.int64), truncated))
        return out

    def encode(self, texts: list[str]) -> list[tuple[list[int], bool]]:
        """Token ids and "was cut" per text, tokenizing as little of a long text as gives the same ids."""
        chars = self.probe_chars
        cuts = [cut_at_space(text, chars) for text in texts]
        results = preprocess.encode(self.tokenizer, cuts)
        # A cut text that did not reach the limit may miss tokens: try a 4x longer prefix.
        pending = [i for i, (text, cut) in enumerate(zip(texts, cuts)) if cut is not text and not results[i][1]]
        while pending:
            chars *= 4
            retry = [cut_at_space(texts[i], chars) for i in pending]
            for i, cut, result in zip(pending, retry, preprocess.encode(self.tokenizer, retry)):
                results[i] = result
                cuts[i] = cut
            pending = [i for i in pending if cuts[i] is not texts[i] and not results[i][1]]
        return results


class NumericInputs:
    def __init__(self, spec: InputSpec, max_components: int, model_name: str):
        self.spec = spec
        self.max_components = max_components
        self.model_name = model_name

    def prepare(self, values: Sequence[Any], field: str) -> list[Prepared]:
        out: list[Prepared] = []
        for i, value in enumerate(values):
            array = self.components(value, f"{field}[{i}]")
            if array.shape[0] == 0:
                raise InputProblem(f"{field}[{i}] is empty")
            if array.shape[0] > self.max_components:
                raise InputProblem(f"{field}[{i}] has {array.shape[0]} components; the limit is "
                                   f"max_components_per_input={self.max_components}", too_large=True)
            if array.shape[0] > self.spec.max_components:
                raise InputProblem(f"{field}[{i}] has {array.shape[0]} components; model {self.model_name} "
                                   f"takes at most {self.spec.max_components}")
            out.append((array, False))
        return out

    def components(self, value: Any, where: str) -> np.ndarray:
        """One numeric input -> (n, f) float32, per manifest.input.preprocess."""
        if isinstance(value, str):
            raise InputProblem(f"{where} is a string; model {self.model_name} takes arrays of numbers")
        try:
            with np.errstate(over="ignore"):  # a float32 overflow becomes Inf, refused below
                array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputProblem(f"{where} is not a rectangular array of numbers") from None
        if not np.isfinite(array).all():
            raise InputProblem(f"{where} contains NaN or Inf")
        options = self.spec.preprocess
        f = self.spec.component_dim
        if options.get("kind") == "patches":
            height, width = options["image_shape"]
            if array.shape == (height * width,):
                array = array.reshape(height, width)
            if array.shape != (height, width):
                raise InputProblem(f"{where} has shape {array.shape}; expected {height * width} pixel values "
                                   f"or a {height} x {width} image")
            return preprocess.patchify(array[None], tuple(options["patch_shape"]))[0]
        if array.ndim == 1 and f == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != f:
            expected = "a list of numbers or " if f == 1 else ""
            raise InputProblem(f"{where} has shape {array.shape}; expected {expected}an (n, {f}) array")
        return array
