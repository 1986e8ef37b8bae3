"""Screenshot of the explorer for a real bundle (the one in docs/explorer.png):

    .venv/bin/python -m tests.browser.capture --bundle bundles/tweets --text "what a great day" --out docs/explorer.png

Serves the bundle on a random 127.0.0.1 port, types the text (or draws a stroke on an image
model's pad), waits for the answer and saves a full-page PNG.
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

from PIL import Image

from contract.bundle import load_bundle
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, serve

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--text", default="what a great day")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1360)
    parser.add_argument("--zoom", action="store_true", help="frame the map on the input and its neighbours")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    bundle = load_bundle(args.bundle)
    with serve(bundle) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(f"{url}/")
        if bundle.manifest.input.modality == "text":
            page.wait_for_selector("#components .component")
            page.fill("#text-input", args.text)
            page.press("#text-input", "Enter")
            page.wait_for_function("t => document.querySelector('#component-detail').textContent.length > 0", arg=args.text)
        else:
            box = page.locator("#pad").bounding_box()
            page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.15 * box["height"])
            page.mouse.down()
            for step in range(13):
                page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + (0.15 + 0.7 * step / 12) * box["height"])
            page.mouse.up()
            page.wait_for_selector("#pad-overlay rect.patch")
        if args.zoom:
            page.check("#map-zoom")
        page.wait_for_timeout(500)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        png = page.screenshot(full_page=True)
        browser.close()
    # 256 colours: the page is flat colours and text, so the picture looks the same at a third of the bytes
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    log.info("saved %s", args.out)
    return args.out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
