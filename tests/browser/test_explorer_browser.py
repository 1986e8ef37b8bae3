"""The explorer, the report and the API docs in headless Chromium, against the real service.

Each test checks what a person would see (components coloured by role, the composition, the
neighbours, a drawn map, rendered docs) against what the API answers for the same input, that
the page logged no error, and that nothing was fetched from outside the service.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.browser.conftest import serve

ROLE_COLOURS = {"electron": "rgb(0, 114, 178)", "proton": "rgb(213, 94, 0)", "neutron": "rgb(153, 153, 153)"}
TEXT = "t01 t08 t18 t05 t13 t21"  # tokens of the synthetic "periodic table"


def atomize(base_url: str, value, rank_by: str = "distance", headers: dict | None = None) -> dict:
    response = httpx.post(f"{base_url}/v1/atomize", json={"inputs": [value], "neighbors": 8, "rank_by": rank_by},
                          headers=headers or {})
    response.raise_for_status()
    return response.json()["results"][0]


def painted_pixels(page, selector: str) -> int:
    """Canvas pixels that are not blank (not transparent and not white)."""
    return page.eval_on_selector(selector, """canvas => {
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < data.length; i += 4)
            if (data[i + 3] > 0 && (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250)) count++;
        return count;
    }""")


def neighbour_rows(page) -> list[list[str]]:
    return page.eval_on_selector_all("#neighbors tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))")


def test_text_model_shows_roles_composition_neighbours_and_map(watch, text_url, text_loaded):
    view = watch(text_url)
    page = view.page
    page.goto(f"{text_url}/")
    page.wait_for_selector("#components .component")  # the page's own example, at once
    page.fill("#text-input", TEXT)
    page.press("#text-input", "Enter")
    expected = atomize(text_url, TEXT)
    page.wait_for_function("n => document.querySelectorAll('#components .component').length === n",
                           arg=len(expected["components"]))

    # the model card
    facts = dict(zip(page.locator("#model-facts dt").all_inner_texts(), page.locator("#model-facts dd").all_inner_texts()))
    manifest = text_loaded.manifest
    assert facts["name"] == manifest.name and facts["modality"] == "text"
    assert facts["bank"].startswith(f"{len(text_loaded.atoms):,} atoms") and facts["device"].startswith("cpu")
    assert facts["device"].endswith("fp32") and manifest.training.dataset in facts["trained on"]
    runtime = httpx.get(f"{text_url}/v1/model", timeout=10).json()["runtime"]
    batches = f"{runtime['workers']} batch{'' if runtime['workers'] == 1 else 'es'} at once"
    threads = f"{runtime['threads_per_worker']} thread{'' if runtime['threads_per_worker'] == 1 else 's'} each"
    assert facts["inference"] == f"{batches}, {threads}"

    # every component, coloured by its role, with the role also as text
    chips = page.locator("#components .component")
    assert chips.count() == len(expected["components"])
    for i, component in enumerate(expected["components"]):
        chip = chips.nth(i)
        assert chip.get_attribute("data-role") == component["role"]
        assert chip.locator(".role").inner_text() == component["role"]
        assert chip.evaluate("e => getComputedStyle(e).borderBottomColor") == ROLE_COLOURS[component["role"]]
    assert chips.nth(0).locator("span").first.inner_text() == expected["components"][0]["token"]
    chips.nth(2).hover()  # probabilities on hover
    detail = page.locator("#component-detail").inner_text()
    for role, p in expected["components"][2]["probabilities"].items():
        assert f"{role}\n" in detail and f"{p:.3f}" in detail
    chips.nth(1).focus()  # and on focus (keyboard)
    assert f"{expected['components'][1]['probabilities']['proton']:.3f}" in page.locator("#component-detail").inner_text()

    # the composition chart: bars proportional to the soft counts, the numbers as text
    composition = expected["composition"]
    bars = {name: float(page.get_attribute(f".comp-bar[data-name={name}]", "width")) for name in ("electrons", "protons", "neutrons")}
    counts = np.array([composition["electrons"], composition["protons"], composition["neutrons"]])
    np.testing.assert_allclose(np.array(list(bars.values())) / sum(bars.values()), counts / counts.sum(), atol=0.02)
    label = page.get_attribute("#composition-chart", "aria-label")
    assert f"radius {composition['radius']:.3f}" in label and f"charge {composition['charge']:.3f}" in label

    # the neighbours, as the API ranks them, then ranked by energy
    rows = neighbour_rows(page)
    assert [int(r[1]) for r in rows] == [n["id"] for n in expected["neighbors"]]
    assert [r[3] for r in rows] == [f"{n['distance']:.4f}" for n in expected["neighbors"]]
    page.check("input[name=rank][value=energy]")
    by_energy = atomize(text_url, TEXT, rank_by="energy")
    page.wait_for_function("ids => [...document.querySelectorAll('#neighbors tbody tr td:nth-child(2)')]"
                           ".map(td => td.textContent).join() === ids", arg=",".join(str(n["id"]) for n in by_energy["neighbors"]))
    energies = [float(r[4]) for r in neighbour_rows(page)]
    assert energies == sorted(energies)

    # the map: the bank sample, the query and its 8 neighbours, really painted
    canvas = page.locator("#map")
    assert int(canvas.get_attribute("data-atoms-drawn")) == min(len(text_loaded.atoms), 2000)
    assert canvas.get_attribute("data-neighbours-drawn") == "8" and canvas.get_attribute("data-query-drawn") == "yes"
    assert painted_pixels(page, "#map") > 5000
    page.check("#map-zoom")  # framed on the input and its neighbours: fewer bank atoms in view
    assert int(canvas.get_attribute("data-atoms-drawn")) < min(len(text_loaded.atoms), 2000)
    assert canvas.get_attribute("data-neighbours-drawn") == "8" and painted_pixels(page, "#map") > 2000
    view.screenshot("explorer-text-zoomed")
    page.uncheck("#map-zoom")

    # another input updates everything
    page.fill("#text-input", "a b c")
    page.click("#text-form button[type=submit]")
    page.wait_for_function("n => document.querySelectorAll('#components .component').length === n",
                           arg=len(atomize(text_url, "a b c")["components"]))
    page.fill("#text-input", TEXT)
    page.click("#text-form button[type=submit]")
    page.wait_for_function("n => document.querySelectorAll('#components .component').length === n",
                           arg=len(expected["components"]))
    page.check("input[name=rank][value=distance]")
    page.wait_for_timeout(300)
    view.screenshot("explorer-text")
    assert view.errors == [] and view.outside() == []


def test_image_model_drawing_pad(watch, numeric_url, numeric_loaded):
    view = watch(numeric_url)
    page = view.page
    page.goto(f"{numeric_url}/")
    page.wait_for_selector("#pad-form:not([hidden])")
    assert page.locator("#text-form").is_hidden()
    assert page.locator("#pad-size").inner_text() == "8 × 8"
    assert int(page.get_attribute("#map", "data-atoms-drawn")) == len(numeric_loaded.atoms)  # the map before any input
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.15 * box["height"])
    with page.expect_request("**/v1/atomize") as sent:  # atomized when the stroke ends
        page.mouse.down()
        for t in np.linspace(0.15, 0.85, 12):  # a vertical stroke: a "1"
            page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + t * box["height"])
        page.mouse.up()
    pixels = np.asarray(sent.value.post_data_json["inputs"][0])  # 64 raw pixels, digits' range 0..16
    assert pixels.shape == (64,) and pixels.max() == pytest.approx(16, rel=0.05) and pixels.min() == 0
    image = pixels.reshape(8, 8)
    assert image[:, 3:5].sum() > 4 * image[:, [0, 7]].sum()  # the ink is where the stroke went: the middle columns
    patches = page.locator("#pad-overlay rect.patch")
    patches.first.wait_for()
    assert patches.count() == 16  # 8 x 8 pixels in 2 x 2 patches
    pixels = pixels.tolist()
    expected = atomize(numeric_url, pixels)
    assert [patches.nth(i).get_attribute("data-role") for i in range(16)] == [c["role"] for c in expected["components"]]
    assert [int(r[1]) for r in neighbour_rows(page)] == [n["id"] for n in expected["neighbors"]]
    patches.nth(5).hover()
    role = expected["components"][5]["role"]
    assert f"patch 5 is {'an' if role == 'electron' else 'a'} {role}" in page.locator("#component-detail").inner_text()
    assert page.get_attribute("#map", "data-neighbours-drawn") == "8" and painted_pixels(page, "#map") > 2000
    view.screenshot("explorer-digits")
    assert view.errors == [] and view.outside() == []


def test_report_page(watch, text_url):
    view = watch(text_url)
    page = view.page
    page.goto(f"{text_url}/report")  # redirected to /report/
    assert page.url == f"{text_url}/report/"
    page.wait_for_load_state("load")
    assert "atom model" in page.locator("h1").inner_text()
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert sorted(src for src, _ in sizes) == ["atoms.png", "loss.png", "nn_distance.png", "role_usage.png", "roles.png"]
    assert all(width > 200 for _, width in sizes)
    assert "most characteristic" in page.content()
    view.screenshot("report")
    assert view.errors == [] and view.outside() == []


def test_docs_and_redoc_work_offline(watch, text_url):
    view = watch(text_url)
    page = view.page
    page.goto(f"{text_url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Atomizer" in page.locator(".swagger-ui .info .title").inner_text()
    page.wait_for_selector("#operations-atomize-atomize_v1_atomize_post")
    view.screenshot("docs")
    page.goto(f"{text_url}/redoc")
    page.wait_for_selector("h1")
    assert "Atomizer" in page.locator("h1").first.inner_text()
    page.get_by_text("/v1/atomize").first.wait_for()
    view.screenshot("redoc")
    # ReDoc hard-codes its maker's logo from a CDN: the page's policy refuses it before any request
    refused = [e for e in view.errors if "Content Security Policy" in e and "cdn.redoc.ly/redoc/logo-mini.svg" in e]
    assert view.errors == refused and len(refused) <= 1 and view.outside() == [], (view.errors, view.outside())
    assert any(url.endswith("/static/docs/swagger-ui-bundle.js") for url in view.requests)


def test_page_asks_for_the_api_key_and_keeps_it_in_the_session(watch, text_loaded):
    key = "s3cret-key-for-the-test"
    with serve(text_loaded, api_key=key) as url:
        html = httpx.get(f"{url}/").text
        assert key not in html and httpx.get(f"{url}/v1/model").status_code == 401
        view = watch(url)
        page = view.page
        page.goto(f"{url}/")
        page.wait_for_selector("#key-panel:not([hidden])")
        assert page.locator("#main").is_hidden()
        page.fill("#key-input", "wrong")
        page.click("#key-form button")
        page.wait_for_function("document.querySelector('#key-error').textContent.includes('invalid API key')")
        page.fill("#key-input", key)
        page.click("#key-form button")
        page.wait_for_selector("#components .component")
        assert page.locator("#key-panel").is_hidden() and page.locator("#forget-key").is_visible()
        assert page.evaluate("sessionStorage.getItem('atomizer.apiKey')") == key
        assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
        expected = atomize(url, page.input_value("#text-input"), headers={"Authorization": f"Bearer {key}"})
        assert page.locator("#components .component").count() == len(expected["components"])
        # the only errors are the browser's own notes of the two refused requests (no key, wrong key)
        assert all("401" in error for error in view.errors) and len(view.errors) == 2, view.errors
        assert view.outside() == []


def test_neighbours_show_what_a_bank_stored(watch, text_url):
    """Banks built by `atomize index` store each atom's text and columns as `metadata`; the page
    shows them. The bundle's own bank stores only the training text, so the real answer is
    extended here in flight."""
    view = watch(text_url)
    page = view.page

    def add_metadata(route):
        body = route.fetch().json()
        for i, neighbor in enumerate(body["results"][0]["neighbors"]):
            neighbor["metadata"] = {"text": f"<b>stored text {i}</b>", "source": "corpus.csv"}
        route.fulfill(json=body)

    page.route("**/v1/atomize", add_metadata)
    page.goto(f"{text_url}/")
    page.wait_for_selector("#neighbors tbody tr")
    assert page.locator("#stored-header").is_visible()
    stored = page.locator("#neighbors tbody td.stored").all_inner_texts()
    assert stored[0] == '<b>stored text 0</b> {"source":"corpus.csv"}'  # as text, never as HTML
    assert page.locator("#neighbors tbody b").count() == 0
    assert view.errors == []


TEXT_ROLES_JS = """box => [...box.querySelectorAll('.span-role')].map(span => ({
    component: Number(span.dataset.component), role: span.dataset.role, title: span.title,
    colour: getComputedStyle(span).borderBottomColor,
    text: [...span.childNodes].filter(n => !(n.classList && n.classList.contains('chunk-mark'))).map(n => n.textContent).join('')}))"""


def test_long_text_read_whole_in_windows_coloured_by_role(watch, text_url, text_loaded):
    """A text past the model's limit, read whole: the text itself coloured by role (offsets in
    code points: an emoji must not shift the colours), each window marked in it and listed, and
    the neighbours' training texts."""
    limit = text_loaded.manifest.input.max_components
    words = TEXT.split()
    long_text = " ".join(words[i % len(words)] for i in range(3 * limit))
    long_text = long_text.replace(" ", " 🙂 ", 1)  # two UTF-16 units, one code point
    body = {"inputs": [long_text], "neighbors": 8, "rank_by": "distance", "chunk": True,
            "include": ["embedding", "composition", "components", "neighbors", "chunks"]}
    response = httpx.post(f"{text_url}/v1/atomize", json=body)
    response.raise_for_status()
    expected = response.json()["results"][0]
    chunks, components = expected["chunks"], expected["components"]
    assert len(chunks) > 2 and all(c["start"] is not None for c in components)

    view = watch(text_url)
    page = view.page
    page.goto(f"{text_url}/")
    page.wait_for_selector("#components .component")
    assert str(limit) in page.locator("#chunk-hint").inner_text()
    page.check("#chunk-toggle")  # re-reads the example: short, so one window
    page.wait_for_selector("#chunks-box:not([hidden])")
    assert page.locator("#chunks tbody tr").count() == 1 and page.locator("#text-roles .chunk-mark").count() == 0
    page.fill("#text-input", long_text)
    with page.expect_request("**/v1/atomize") as sent:
        page.press("#text-input", "Enter")
    assert sent.value.post_data_json["chunk"] is True and "chunks" in sent.value.post_data_json["include"]
    page.wait_for_function("n => document.querySelectorAll('#chunks tbody tr').length === n", arg=len(chunks))

    # the text itself, coloured: every component's characters in its role's colour, as the API says
    spans = page.eval_on_selector("#text-roles", TEXT_ROLES_JS)
    assert [s["component"] for s in spans] == list(range(len(components)))
    for span, component in zip(spans, components):
        assert span["role"] == component["role"] and span["colour"] == ROLE_COLOURS[component["role"]]
        assert span["text"] == long_text[component["start"]:component["end"]]  # Python slices code points
        assert f"“{component['token']}”: {component['role']}" in span["title"]
        assert f"{component['probabilities']['electron']:.3f}" in span["title"]
    shown = page.eval_on_selector("#text-roles", "box => [...box.childNodes].filter(n => !(n.classList && "
                                  "n.classList.contains('chunk-mark'))).map(n => n.textContent).join('')")
    assert shown == long_text  # all of it, the text between components uncoloured
    assert page.locator("#text-roles > :not(.span-role):not(.chunk-mark)").evaluate_all(
        "nodes => nodes.every(n => getComputedStyle(n).backgroundColor === 'rgba(0, 0, 0, 0)')")
    assert page.locator("#text-roles-note").is_hidden()  # read whole: nothing cut

    # the windows: one marker where each begins, one row each
    marks = page.locator("#text-roles .chunk-mark")
    assert marks.count() == len(chunks)
    assert [int(marks.nth(i).get_attribute("data-chunk")) for i in range(marks.count())] == [c["index"] for c in chunks]
    rows = page.eval_on_selector_all("#chunks tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert [r[1] for r in rows] == [f"{c['start']}–{c['end']}" for c in chunks]
    assert [int(r[2]) for r in rows] == [c["components"] for c in chunks]
    assert [r[4] for r in rows] == [f"{c['energy_with_next']:.4f}" for c in chunks[:-1]] + ["–"]
    assert page.locator("#text-roles .shared").count() > 0  # neighbouring windows overlap
    page.locator("#chunks tbody tr").nth(1).hover()  # a row shows its window in the text
    inside = page.locator("#text-roles .in-window").evaluate_all("nodes => nodes.map(n => n.textContent).join('')")
    assert inside == long_text[chunks[1]["start"]:chunks[1]["end"]]

    # the neighbours' texts, shortened, in full on hover
    rows = neighbour_rows(page)
    assert [int(r[1]) for r in rows] == [n["id"] for n in expected["neighbors"]]
    texts = [(n.get("metadata") or {}).get("text") for n in expected["neighbors"]]
    assert all(texts), "the bundle's own bank returned neighbours without metadata.text"
    cells = page.locator("#neighbors tbody td.stored")
    for i, text in enumerate(texts):
        assert cells.nth(i).get_attribute("title") == text
        shown = cells.nth(i).inner_text()
        assert shown == text if len(text) <= 80 else (len(shown) <= 80 and shown.endswith("…") and text.startswith(shown[:-1]))
    page.mouse.move(0, 0)
    page.wait_for_timeout(300)
    view.screenshot("explorer-long-text")

    # a long text without the control is cut: the unread end greyed, and said
    page.uncheck("#chunk-toggle")
    page.wait_for_selector("#chunks-box", state="hidden")
    page.wait_for_selector("#text-roles-note:not([hidden])")
    cut = atomize(text_url, long_text)
    assert cut["truncated"] and page.locator("#text-roles .span-role").count() == len(cut["components"])
    assert page.locator("#text-roles .unread").count() == 1
    assert view.errors == [] and view.outside() == []


def test_a_picker_chooses_among_several_models(watch, text_loaded, numeric_loaded):
    text, digits = text_loaded.manifest.name, "digits"  # the second served under a name of its own
    with serve([text_loaded, f"{digits}={numeric_loaded.path}"]) as url:
        view = watch(url)
        page = view.page
        page.goto(f"{url}/")
        page.wait_for_selector("#components .component")  # the first model, text, with its own example
        assert page.locator("#model-pick").is_visible()
        assert page.eval_on_selector_all("#model-picker option", "o => o.map(x => x.value)") == [text, digits]
        assert page.locator("#model-picker").input_value() == text
        assert page.get_attribute("#report-link", "href") == f"models/{text}/report/"
        with page.expect_request("**/v1/atomize") as sent:
            page.fill("#text-input", TEXT)
            page.press("#text-input", "Enter")
        assert sent.value.post_data_json["model"] == text
        page.select_option("#model-picker", digits)  # the page reloads for the other model
        page.wait_for_url(f"{url}/?model={digits}")
        page.wait_for_selector("#pad-form:not([hidden])")
        facts = dict(zip(page.locator("#model-facts dt").all_inner_texts(), page.locator("#model-facts dd").all_inner_texts()))
        assert facts["name"] == f"{digits} (bundle {numeric_loaded.manifest.name})" and facts["modality"] == "numeric"
        assert page.title() == f"{digits} · Atomizer explorer"
        assert int(page.get_attribute("#map", "data-atoms-drawn")) == len(numeric_loaded.atoms)  # its own bank
        view.screenshot("explorer-two-models")
        report = httpx.get(f"{url}/models/{text}/report/")
        assert report.status_code == 200 and "atom model" in report.text
        assert httpx.get(f"{url}/models/nope/report/").status_code == 404
        assert view.errors == [] and view.outside() == []
