"""The served models: one bundle each, with its own runtime, batcher, request models and metric
series, under the name that requests route by (their `model`, as OpenAI's API has it).

A service serves one bundle or several (`--bundle A --bundle B`, `--bundle NAME=FOLDER`). Each
has its own ONNX Runtime session and its own batcher (queue, rounds, inference thread), so a
flood of one model's requests queues behind that model only; the event loop, the HTTP layer and
the prepare threads are shared. The first bundle given is the default: what /v1/model describes
without `?model=`, and what a request without `model` runs when it is the only one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from contract.bank import Bank, open_bank
from contract.bundle import Bundle, BundleError, load_bundle

from .batcher import Batcher
from .config import Settings, named, pinned
from .metrics import ModelMetrics
from .runtime import Item, ItemResult, Runtime
from .schemas import RequestModels

log = logging.getLogger(__name__)


class ServeSetupError(Exception):
    """Bundles that cannot be served together (two under one name, a pin or bank for no served model)."""


@dataclass(frozen=True)
class Loaded:
    """A bundle and its bank, loaded and checked, under the name it is served as."""

    name: str
    bundle: Bundle
    bank: Bank
    bank_path: Path | None  # a user's bank folder (reloaded on SIGHUP); None: the bundle's own atoms


@dataclass
class Served:
    """One served model, started: what a request routed to it uses."""

    name: str
    runtime: Runtime
    batcher: Batcher[Item, ItemResult]
    models: RequestModels  # the request bodies this bundle takes
    metrics: ModelMetrics
    bank_path: Path | None


def load_served(settings: Settings) -> list[Loaded]:
    """Every bundle of the settings with its bank, in the order given; blocking (files, checksums).

    A bundle is served under NAME (`NAME=FOLDER`) or its manifest's name. Refused, with one
    line: a bundle or bank that does not load, a digest other than its pin, two bundles under one
    name, a pin or bank for a name that no bundle is served under.
    """
    loaded: list[Loaded] = []
    for ref in settings.bundle_refs():
        bundle = load_bundle(ref.path, digest=pinned(ref.digest))
        name = ref.name or bundle.manifest.name
        pin, bank_path = ref.digest, ref.bank
        if ref.name is None:  # NAME=... entries may name it by its manifest's name
            pin = pin or settings.for_manifest_name("bundle_digest", name)
            bank_path = bank_path or (lambda b: Path(b) if b else None)(settings.for_manifest_name("bank", name))
        if pin is not None and bundle.digest != pinned(pin):
            raise BundleError(bundle.path / "manifest.json", f"bundle digest {bundle.digest} is not the pinned {pinned(pin)}")
        clash = next((other for other in loaded if other.name == name), None)
        if clash is not None:
            raise ServeSetupError(f"two bundles are served under the name {name!r}: {clash.bundle.path} and "
                                  f"{bundle.path}; give one another name with --bundle NAME=FOLDER")
        loaded.append(Loaded(name, bundle, open_bank(bundle, bank_path), bank_path))
    served = {item.name for item in loaded}
    for field in ("bank", "bundle_digest", "inference_nice", "inference_threads"):
        for entry in getattr(settings, field):
            key, _ = named(entry)
            if key is not None and key not in served:
                raise ServeSetupError(f"{field}: {entry!r} is for model {key!r}, which is not served "
                                      f"(served: {', '.join(sorted(served))})")
    return loaded
