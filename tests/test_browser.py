"""The explorer page in a real browser: Playwright driving the system's Chromium headless (Debian's package,
installed by ./run.sh setup; Playwright's own browser downloads are never used) against a real server on
127.0.0.1. Every test saves a screenshot; set AEKIT_DOCS_SCREENSHOTS=DIR to also write the README's ones there.

Skipped, with the reason, when the playwright package or a chromium executable is missing.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aekit
from aekit.serve import make_explorer, start

playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

VIEWPORT = {"width": 1280, "height": 800}
N_MAP = 1000


def _chromium() -> str | None:
    for candidate in (os.environ.get("AEKIT_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def server():
    explorer = make_explorer(aekit.pretrained("mnist-vae"), data="mnist-5k", limit=N_MAP)
    with start(explorer) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium executable on PATH (./run.sh setup installs Debian's chromium; or set AEKIT_CHROMIUM)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-default-apps", "--metrics-recording-only"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("explorer-screenshots")


@pytest.fixture
def page(browser, server):
    """A fresh page on the explorer, loaded; fails the test on script errors or traffic leaving the server."""
    context = browser.new_context(viewport=VIEWPORT)
    outside, errors = [], []

    def only_local(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 4" not in m.text else None)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    yield page
    context.close()
    assert not outside, f"requests left 127.0.0.1: {outside}"
    assert not errors, errors


def snap(page, shots: Path, name: str, docs_name: str | None = None) -> Path:
    """Screenshot into the run's folder; the README's few also go to $AEKIT_DOCS_SCREENSHOTS as small PNGs."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path))
    with Image.open(path) as im:
        assert im.size == (VIEWPORT["width"], VIEWPORT["height"])
        folder = os.environ.get("AEKIT_DOCS_SCREENSHOTS")
        if docs_name and folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            small = im.convert("RGB").quantize(colors=192, dither=Image.Dither.NONE)
            small.save(Path(folder) / f"{docs_name}.png", optimize=True)
    return path


def decoded(page) -> str:
    return page.get_attribute("#decoded", "src")


def wait_changed(page, selector: str, old: str | None) -> None:
    page.wait_for_function("([sel, old]) => { const s = document.querySelector(sel).getAttribute('src');"
                           " return s && s !== old; }", arg=[selector, old], timeout=10_000)


def draw_seven(page) -> None:
    """One stroke through three corners of a 7, in fractions of the canvas."""
    box = page.locator("#draw").bounding_box()
    x, y, w = box["x"], box["y"], box["width"]
    corners = [(0.25, 0.22), (0.75, 0.22), (0.45, 0.85)]
    page.mouse.move(x + corners[0][0] * w, y + corners[0][1] * w)
    page.mouse.down()
    for (ax, ay), (bx, by) in itertools.pairwise(corners):
        for t in np.linspace(0, 1, 12)[1:]:
            page.mouse.move(x + (ax + t * (bx - ax)) * w, y + (ay + t * (by - ay)) * w)
    page.mouse.up()


def test_page_loads_with_the_map_and_its_points(page, shots):
    assert page.get_attribute("#map", "data-points") == str(N_MAP)
    assert "mnist-vae · VAE · 32-D latent" in page.inner_text("#model-line")
    assert page.locator("#legend span").count() == 10
    assert "z = mean + x·PC1 + y·PC2" in page.inner_text("#map-how")
    assert page.locator("#sliders input[type=range]").count() == 8
    # The map canvas really holds coloured dots: count saturated pixels.
    coloured = page.evaluate("""() => {
        const c = document.getElementById('map'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 60) n++;
        return n; }""")
    assert coloured > 2000
    assert decoded(page).startswith("data:image/png")
    assert page.locator("#strip img").count() == 10  # the default interpolation
    snap(page, shots, "1-loaded")


