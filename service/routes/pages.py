"""The pages: the atom explorer (GET /), the bundle's training report (/report/) and offline API
docs (/docs, /redoc). The data the explorer draws comes from the JSON API (/v1/*; the bank's
map: routes/bank_map.py).

Everything a browser loads comes from this service: the page from `service/static/`, the
Swagger UI and ReDoc assets from the `fastapi-offline` wheel (MIT), so the pages work on a
machine without internet. The page, the report and the docs are public (like /openapi.json);
the data behind the page (/v1/*) needs the API key when one is configured, and the page asks
the person for it.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException

from ..errors import NotReady
from ..runtime import Runtime



log = logging.getLogger(__name__)

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# The docs pages may load nothing from outside: ReDoc hard-codes its maker's logo from a CDN; under
# this policy the browser refuses it without a network request (ReDoc then hides the image).
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


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
    """A file of the (first served) bundle's report/ folder; only files the manifest lists (checksummed at start)."""
    return report_of(request.app.state.atom.runtime, name)


@router.get("/models/{model}/report", include_in_schema=False)
async def model_report_redirect() -> RedirectResponse:
    return RedirectResponse("report/")


@router.get("/models/{model}/report/{name:path}", include_in_schema=False)
async def model_report_file(model: str, name: str, request: Request) -> FileResponse:
    """A file of the report of the model served as `model` (several models in one service)."""
    served = request.app.state.atom.served.get(model)
    if served is None and request.app.state.atom.served:
        raise HTTPException(404, f"no model {model!r} is served here")
    return report_of(served.runtime if served else None, name)


def report_of(runtime: Runtime | None, name: str) -> FileResponse:
    if runtime is None:
        raise NotReady("the model is not loaded yet")
    relative = f"report/{name or 'report.html'}"
    if relative not in runtime.manifest.files:
        what = "this bundle has no training report (it was exported without one)" if not name else f"no report file {name!r}"
        raise HTTPException(404, what)
    return FileResponse(runtime.bundle.path / relative, headers={"Cache-Control": "no-cache"})
