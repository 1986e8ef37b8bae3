"""The model bundle: the one contract between training (torch) and serving (no torch).

A bundle is a folder:

    manifest.json      this module's `Manifest`, with the sha256 of every other file
    encoder.onnx       inputs (text) input_ids int64 (B, n), attention_mask int64 (B, n)
                              (numeric) components float32 (B, n, f), attention_mask int64 (B, n)
                       outputs embedding (B, k), roles (B, n, 3), composition (B, 6)
    encoder.fp16.onnx  optional, for GPU
    encoder.int8.onnx  optional, for CPU (static quantization: activation scales fixed at export;
                       older bundles: dynamic, see `Bundle.batch_invariant`)
    tokenizer.json     text bundles only
    atoms.npz          reference bank: embedding (M, k) float32, radius (M,), charge (M,), id (M,), label (M,)
    report/            plots and report.html (checksummed like the rest)

The exporter writes a `Manifest`; `load_bundle` validates one. Both import this module, so
the schema version is checked the same way on both sides.

The **bundle digest** (`bundle_digest`) is the sha256 of the canonical manifest (keys sorted,
no whitespace); the manifest lists every other file's sha256, so the digest identifies every
byte of the bundle. `atomize export` prints it; pinned (`ATOM_BUNDLE_DIGEST`), a bundle with any
other digest, or with a file the manifest does not list, is refused. Unpinned, the values that
the files themselves determine (embedding size, maximum length, vocabulary size, the radius
range of the bank) must agree with the manifest; values that no file determines (the
potential's parameters) are protected by the pin alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
FP16_FILE = "encoder.fp16.onnx"
INT8_FILE = "encoder.int8.onnx"
BATCH_TOLERANCE = 1e-5  # an embedding that moves more than this with its batch: not batch-invariant
MODEL_FILES = {"fp32": "encoder.onnx", "fp16": FP16_FILE, "int8": INT8_FILE}
ROLE_NAMES = ("electron", "proton", "neutron")
COMPOSITION_FIELDS = ("electrons", "protons", "neutrons", "mass", "charge", "radius")
BANK_ARRAYS = ("embedding", "radius", "charge", "id", "label")


_M = TypeVar("_M", bound=BaseModel)


class BundleError(Exception):
    """A bundle that cannot be served; the message is one line naming the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: Literal["int64", "float32", "float16"]
    shape: list[int | str]  # str = a dynamic axis ("batch", "components")


class InputSpec(_Strict):
    modality: Literal["text", "numeric"]
    max_components: int = Field(gt=0)
    vocab_size: int = Field(ge=0)  # text: tokenizer vocabulary; 0 for numeric
    component_dim: int = Field(gt=0)  # numeric: features per component; 1 for text
    # numeric image data: {"kind": "patches", "image_shape": [H, W], "patch_shape": [ph, pw]}
    preprocess: dict[str, Any] = Field(default_factory=lambda: {"kind": "none"})
    # ids the tokenizer adds around each text ([CLS], [SEP] of a pretrained backbone): the model
    # attends to them, but they are no components (no role, outside the composition)
    special_token_ids: list[int] = Field(default_factory=list)
    # a text past max_components may be read whole in windows of max_components ids that share
    # chunk_overlap tokens (contract/inputs.py); their atoms are pooled by chunk_pooling
    # (contract/chunks.py). Bundles from before chunking: no overlap, plain mean.
    chunk_overlap: int = Field(0, ge=0)
    chunk_pooling: Literal["mean", "mass"] = "mean"


class PotentialSpec(_Strict):
    """Everything the service needs to compute a pair energy without torch."""

    kind: Literal["morse", "lj"]
    well_depth: float
    nonbonded_scale: float = 1.0  # training only: serving scores every pair as if it bonded
    morse_alpha: float
    cutoff_widths: float
    lj_force_cap_ratio: float
    coulomb_strength: float
    coulomb_screening: float
    coulomb_softening: float
    weight: float  # lambda used in training (0 = baseline)


class TrainingSummary(_Strict):
    dataset: str
    backbone: str | None = None  # "minilm" or a folder name; None = trained from scratch
    seed: int
    epochs: int
    metrics: dict[str, float | None] = Field(default_factory=dict)


