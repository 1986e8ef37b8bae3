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

A text past the limit may instead be cut into overlapping windows of tokens (`TextInputs.chunk`,
the tokenizer's own overflow with a stride): each window is one input for the model, with its
character span, and owns the components up to the middle of its overlaps with its neighbours, so
the windows' components, concatenated, are the text's tokens once each (`contract/chunks.py`
pools the windows' atoms into the text's). Every text component carries its character offsets.

Numeric inputs become (n, f) float32 components (patches for images) and are checked for
NaN/Inf. A problem raises `InputProblem` naming the input; the service answers it 413 when
`too_large`, else 422, and the indexer refuses or skips the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import preprocess
from .bundle import InputSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer



@dataclass(frozen=True)
class Prepared:
    """One input (or one window of a chunked text) ready for the model."""

    components: np.ndarray  # (n,) int64 token ids, or (n, f) float32
    truncated: bool = False  # a text cut to the model's length
    offsets: np.ndarray | None = None  # text: (n, 2) character [start, end) of each id; (0, 0) for [CLS]/[SEP]
    span: tuple[int, int] | None = None  # a window: the characters it covers in its text
    owned: tuple[int, int] | None = None  # a window: the positions whose components it reports (overlaps halved)

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
        self._windowed: dict[int, "Tokenizer"] = {}  # overlap -> tokenizer cutting windows (`windowed`)

    def prepare(self, texts: Sequence[Any], field: str, truncate: bool) -> list[Prepared]:
        for i, value in enumerate(texts):
            if not isinstance(value, str):
                raise InputProblem(f"{field}[{i}] is not a string; model {self.model_name} takes text")
        encoded = self.encode(list(texts))
        out: list[Prepared] = []
        for i, (text, (ids, offsets, truncated)) in enumerate(zip(texts, encoded)):
            if truncated and not truncate:
                raise InputProblem(
                    f"{field}[{i}] is {len(text)} characters long and has more than {self.max_components} tokens, "
                    f"the most model {self.model_name} takes here; send \"truncate\": true to cut it, or "
                    "\"chunk\": true to read it whole in windows", too_large=True)
            out.append(self.checked(text, ids, offsets, truncated, f"{field}[{i}]"))
        return out

    def checked(self, text: str, ids: list[int], offsets: list[tuple[int, int]], truncated: bool,
                where: str) -> Prepared:
        if all(token in self.special_ids for token in ids):  # no component at all
            if not text or self.unk_id is None:
                raise InputProblem(f"{where} is empty")
            # control characters only (the request schema refuses white space alone): the
            # unknown token, inside the special tokens, covering the whole text
            half = len(ids) // 2
            ids = [*ids[:half], self.unk_id, *ids[half:]]
            offsets = [*offsets[:half], (0, len(text)), *offsets[half:]]
        return Prepared(np.asarray(ids, dtype=np.int64), truncated, np.asarray(offsets, dtype=np.int64).reshape(-1, 2))

    def chunk(self, texts: Sequence[Any], field: str, overlap: int, max_chunks: int) -> list[list[Prepared]]:
        """Each text as windows of at most max_components ids ([CLS]/[SEP] in every window),
        neighbouring windows sharing `overlap` tokens; a text that fits is one window. More than
        `max_chunks` windows is refused (413)."""
        for i, value in enumerate(texts):
            if not isinstance(value, str):
                raise InputProblem(f"{field}[{i}] is not a string; model {self.model_name} takes text")
        specials = len(preprocess.encode(self.tokenizer, [""])[0][0])
        content = self.max_components - specials  # tokens of the text per window
        if not 0 <= overlap < content:
            raise InputProblem(f"a chunk overlap of {overlap} tokens needs windows of more than {overlap} text tokens; "
                               f"model {self.model_name} reads {content} per window")
        step = content - overlap
        # Enough characters for max_chunks windows and one more token (16 characters a token, as in
        # `encode`); a text with more than max_chunks windows in that prefix is refused unread.
        chars = 16 * (content + step * max_chunks + 1)
        windowed = self.windowed(overlap)
        out: list[list[Prepared]] = []
        for i, text in enumerate(texts):
            encodings = self.windows(windowed, cut_at_space(text, chars))
            if len(encodings) <= max_chunks and len(text) > chars:  # the prefix was too short to tell
                encodings = self.windows(windowed, text)
            if len(encodings) > max_chunks:
                raise InputProblem(f"{field}[{i}] is {len(text)} characters long: more than {max_chunks} windows of "
                                   f"{self.max_components} tokens, the limit max_chunks_per_input={max_chunks}",
                                   too_large=True)
            windows = []
            for j, (ids, offsets) in enumerate(encodings):
                item = self.checked(text, ids, offsets, False, f"{field}[{i}]")
                real = np.flatnonzero(~np.isin(item.components, list(self.special_ids)))
                first, last = (int(real[0]), int(real[-1]) + 1) if len(real) else (0, len(item.components))
                # an overlap's first half belongs to the earlier window, its second half to the later
                start = first + (overlap - overlap // 2 if j > 0 else 0)
                end = last - (overlap // 2 if j < len(encodings) - 1 else 0)
                spans = item.offsets[first:last]
                span = (int(spans[:, 0].min()), int(spans[:, 1].max())) if len(spans) else (0, len(text))
                windows.append(Prepared(item.components, False, item.offsets, span, (start, max(start, end))))
            out.append(windows)
        return out

    def windowed(self, overlap: int) -> "Tokenizer":
        """A copy of the tokenizer whose truncation keeps the overflow as windows sharing `overlap`
        tokens; made once per overlap (copying the vocabulary per request would cost milliseconds)."""
        from tokenizers import Tokenizer

        cached = self._windowed.get(overlap)
        if cached is not None:
            return cached
        copy = Tokenizer.from_str(self.tokenizer.to_str())
        truncation = dict(self.tokenizer.truncation or {})
        truncation.update(max_length=self.max_components, stride=overlap)
        copy.enable_truncation(**truncation)
        self._windowed[overlap] = copy
        return copy

    @staticmethod
    def windows(tokenizer: "Tokenizer", text: str) -> list[tuple[list[int], list[tuple[int, int]]]]:
        encoding = tokenizer.encode(text, add_special_tokens=True)
        return [preprocess.without_padding(e) for e in (encoding, *encoding.overflowing)]

    def encode(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]], bool]]:
        """Token ids, their character offsets and "was cut" per text, tokenizing as little of a long
        text as gives the same ids."""
        chars = self.probe_chars
        cuts = [cut_at_space(text, chars) for text in texts]
        results = preprocess.encode(self.tokenizer, cuts)
        # A cut text that did not reach the limit may miss tokens: try a 4x longer prefix.
        pending = [i for i, (text, cut) in enumerate(zip(texts, cuts)) if cut is not text and not results[i][2]]
        while pending:
            chars *= 4
            retry = [cut_at_space(texts[i], chars) for i in pending]
            for i, cut, result in zip(pending, retry, preprocess.encode(self.tokenizer, retry)):
                results[i] = result
                cuts[i] = cut
            pending = [i for i in pending if cuts[i] is not texts[i] and not results[i][2]]
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
            out.append(Prepared(array))
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