def test_hover_and_click_on_the_map_change_the_decoded_image(page, shots):
    box = page.locator("#map").bounding_box()
    start_image = decoded(page)
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.25 * box["height"])
    wait_changed(page, "#decoded", start_image)
    assert page.inner_text("#decoded-caption").startswith("map point")
    assert page.locator("#original-fig").is_hidden()  # the pinned test image's thumbnail is not the hovered point's
    snap(page, shots, "2-hover", docs_name="explorer-hover")
    page.mouse.move(box["x"] - 30, box["y"])  # leaving the map shows the kept code again
    page.wait_for_function("(old) => document.getElementById('decoded').getAttribute('src') === old", arg=start_image)
    page.mouse.click(box["x"] + 12, box["y"] + 12)  # a corner: no dot there, so a map point is decoded
    wait_changed(page, "#decoded", start_image)
    assert page.inner_text("#decoded-caption").startswith("map point")
    clicked = decoded(page)
    x, y = page.evaluate("() => state.view.toPx(state.map.points[42])")
    page.mouse.click(box["x"] + x, box["y"] + y)  # on a dot: that test image
    page.wait_for_function("() => document.getElementById('decoded-caption').textContent.startsWith('test image #')")
    assert decoded(page) != clicked and page.locator("#original-fig").is_visible()
    snap(page, shots, "3-click")


def test_a_slider_changes_the_decoded_image(page, shots):
    before = decoded(page)
    value = float(page.input_value("#slider-0"))
    target = 2.5 if value < 0 else -2.5
    page.locator("#slider-0").fill(str(target))
    wait_changed(page, "#decoded", before)
    assert float(page.inner_text("#slider-value-0")) == pytest.approx(target, abs=0.03)  # snapped to the step
    assert page.inner_text("#decoded-caption").endswith("edited")
    snap(page, shots, "4-slider")
    after_slider = decoded(page)
    page.click("#sample")
    wait_changed(page, "#decoded", after_slider)
    assert page.inner_text("#decoded-caption").startswith("random sample")


def test_drawing_produces_a_reconstruction(page, shots):
    assert page.locator("#results").is_hidden()
    draw_seven(page)
    page.wait_for_selector("#an-recon[src^='data:image/png']", timeout=10_000)
    assert page.locator("#results").is_visible() and page.locator("#anomaly").is_visible()
    text = page.inner_text("#anomaly-text")
    assert "reconstruction error" in text and "% of the test images" in text
    for image in ("#an-input", "#an-errors", "#an-noisy", "#an-denoised"):
        assert page.get_attribute(image, "src").startswith("data:image/png")
    before = page.get_attribute("#an-noisy", "src")
    page.locator("#noise").fill("0.2")  # a new noise level re-analyses the drawing
    wait_changed(page, "#an-noisy", before)
    assert page.inner_text("#noisy-caption") == "noisy, σ = 0.20"
    page.click("#to-decoder")
    assert page.inner_text("#decoded-caption") == "code of your drawing"
    snap(page, shots, "5-drawing", docs_name="explorer")


def test_a_malformed_upload_shows_an_error_and_the_server_stays_up(page, shots):
    page.set_input_files("#upload", files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"not a png"}])
    message = page.locator("#draw-msg")
    message.wait_for(state="visible", timeout=10_000)
    assert "Could not analyse broken.png" in message.inner_text() and "not a readable" in message.inner_text()
    assert page.locator("#results").is_hidden()
    snap(page, shots, "6-bad-upload")
    digit = Image.fromarray(aekit.load_dataset("mnist-5k", progress=False).test.images[0, 0].numpy())
    buffer = io.BytesIO()
    digit.save(buffer, format="PNG")
    page.set_input_files("#upload", files=[{"name": "seven.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    page.wait_for_selector("#an-recon[src^='data:image/png']", timeout=10_000)
    assert message.is_hidden()
    uploaded = page.get_attribute("#an-input", "src")
    draw_seven(page)  # and drawing still works too, on a fresh canvas
    wait_changed(page, "#an-input", uploaded)
    assert message.is_hidden()
    snap(page, shots, "7-upload-after-error")


def test_interpolation_between_two_test_images(page, shots):
    page.locator("#frames").fill("6")
    page.wait_for_function("() => document.querySelectorAll('#strip img').length === 6")
    first = page.get_attribute("#strip img >> nth=0", "src")
    page.fill("#end-a input", "3")
    page.locator("#end-a input").dispatch_event("change")
    page.wait_for_function("(old) => document.querySelector('#strip img').getAttribute('src') !== old", arg=first)
    page.fill("#end-b input", "5000")  # out of range: a message, no request
    page.locator("#end-b input").dispatch_event("change")
    assert "pick a test image from 0 to 999" in page.inner_text("#interp-msg")
    snap(page, shots, "8-interpolation")