class Manifest(_Strict):
    schema_version: int
    name: str
    version: str
    created_at: str  # ISO 8601, UTC
    input: InputSpec
    onnx_inputs: list[TensorSpec]
    onnx_outputs: list[TensorSpec]
    embedding_dim: int = Field(gt=0)
    role_names: list[str] = Field(default_factory=lambda: list(ROLE_NAMES))
    composition_fields: list[str] = Field(default_factory=lambda: list(COMPOSITION_FIELDS))
    label_names: list[str]
    potential: PotentialSpec
    radius_range: list[float]  # [r_min, r_max]
    training: TrainingSummary
    # what each reduced-precision copy costs, measured at export against fp32 on held-out items:
    # {"int8": {"cosine_mean": ..., "cosine_min": ..., "accuracy_fp32": ..., "accuracy": ...,
    #           "scheme": "static", "batch_max_abs_diff": ...}}
    precisions: dict[str, dict[str, float | str]] = Field(default_factory=dict)
    # how encoder.onnx was made and checked: {"exporter": "torchscript", "attention": "eager",
    # "optimisation": "basic", "parity_max": ...} (empty in bundles exported before it was recorded)
    graph: dict[str, str | float] = Field(default_factory=dict)
    files: dict[str, str]  # relative path -> sha256 hex, every file of the bundle but the manifest

    def write(self, bundle_dir: Path) -> Path:
        path = Path(bundle_dir) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_tree(bundle_dir: Path) -> dict[str, str]:
    """sha256 of every file under bundle_dir except the manifest, keyed by POSIX relative path."""
    return {name: sha256_file(Path(bundle_dir) / name) for name in checksum_tree_names(bundle_dir)}


@dataclass(frozen=True)
class BankArrays:
    """What a bank holds for every atom, in row order: a bundle's own atoms.npz, or a bank folder's
    (contract/bank.py)."""

    embedding: np.ndarray  # (M, k) float32
    radius: np.ndarray  # (M,) float32
    charge: np.ndarray  # (M,) float32
    label: np.ndarray  # (M,) int64, NO_LABEL (-1) or an index into label_names
    id: np.ndarray  # (M,) int64 or str

    def __len__(self) -> int:
        return int(self.embedding.shape[0])


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest
    atoms: BankArrays  # atoms.npz: the training split, atomized at export (served as the default bank)
    digest: str = ""  # "sha256:<hex>" of the canonical manifest

    @property
    def onnx_path(self) -> Path:
        return self.path / "encoder.onnx"

    @property
    def fp16_onnx_path(self) -> Path | None:
        # only a checksummed copy counts: load_bundle verified it like encoder.onnx
        return self.path / FP16_FILE if FP16_FILE in self.manifest.files else None

    @property
    def int8_onnx_path(self) -> Path | None:
        return self.path / INT8_FILE if INT8_FILE in self.manifest.files else None

    def model_path(self, precision: str) -> Path | None:
        """The checksummed model file of a precision (fp32, fp16, int8), None if the bundle lacks it."""
        name = MODEL_FILES[precision]
        return self.path / name if name in self.manifest.files else None

    def precisions(self) -> list[str]:
        return [p for p, name in MODEL_FILES.items() if name in self.manifest.files]

    def precision_of(self, model_file: str) -> str:
        return next(p for p, name in MODEL_FILES.items() if name == model_file)

    def batch_invariant(self, precision: str) -> bool:
        """Whether a copy gives an input the same answer whatever else shares its batch. fp32 and
        fp16 do; an int8 copy only when its activation scales were fixed at export ("static": the
        dynamic int8 of older bundles computes them over the batch) and the export's check found
        no input that moved by more than BATCH_TOLERANCE."""
        if precision != "int8":
            return True
        int8 = self.manifest.precisions.get("int8", {})
        return int8.get("scheme") == "static" and float(int8.get("batch_max_abs_diff", 0.0)) <= BATCH_TOLERANCE

    @property
    def tokenizer_path(self) -> Path | None:
        path = self.path / "tokenizer.json"
        return path if path.exists() else None


def _read_raw_manifest(bundle_dir: Path) -> Any:
    path = Path(bundle_dir) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(path, "missing file")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(path, f"not valid JSON ({exc})") from None


