"""GET /v1/bank/map: the bank on its 2D map, the data behind the explorer page's canvas.

The map is the one stored at export (`projection.npz`: the bank's top two principal axes and
every atom's position), read once per loaded bundle; a query is placed on it by the same
projection from its embedding. The response models live in service/schemas.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Query, Request

from contract.bundle import Bundle, BundleError
from contract.projection import PROJECTION_FILE, Projection, fit_projection, read_projection

from ..errors import InternalError, InvalidInput, ModelNotFound, NotReady, Overloaded, TooLarge, Unauthorized
from ..schemas import BankMap, MapAtoms, ProjectionOut
from .deps import Serving
from .handlers import error_responses

log = logging.getLogger(__name__)

router = APIRouter()

MAP_SAMPLE_SEED = 0
DEFAULT_MAP_ATOMS = 2000  # enough to see the bank's shape; a 27k-atom bank would be ~1 MB of JSON
MAX_MAP_ATOMS = 20_000
MAX_MAP_IDS = 100
MAP_ERRORS = error_responses(InvalidInput, TooLarge, Unauthorized, NotReady, Overloaded, ModelNotFound, InternalError)
STATS_FILE = "report/stats.json"


@dataclass(frozen=True)
class MapSource:
    """The bank's stored map, read once per loaded bundle."""

    projection: Projection
    xy: np.ndarray  # (M, 2) float32
    row_of_id: dict[str, int]
    stats: dict | None


_map_lock = threading.Lock()


def load_map_source(bundle: Bundle) -> MapSource:
    bank = bundle.atoms
    rows, dim = len(bank), bundle.manifest.embedding_dim
    path = bundle.path / PROJECTION_FILE
    if PROJECTION_FILE in bundle.manifest.files:  # its checksum was verified when the bundle loaded
        try:
            projection, xy = read_projection(path, rows, dim)
        except (OSError, ValueError) as exc:
            raise BundleError(path, str(exc)) from None
    else:
        log.warning("%s: the bundle has no %s (exported before the explorer); fitting the map now", bundle.path,
                    PROJECTION_FILE)
        projection = fit_projection(bank.embedding)
        xy = projection.apply(bank.embedding)
    stats = None
    if STATS_FILE in bundle.manifest.files:
        try:
            stats = json.loads((bundle.path / STATS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(bundle.path / STATS_FILE, f"not valid JSON ({exc})") from None
    return MapSource(projection, xy, {str(value): row for row, value in enumerate(bank.id.tolist())}, stats)


def map_source(request: Request, bundle: Bundle) -> MapSource:
    with _map_lock:  # two first requests at once read the file once
        cache = getattr(request.app.state, "explorer_maps", None)
        if cache is None:
            cache = request.app.state.explorer_maps = {}  # one per served bundle
        cached = cache.get(bundle.path)
        if cached is None or cached[0] is not bundle:
            cached = cache[bundle.path] = (bundle, load_map_source(bundle))
        return cached[1]


def map_atoms(bundle: Bundle, source: MapSource, rows: np.ndarray) -> MapAtoms:
    bank, names = bundle.atoms, bundle.manifest.label_names
    return MapAtoms(
        id=bank.id[rows].tolist(),
        label=[names[i] if 0 <= i < len(names) else str(i) for i in bank.label[rows].tolist()],
        x=source.xy[rows, 0].tolist(),
        y=source.xy[rows, 1].tolist(),
        radius=bank.radius[rows].tolist(),
    )


@router.get("/v1/bank/map", response_model=BankMap, responses=MAP_ERRORS, tags=["explorer"])
async def bank_map(
    request: Request,
    serving: Serving,
    limit: int = Query(DEFAULT_MAP_ATOMS, ge=0, le=MAX_MAP_ATOMS, description="atoms to draw (a seeded sample)"),
    ids: str = Query("", max_length=4000, description=f"comma-separated bank ids to return too (at most {MAX_MAP_IDS})"),
    model: str = Query("", max_length=128, description="the served model whose bank to map (empty: the first served)"),
) -> BankMap:
    """The bank on its stored 2D map (fitted once at export): a seeded sample of atoms, plus the
    atoms named in `ids`; place a query by the same projection from its embedding."""
    bundle = serving.named(model or None).runtime.bundle
    source = await asyncio.to_thread(map_source, request, bundle)
    total = len(bundle.atoms)
    wanted = [part.strip() for part in ids.split(",") if part.strip()]
    if len(wanted) > MAX_MAP_IDS:
        raise TooLarge(f"ids names {len(wanted)} atoms; the limit is {MAX_MAP_IDS}")
    requested = np.asarray([source.row_of_id[i] for i in wanted if i in source.row_of_id], dtype=np.int64)
    if total <= limit:
        sample = np.arange(total)
    else:
        sample = np.sort(np.random.default_rng(MAP_SAMPLE_SEED).choice(total, limit, replace=False))
    projection = source.projection
    return BankMap(
        projection=ProjectionOut(kind=projection.kind, mean=projection.mean, axes=projection.axes),
        total=total,
        sampled=len(sample),
        atoms=map_atoms(bundle, source, sample),
        requested=map_atoms(bundle, source, requested),
        label_names=bundle.manifest.label_names,
        radius_range=bundle.manifest.radius_range,
        stats=source.stats,
    )
