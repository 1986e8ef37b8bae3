"""Request and response bodies of the HTTP API (pydantic v2), and the request models of one app.

The request models are built per app from the served bundle and the settings
(`request_models`), so one pydantic model both validates a request and writes its part of the
OpenAPI document: the input type of the served modality (text, or an exact array shape), the
number of inputs, the largest `neighbors`, the only `dimensions` there is. Validation is strict:
`"5"` or `true` is not an integer and a number is not a string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, create_model
from pydantic_core import PydanticCustomError

from contract.bundle import Manifest

IncludePart = Literal["embedding", "composition", "components", "neighbors", "chunks"]
# the parts returned unless `include` names others ("chunks" is asked for by name)
ALL_PARTS: tuple[IncludePart, ...] = ("embedding", "composition", "components", "neighbors")
# The largest magnitude of a numeric component: near float32's maximum (3.4e38) the model's own
# arithmetic overflows (the digits model stayed finite up to 1e30 and not at 3e38); 1e18 leaves
# room for wider models. Results that are not finite all the same are refused (routes/atomize.py).
MAX_ABS_VALUE = 1e18
VISIBLE = r"\S"  # a text needs one character that is not white space (JSON Schema: a search, not a match)

TRUNCATE_DESCRIPTION = (
    "text longer than the model's maximum length is cut to it and its result marked `truncated`; "
    "with false such a text is refused with 413"
)


CHUNK_DESCRIPTION = (
    "read a text longer than the model's maximum length whole, in overlapping windows of tokens (each one "
    "item for the model), and pool the windows' atoms into the text's: embedding averaged, each component counted once, "
    "components once each; `truncate` then does not apply. A text that fits is one window, as without chunking"
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ---- request models of one app ----------------------------------------------------------------


def _no_text_or_bool(value: Any) -> Any:
    if isinstance(value, (str, bool)):
        raise PydanticCustomError("int_type", "Input should be a valid integer, not a {kind}",
                                  {"kind": "string" if isinstance(value, str) else "boolean"})
    return value


# An integer as JSON Schema means it: 5 and 5.0 (a number with no fraction) are integers; "5",
# true and 5.5 are not (strict mode alone would refuse 5.0, which the document allows).
def integer(**constraints: Any) -> Any:
    return Annotated[int, Field(strict=False, **constraints), BeforeValidator(_no_text_or_bool)]


def _number() -> Any:
    # allow_inf_nan=False: NaN/Infinity literals (which Python's JSON writes) are refused by name.
    return Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]


def _array(item: Any, length: int | None = None, max_length: int | None = None) -> Any:
    if length is not None:
        return Annotated[list[item], Field(min_length=length, max_length=length)]
    # The component limit is stated here and enforced by the runtime, whose 413 names the setting.
    return Annotated[list[item], Field(min_length=1, json_schema_extra={"maxItems": max_length})]


def _by_first_element(value: Any) -> str:
    """A flat list of numbers or a nested one: choose the union member by the first element."""
    first = value[0] if isinstance(value, list) and value else None
    return "rows" if isinstance(first, list) else "flat"


def input_type(manifest: Manifest, max_components: int, max_text_chars: int) -> tuple[Any, str]:
    """(pydantic type of one input, what the model takes in words) for the served bundle."""
    spec = manifest.input
    if spec.modality == "text":
        return Annotated[str, Field(min_length=1, max_length=max_text_chars, pattern=VISIBLE)], "text"
    number = _number()
    if spec.preprocess.get("kind") == "patches":
        height, width = spec.preprocess["image_shape"]
        flat, rows = _array(number, height * width), _array(_array(number, width), height)
        words = f"{height * width} numbers, or {height} rows of {width} numbers"
    elif spec.component_dim == 1:
        flat, rows = _array(number, max_length=max_components), _array(_array(number, 1), max_length=max_components)
        words = f"a list of at most {max_components} numbers"
    else:
        f = spec.component_dim
        return _array(_array(number, f), max_length=max_components), f"at most {max_components} rows of {f} numbers"
    return Annotated[Annotated[flat, Tag("flat")] | Annotated[rows, Tag("rows")], Discriminator(_by_first_element)], words


@dataclass(frozen=True)
class RequestModels:
    atomize: type[BaseModel]
    embeddings: type[BaseModel]
    input_words: str  # what one input is, for error messages: "text", "64 numbers or an 8 x 8 image"


def request_models(manifest: Manifest, *, max_inputs: int, max_components: int, max_neighbors: int,
                   max_text_chars: int) -> RequestModels:
    one_input, words = input_type(manifest, max_components, max_text_chars)
    atomize = create_model(
        "AtomizeRequest",
        __base__=_Request,
        inputs=(Annotated[list[one_input], Field(min_length=1, max_length=max_inputs,
                                                   description=f"what model {manifest.name} takes: {words}")], ...),
        neighbors=(integer(ge=0, le=max_neighbors), Field(5, description="nearest bank atoms per input (0 = none)")),
        rank_by=(Literal["distance", "energy"], Field(
            "distance", description="order neighbors by distance, or by pair energy (most strongly bound first)")),
        include=(list[IncludePart], Field(default_factory=lambda: list(ALL_PARTS), description=(
            "parts to return; \"chunks\" (only when named) adds each window of a chunked text with its "
            "character span and its pair energy with the next window"))),
        truncate=(bool, Field(True, description=TRUNCATE_DESCRIPTION)),
        chunk=(bool, Field(False, description=CHUNK_DESCRIPTION)),
        model=(str | None, Field(None, description=f"the model to run (optional): {manifest.name}, as "
                                                   "GET /v1/models lists it; another name gets 404")),
    )
    text = Annotated[str, Field(min_length=1, max_length=max_text_chars, pattern=VISIBLE)]
    embeddings = create_model(
        "EmbeddingsRequest",
        # extra="ignore": OpenAI clients may send fields this service has no use for.
        __config__=ConfigDict(extra="ignore", strict=True),
        input=(text | Annotated[list[text], Field(min_length=1, max_length=max_inputs)],
               Field(description="a string or a list of strings (token arrays are not accepted)")),
        model=(str | None, Field(None, description=f"the model to run: {manifest.name}, as GET /v1/models lists "
                                                   "it; another name gets 404 (may be left out)")),
        encoding_format=(Literal["float", "base64"], "float"),
        dimensions=(integer(ge=manifest.embedding_dim, le=manifest.embedding_dim) | None,
                    Field(None, description="the model's embedding size, the only one there is")),
        user=(str | None, None),
        truncate=(bool, Field(True, description=TRUNCATE_DESCRIPTION)),
        chunk=(bool, Field(False, description=CHUNK_DESCRIPTION)),
    )
    return RequestModels(atomize, embeddings, words)


# ---- responses --------------------------------------------------------------------------------


class Composition(BaseModel):
    protons: float
    neutrons: float
    electrons: float
    mass: float
    charge: float
    radius: float


class Component(BaseModel):
    index: int
    token: str | None = Field(None, description="token text (text models); absent for numeric components")
    role: str = Field(description="the most probable role")
    probabilities: dict[str, float] = Field(description="electron, proton and neutron probabilities (sum 1)")
    start: int | None = Field(None, description="text: the component's first character in the input (Unicode code points)")
    end: int | None = Field(None, description="text: one past its last character; text[start:end] is what it read")


class Neighbor(BaseModel):
    id: int | str
    label: str | None = Field(description="the atom's label; null in a bank indexed without labels")
    distance: float
    energy: float = Field(description="pair energy with the input, as if the two atoms bonded")
    metadata: dict | None = Field(None, description="what `atomize index` stored with the atom, e.g. its text")


class Chunk(BaseModel):
    index: int
    start: int = Field(description="the window's first character in the input")
    end: int = Field(description="one past its last character")
    components: int = Field(description="components the window read ([CLS]/[SEP] not counted)")
    embedding: list[float] | None = Field(None, description="the window's own nucleus, when `embedding` is included")
    composition: Composition
    energy_with_next: float | None = Field(
        description="pair energy of this window's atom with the next window's (lower = more strongly bound); "
        "null for the last window")


class AtomizeResult(BaseModel):
    index: int
    truncated: bool = Field(description="the input was longer than the model's maximum and was cut to it")
    embedding: list[float] | None = None
    composition: Composition | None = None
    components: list[Component] | None = None
    neighbors: list[Neighbor] | None = None
    chunks: list[Chunk] | None = Field(
        None, description="with \"chunk\": true and \"chunks\" included: the windows the input was read in")


class AtomizeResponse(BaseModel):
    model: str
    results: list[AtomizeResult]
    usage: dict[str, int] = Field(description="components: components processed, all inputs together")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")
    truncated: bool = Field(description="the input was longer than the model's maximum and was cut to it")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingsUsage


# ---- metadata and errors ----------------------------------------------------------------------


class ModelCard(BaseModel):
    """A served model as OpenAI's models API describes one."""

    id: str = Field(description="the name a request's `model` takes: the bundle manifest's name, or the name it "
                    "was served under (`--bundle NAME=FOLDER`)")
    object: Literal["model"] = "model"
    created: int = Field(description="when the bundle was exported, Unix seconds")
    owned_by: str = "atomizer"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class BankReloaded(BaseModel):
    """A model's bank, loaded again and now served."""

    model: str = Field(description="the served model whose bank was reloaded")
    atoms: int = Field(description="atoms in the bank now served")
    version: str = Field(description="the bank's content version (the start of its atoms file's sha256)")
    search: str = Field(description="how it is searched now (flat, hnsw, ivf); a large bundle-own bank moves to "
                        "its IVF index in the background, shown by GET /v1/model as bank.index_pending")


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, bool]
    models: dict[str, dict[str, bool]] = Field(description="each started model's own checks, by name")