def canonical_digest(raw_manifest: Any) -> str:
    """sha256 of the manifest as canonical JSON: sorted keys, no whitespace, UTF-8."""
    canonical = json.dumps(raw_manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def bundle_digest(bundle_dir: Path | str) -> str:
    """The bundle's digest, `sha256:<hex>` (what `atomize export` prints and ATOM_BUNDLE_DIGEST pins)."""
    return canonical_digest(_read_raw_manifest(Path(bundle_dir)))


def validate_manifest(model: type[_M], raw: Any, expected_version: int, path: Path,
                      error: type[BundleError] = BundleError) -> _M:
    """A parsed manifest (bundle or bank) checked for its schema version, then validated; the
    first problem becomes one `error` line naming the file and the field."""
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != expected_version:
        raise error(path, f"schema_version {version!r} is not supported (expected {expected_version})")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise error(path, f"invalid field {where}: {first['msg']}") from None


def read_manifest(bundle_dir: Path) -> Manifest:
    return validate_manifest(Manifest, _read_raw_manifest(bundle_dir), SCHEMA_VERSION, Path(bundle_dir) / MANIFEST_FILE)


def verify_checksums(bundle_dir: Path, manifest: Manifest) -> None:
    bundle_dir = Path(bundle_dir)
    required = {"encoder.onnx", "atoms.npz"} | ({"tokenizer.json"} if manifest.input.modality == "text" else set())
    for name in sorted(required - set(manifest.files)):
        raise BundleError(bundle_dir / name, "required file is not listed in the manifest")
    for name, expected in sorted(manifest.files.items()):
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(path, "missing file")
        if sha256_file(path) != expected:
            raise BundleError(path, "checksum mismatch (file changed after export)")


def verify_only_listed_files(bundle_dir: Path, manifest: Manifest) -> None:
    """With a pinned digest every file must be one the manifest lists (an added file is a change too)."""
    for name in checksum_tree_names(bundle_dir):
        if name not in manifest.files:
            raise BundleError(Path(bundle_dir) / name, "file is not listed in the manifest of the pinned bundle")


def checksum_tree_names(bundle_dir: Path) -> list[str]:
    bundle_dir = Path(bundle_dir)
    return [
        path.relative_to(bundle_dir).as_posix()
        for path in sorted(bundle_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    ]


def verify_derived_values(bundle_dir: Path, manifest: Manifest, atoms: BankArrays) -> None:
    """What the files themselves determine must agree with the manifest (see the module docstring)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    spec = manifest.input
    if spec.modality == "text":
        from tokenizers import Tokenizer  # a base dependency; local so the exporter's import stays light

        try:
            tokenizer = Tokenizer.from_file(str(bundle_dir / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises its own exception types
            raise BundleError(bundle_dir / "tokenizer.json", f"cannot be read ({exc})") from None
        vocab_size = tokenizer.get_vocab_size()
        if vocab_size != spec.vocab_size:
            raise BundleError(path, f"input.vocab_size is {spec.vocab_size}, tokenizer.json has {vocab_size} tokens")
        truncation = tokenizer.truncation or {}
        if truncation.get("max_length") not in (None, spec.max_components):
            raise BundleError(path, f"input.max_components is {spec.max_components}, tokenizer.json truncates "
                                    f"at {truncation['max_length']}")
    elif spec.preprocess.get("kind") == "patches":
        (height, width), (ph, pw) = spec.preprocess["image_shape"], spec.preprocess["patch_shape"]
        patches = (height // ph) * (width // pw)
        if patches != spec.max_components:
            raise BundleError(path, f"input.max_components is {spec.max_components}, a {height} x {width} image "
                                    f"in {ph} x {pw} patches has {patches}")
    for tensor in manifest.onnx_outputs:
        if tensor.name == "embedding" and isinstance(tensor.shape[-1], int) and tensor.shape[-1] != manifest.embedding_dim:
            raise BundleError(path, f"embedding_dim is {manifest.embedding_dim}, onnx_outputs.embedding has "
                                    f"{tensor.shape[-1]} columns")
    if len(manifest.radius_range) != 2 or not manifest.radius_range[0] <= manifest.radius_range[1]:
        raise BundleError(path, f"radius_range {manifest.radius_range} is not [r_min, r_max]")
    if len(atoms):
        r_min, r_max = manifest.radius_range
        low, high = float(atoms.radius.min()), float(atoms.radius.max())
        slack = 1e-4 * max(1.0, abs(r_max))  # float32 rounding of the model's bounded radius
        if low < r_min - slack or high > r_max + slack:
            raise BundleError(path, f"radius_range is {manifest.radius_range}, the bank's radii span "
                                    f"[{low:.6g}, {high:.6g}]")


def _spec_shape_matches(declared: list[int | str], actual: list[Any]) -> bool:
    if len(declared) != len(actual):
        return False
    # A named (dynamic) axis in the manifest must be dynamic or any size in the model; a number must match.
    return all(isinstance(d, str) or not isinstance(a, int) or d == a for d, a in zip(declared, actual))


def verify_onnx_signature(onnx_path: Path, manifest: Manifest) -> None:
    """Compare the ONNX graph's inputs/outputs with the manifest (names, element types, ranks)."""
    import onnxruntime as ort  # local: keeps `import contract.bundle` light for the exporter

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(onnx_path, f"cannot be loaded by ONNX Runtime ({str(exc).splitlines()[0]})") from None
    type_names = {"int64": "tensor(int64)", "float32": "tensor(float)", "float16": "tensor(float16)"}
    for kind, declared, actual in (
        ("input", manifest.onnx_inputs, session.get_inputs()),
        ("output", manifest.onnx_outputs, session.get_outputs()),
    ):
        actual_by_name = {node.name: node for node in actual}
        if sorted(actual_by_name) != sorted(spec.name for spec in declared):
            raise BundleError(
                onnx_path,
                f"{kind}s {sorted(actual_by_name)} disagree with the manifest's {sorted(s.name for s in declared)}",
            )
        for spec in declared:
            node = actual_by_name[spec.name]
            if node.type != type_names[spec.dtype]:
                raise BundleError(onnx_path, f"{kind} {spec.name} has type {node.type}, manifest says {spec.dtype}")
            if not _spec_shape_matches(spec.shape, list(node.shape)):
                raise BundleError(onnx_path, f"{kind} {spec.name} has shape {node.shape}, manifest says {spec.shape}")


def read_atoms(path: Path, manifest: Manifest) -> BankArrays:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in BANK_ARRAYS}
    except KeyError as exc:
        raise BundleError(path, f"missing array {exc}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(path, f"cannot be read ({exc})") from None
    rows = arrays["embedding"].shape[0]
    if arrays["embedding"].ndim != 2 or arrays["embedding"].shape[1] != manifest.embedding_dim:
        raise BundleError(
            path, f"embedding has shape {arrays['embedding'].shape}, expected (M, {manifest.embedding_dim})"
        )
    for name in BANK_ARRAYS[1:]:
        if arrays[name].shape != (rows,):
            raise BundleError(path, f"{name} has shape {arrays[name].shape}, expected ({rows},)")
    return BankArrays(
        embedding=np.ascontiguousarray(arrays["embedding"], dtype=np.float32),
        radius=arrays["radius"].astype(np.float32),
        charge=arrays["charge"].astype(np.float32),
        id=arrays["id"],
        label=arrays["label"].astype(np.int64),
    )


def load_bundle(bundle_dir: Path | str, *, check_onnx: bool = True, digest: str | None = None) -> Bundle:
    """Validate and load a bundle; raises BundleError with one line naming the file and problem.

    `digest` pins the bundle ("sha256:<hex>"): any other digest, or an unlisted file, is refused.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(bundle_dir, "bundle folder does not exist")
    actual = bundle_digest(bundle_dir)
    if digest is not None and actual != digest:
        raise BundleError(bundle_dir / MANIFEST_FILE, f"bundle digest {actual} is not the pinned {digest}")
    manifest = read_manifest(bundle_dir)
    verify_checksums(bundle_dir, manifest)
    if digest is not None:
        verify_only_listed_files(bundle_dir, manifest)
    if check_onnx:
        verify_onnx_signature(bundle_dir / "encoder.onnx", manifest)
        for name in (FP16_FILE, INT8_FILE):  # reduced inside, float32 in and out
            if name in manifest.files:
                verify_onnx_signature(bundle_dir / name, manifest)
    atoms = read_atoms(bundle_dir / "atoms.npz", manifest)
    verify_derived_values(bundle_dir, manifest, atoms)
    return Bundle(path=bundle_dir, manifest=manifest, atoms=atoms, digest=actual)
