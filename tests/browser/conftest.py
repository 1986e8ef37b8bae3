"""A real browser on the real service: Debian's headless Chromium driven by Playwright.

Playwright's own browser download cannot reach the network here, so the tests drive the
system `chromium` (`make test` installs it; see the Makefile's `browser` target). The service
runs in-process under uvicorn on a random 127.0.0.1 port, serving tiny bundles built by the
real training and export code (tests/conftest.py, shared with every test area). Screenshots go to
tmp/artifacts/browser/ (ignored by git), or to $ATOM_ARTIFACTS.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.bundle import Bundle, load_bundle
from service.config import Settings
from tests.service.processes import free_port

CHROMIUM = os.environ.get("ATOM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("ATOM_ARTIFACTS", Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "browser"))


# The tiny text (with its report) and numeric bundles of tests/conftest.py, shared with every test area.
@pytest.fixture(scope="session")
def text_loaded(text_bundle) -> Bundle:
    return load_bundle(text_bundle)


@pytest.fixture(scope="session")
def numeric_loaded(numeric_bundle) -> Bundle:
    return load_bundle(numeric_bundle)


@contextlib.contextmanager
def serve(bundle: Bundle | list[Bundle | str], **settings) -> Iterator[str]:
    """The service for `bundle` (or several, each under its manifest's name, or as a `NAME=FOLDER`
    string) under a real uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    from service.app import create_app

    port = free_port()
    if isinstance(bundle, list):
        app = create_app(Settings(bundle=[b if isinstance(b, str) else str(b.path) for b in bundle], device="cpu", port=port, **settings))
    else:
        app = create_app(Settings(bundle=bundle.path, device="cpu", port=port, **settings), bundle=bundle)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def text_url(text_loaded) -> Iterator[str]:
    with serve(text_loaded) as url:
        yield url


@pytest.fixture(scope="module")
def numeric_url(numeric_loaded) -> Iterator[str]:
    with serve(numeric_loaded) as url:
        yield url


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        message = f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install chromium) or set ATOM_CHROMIUM"
        if os.environ.get("CI") or os.environ.get("ATOM_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class PageWatch:
    """A page that records console errors, uncaught exceptions and every URL it requested."""

    def __init__(self, page, base_url: str):
        self.page, self.base_url = page, base_url
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", lambda request: self.requests.append(request.url))
        self.went_out: list[str] = []
        # Nothing may come from outside the service: a request that reaches the network layer
        # for another origin is refused here, and listed.
        page.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith((self.base_url, "data:")):
            route.continue_()
        else:
            self.went_out.append(url)
            route.abort()

    def outside(self) -> list[str]:
        return self.went_out

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def watch(browser, request):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pages: list[PageWatch] = []

    def open_page(base_url: str) -> PageWatch:
        page = context.new_page()
        page.set_default_timeout(15_000)
        pages.append(PageWatch(page, base_url))
        return pages[-1]

    yield open_page
    context.close()
