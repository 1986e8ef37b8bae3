"""Request bodies: parsed and validated by the app's request models, in a worker thread.

The routes read the raw bytes (the middleware has already bounded their size) and hand them
here together with the input preparation, so neither JSON parsing nor tokenizing ever runs on
the event loop. Every refusal names the field and, for a limit, the setting: invalid JSON
(including invalid UTF-8, lone surrogates and nesting past the parser's depth limit), wrong
types (validation is strict), shapes and counts.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import AtomError, InvalidInput, TooLarge
from ..schemas import MAX_ABS_VALUE

ModelT = TypeVar("ModelT", bound=BaseModel)
# Errors that only say "this union member did not fit"; a more specific one explains better.
_TYPE_ERRORS = {"string_type", "list_type", "int_type", "float_type", "bool_type", "dict_type", "model_type"}
_LIST_FIELDS = ("inputs", "input")


def request_body(schema_name: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is parsed here: the app fills in the schema by name."""
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def parse(model: type[ModelT], raw: bytes, *, max_inputs: int, max_neighbors: int, model_name: str,
          input_words: str) -> ModelT:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise body_error(exc, max_inputs=max_inputs, max_neighbors=max_neighbors, model_name=model_name,
                         input_words=input_words) from None


def body_error(exc: ValidationError, *, max_inputs: int, max_neighbors: int, model_name: str,
               input_words: str) -> AtomError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return InvalidInput(f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    field = first["loc"][0] if first["loc"] else None
    # Union members tag their errors (e.g. input.str, input.list[...]): keep the most specific one.
    same_field = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    specific = [e for e in same_field if e["type"] not in _TYPE_ERRORS]
    error = specific[0] if specific else first
    tagged = any(isinstance(part, str) for e in same_field for part in e["loc"][1:])
    loc = [part for i, part in enumerate(error["loc"]) if i == 0 or not isinstance(part, str)]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "too_long" and field in _LIST_FIELDS and len(loc) == 1:
        return TooLarge(f"{field} has {ctx['actual_length']} items; the limit is max_inputs_per_request={max_inputs}")
    if field == "neighbors" and kind == "less_than_equal":
        return InvalidInput(f"neighbors={error['input']} is more than max_neighbors={max_neighbors}")
    if field == "dimensions" and kind in ("greater_than_equal", "less_than_equal"):
        size = ctx.get("ge", ctx.get("le"))
        return InvalidInput(f"dimensions={error['input']}: model {model_name} has embedding size {size}, the only one")
    if field in _LIST_FIELDS and kind in ("greater_than_equal", "less_than_equal"):
        return InvalidInput(f"{where}: {error['input']} is past the largest magnitude accepted, {MAX_ABS_VALUE:g}")
    if kind == "string_pattern_mismatch":  # the only pattern: one character that is not white space
        return InvalidInput(f"{where} is empty (white space only)")
    if kind == "finite_number":
        return InvalidInput(f"{''.join(f'[{p}]' if isinstance(p, int) else p for p in loc[:2])} contains NaN or Inf")
    if field == "input" and tagged and not specific:
        return InvalidInput("input: expected a string or a list of strings (token arrays are not accepted)")
    message = error["msg"]
    if field in _LIST_FIELDS and len(loc) > 1:
        message += f" (model {model_name} takes {input_words})"
    return InvalidInput(f"{where}: {message}" if where else f"body: {message}")
