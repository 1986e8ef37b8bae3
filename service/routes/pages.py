"""The atom explorer (GET /), the bundle's training report (/report/), offline API docs
(/docs, /redoc) and the bank's 2D map the page draws (GET /v1/bank/map).

Everything a browser loads comes from this service: the page from `service/static/`, the
Swagger UI and ReDoc assets from the `fastapi-offline` wheel (MIT), so the pages work on a
machine without internet. The page, the report and the docs are public (like /openapi.json);
the data behind the page (/v1/*) needs the API key when one is configured, and the page asks
the person for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from contract.bundle import Bundle, BundleError
from contract.projection import PROJECTION_FILE, Projection, fit_projection, read_projection

from ..errors import InternalError, InvalidInput, NotReady, Overloaded, TooLarge, Unauthorized
from .deps import Serving
from .handlers import error_responses

log = logging.getLogger(__name__)

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
MAP_SAMPLE_SEED = 0
DEFAULT_MAP_ATOMS = 2000  # enough to see the bank's shape; a 27k-atom bank would be ~1 MB of JSON
MAX_MAP_ATOMS = 20_000
MAX_MAP_IDS = 100
MAP_ERRORS = error_responses(InvalidInput, TooLarge, Unauthorized, NotReady, Overloaded, InternalError)
# The docs pages may load nothing from outside: ReDoc hard-codes its maker's logo from a CDN; under
# this policy the browser refuses it without a network request (ReDoc then hides the image).
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
STATS_FILE = "report/stats.json"


@cache
def static_files() -> dict[str, Path]:
    """name -> path of every file the page may load: a fixed list, so no request can name
    anything else (no path traversal by construction)."""
    page = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}
    docs = Path(str(files("fastapi_offline") / "static"))
    return page | {f"docs/{name}": docs / name for name in DOCS_ASSETS if (docs / name).is_file()}


def static_file(name: str) -> FileResponse:
    path = static_files().get(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    # no-cache: the browser revalidates (ETag), so a new page version is seen at once
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
async def explorer_page() -> FileResponse:
    return static_file("index.html")


@router.get("/static/{name:path}", include_in_schema=False)
async def static_asset(name: str) -> FileResponse:
    return static_file(name)


# ---- offline API docs ------------------------------------------------------------------------


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}/static/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/static/docs/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/docs/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # the validator badge would call an outside server
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/static/docs/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static/docs/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


# ---- the bundle's training report ------------------------------------------------------------


@router.get("/report", include_in_schema=False)
async def report_redirect() -> RedirectResponse:
    return RedirectResponse("report/")  # relative: the page's own links (figures) resolve under /report/


@router.get("/report/{name:path}", include_in_schema=False)
async def report_file(name: str, request: Request) -> FileResponse:
    """A file of the bundle's report/ folder; only files the manifest lists (checksummed at start)."""
    runtime = request.app.state.atom.runtime
    if runtime is None:
        raise NotReady("the model is not loaded yet")
    relative = f"report/{name or 'report.html'}"
    if relative not in runtime.manifest.files:
        what = "this bundle has no training report (it was exported without one)" if not name else f"no report file {name!r}"
        raise HTTPException(404, what)
    return FileResponse(runtime.bundle.path / relative, headers={"Cache-Control": "no-cache"})


# ---- the bank's 2D map ---------------------------------------------------------------------


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


@dataclass(frozen=True)
class MapSource:
    """The bank's stored map, read once per loaded bundle."""

    projection: Projection
    xy: np.ndarray  # (M, 2) float32
    row_of_id: dict[str, int]
    stats: dict | None


_map_lock = threading.Lock()


def load_map_source(bundle: Bundle) -> MapSource:
    bank = bundle.bank
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
        cached = getattr(request.app.state, "explorer_map", None)
        if cached is None or cached[0] is not bundle:
            cached = (bundle, load_map_source(bundle))
            request.app.state.explorer_map = cached
        return cached[1]


def map_atoms(bundle: Bundle, source: MapSource, rows: np.ndarray) -> MapAtoms:
    bank, names = bundle.bank, bundle.manifest.label_names
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
) -> BankMap:
    """The bank on its stored 2D map (fitted once at export): a seeded sample of atoms, plus the
    atoms named in `ids`; place a query by the same projection from its embedding."""
    bundle = serving.runtime.bundle
    source = await asyncio.to_thread(map_source, request, bundle)
    total = len(bundle.bank)
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
