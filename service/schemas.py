"""Request and response bodies of the HTTP API (pydantic v2).

Limits that depend on the settings (inputs per request, components, neighbors) are checked by
the routes and the runtime, so their messages can name the setting; the static rules live here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IncludePart = Literal["embedding", "composition", "components", "neighbors"]
ALL_PARTS: tuple[IncludePart, ...] = ("embedding", "composition", "components", "neighbors")
# One input: a string (text models), a flat list of numbers (pixels, or n scalar components),
# or a nested list (an H x W image, or n components of f features).
InputValue = str | list[float] | list[list[float]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AtomizeRequest(_Request):
    inputs: list[InputValue] = Field(min_length=1, description="strings for text models, arrays for numeric ones")
    neighbors: int = Field(5, ge=0, description="nearest bank atoms per input (0 = none)")
    rank_by: Literal["distance", "energy"] = Field(
        "distance", description="order neighbors by distance, or by pair energy (most strongly bound first)"
    )
    include: list[IncludePart] = Field(default_factory=lambda: list(ALL_PARTS), description="parts to return")


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


class Neighbor(BaseModel):
    id: int | str
    label: str | None = Field(description="the atom's label; null in a bank indexed without labels")
    distance: float
    energy: float = Field(description="pair energy with the input, as if the two atoms bonded")
    metadata: dict | None = Field(None, description="what `atomize index` stored with the atom, e.g. its text")


class AtomizeResult(BaseModel):
    index: int
    embedding: list[float] | None = None
    composition: Composition | None = None
    components: list[Component] | None = None
    neighbors: list[Neighbor] | None = None


class AtomizeResponse(BaseModel):
    model: str
    results: list[AtomizeResult]
    usage: dict[str, int] = Field(description="components: components processed, all inputs together")


# ---- OpenAI-compatible embeddings -------------------------------------------------------------


class EmbeddingsRequest(BaseModel):
    # extra="ignore": OpenAI clients may send fields this service has no use for (e.g. "user").
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(description="a string or a list of strings (token arrays are not accepted)")
    model: str | None = Field(None, description="accepted for compatibility; the loaded model answers")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="must equal the model's embedding size if given")
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingsUsage


# ---- metadata and errors ----------------------------------------------------------------------


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelInfo(BaseModel):
    name: str
    version: str
    created_at: str
    modality: Literal["text", "numeric"]
    input: dict
    embedding_dim: int
    role_names: list[str]
    composition_fields: list[str]
    label_names: list[str]
    potential: dict
    radius_range: list[float]
    training: dict
    runtime: dict = Field(description="device, execution provider, onnxruntime version")
    bank: dict = Field(description="the reference bank: atoms, index kind, version, the bundle it was built with")
    batching: dict
    limits: dict