class ModelInfo(BaseModel):
    id: str = Field(description="the name this model is served under (a request's `model`)")
    name: str
    version: str
    created_at: str
    digest: str = Field(description="sha256 of the canonical manifest, which lists every file's sha256")
    modality: Literal["text", "numeric"]
    input: dict
    embedding_dim: int
    role_names: list[str]
    composition_fields: list[str]
    label_names: list[str]
    potential: dict
    radius_range: list[float]
    training: dict
    # reduced-precision copies measured against fp32 at export (cosine, accuracy on each; int8:
    # its quantization scheme and an item's largest embedding change alone against in a batch)
    precisions: dict[str, dict[str, float | str]] = {}
    # how encoder.onnx was made (exporter, attention form, optimisation) and its parity with PyTorch
    graph: dict[str, str | float] = {}
    runtime: dict = Field(description="device, execution provider, model file, precision, batching (batched or per input), workers (batches that run at once) and threads_per_worker, onnxruntime version")
    bank: dict = Field(description="the reference bank: atoms, index kind, version, the bundle it was built with")
    batching: dict
    limits: dict


# ---- the bank's 2D map (GET /v1/bank/map, service/routes/bank_map.py) ---------------------


class ProjectionOut(BaseModel):
    kind: str = Field(description="pca: the bank's top two principal axes")
    mean: list[float] = Field(description="(k,) subtracted before projecting")
    axes: list[list[float]] = Field(description="(2, k): a point z is drawn at (z - mean) @ axes.T")


class MapAtoms(BaseModel):
    """Column arrays, one entry per atom drawn."""

    id: list[int | str]
    label: list[str]
    x: list[float]
    y: list[float]
    radius: list[float]


class BankMap(BaseModel):
    projection: ProjectionOut
    total: int = Field(description="atoms in the bank")
    sampled: int = Field(description="atoms in `atoms` drawn as a seeded sample of the bank")
    atoms: MapAtoms
    requested: MapAtoms = Field(description="the atoms named by `ids` (e.g. a query's neighbors), sample or not")
    label_names: list[str]
    radius_range: list[float]
    stats: dict | None = Field(
        description="the bundle's report/stats.json (role shares, the most characteristic tokens per role), "
        "or null when it was exported without a report"
    )
