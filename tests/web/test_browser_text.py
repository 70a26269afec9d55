"""The text box of issue 11 in a real browser (Playwright + Debian's chromium): type a
phrase, find it in the shown window and in the whole scene, accept the candidates in bulk
with their proposed class (the phrase becomes a class of the layer); bad input (nothing
typed, a phrase with '.') is a short sentence in the page; a server without a text model
shows the box off with the option that turns it on. ``TERRAMASK_SCREENSHOTS=DIR`` saves a
picture of the candidates found by text.

The app runs in this process (uvicorn on 127.0.0.1) with the classic engine and a
deterministic stand-in text model (:class:`SquareFinder`, the concept protocol: the phrase
"square" finds the 24 squares of the generated scene, other phrases nothing); the real
detector path through HTTP is tests/web/test_everything_text.py's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from browsers import CHROMIUM, sync_api  # skips this module without a browser
from scipy import ndimage
from served import serve_in_thread

from helpers.scenes import write_geotiff
from helpers.squares_scene import SCENE_H, SCENE_W, squares_scene
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.models.base import as_rgb8
from terramask.models.concept.base import CLASS_COLUMN
from terramask.models.concept.resolve import TextModel

pytestmark = pytest.mark.slow
WAIT_MS = 60_000


class SquareFinder:
    """Concept backend: "square" -> every bright square of the image (score 0.9)."""

    name = "square-finder"

    def find(self, image: GeoImage, query) -> MaskSet:
        rgb = as_rgb8(image)
        labels, n = ndimage.label(rgb.mean(axis=2) > 128)
        wanted = [p for p in query.phrases if p == "square"]
        masks = np.array([labels == k for _ in wanted for k in range(1, n + 1)], dtype=bool)
        masks = masks.reshape(-1, *labels.shape)
        extras = {CLASS_COLUMN: np.array([p for p in wanted for _ in range(n)], dtype=object),
                  "predicted_iou": np.full(len(masks), 0.95, np.float32)}
        return MaskSet(masks, np.full(len(masks), 0.9, np.float32), extras=extras, transform=image.transform,
                       crs=image.crs)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two apps on the squares scene: with the stand-in text model, and without one."""
    from terramask.models.resolve import load_backend
    from terramask.web.app import create_app

    root = tmp_path_factory.mktemp("text-box")
    scene = write_geotiff(root / "squares.tif", squares_scene())
    classic = load_backend("classic")
    apps = {"text": create_app(scene, classic, out_dir=root / "out",
                               text_model=TextModel("square-finder", sam3=SquareFinder())),
            "plain": create_app(scene, classic, out_dir=root / "plain")}
    with serve_in_thread(apps["text"]) as text_url, serve_in_thread(apps["plain"]) as plain_url:
        yield {"text": text_url, "plain": plain_url}
    for app in apps.values():
        app.state.terramask.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.wait_for_function("document.getElementById('busy').hidden && "
                           "!document.getElementById('scene-name').textContent.startsWith('loading')")
    page.wait_for_selector("#classes li")
    return page


def _note(page) -> str:
    return page.locator("#ev-text-reason").inner_text()


def test_find_by_text_in_the_window_and_the_scene_then_accept_with_the_phrase_as_class(servers, browser):
    page = _open(browser, servers["text"])
    page.wait_for_function("() => document.getElementById('ev-text-reason').textContent.includes('square-finder')")
    assert page.locator("#ev-text").is_enabled() and page.locator("#ev-text-window").is_enabled()

    # bad input: a short sentence next to the box and in the status line, no job
    page.fill("#ev-text", " , ")
    with page.expect_response("**/everything") as refused:
        page.click("#ev-text-window")
    assert refused.value.status == 400
    page.wait_for_function("() => document.getElementById('ev-text-reason').classList.contains('error')")
    assert "type what to find" in _note(page) and "type what to find" in page.locator("#status").inner_text()
    page.fill("#ev-text", "roof. tree")
    with page.expect_response("**/everything") as refused:
        page.click("#ev-text-window")
    assert refused.value.status == 422  # a prompt the model cannot take
    page.wait_for_function("() => document.getElementById('ev-text-reason').textContent.includes(\"without '.'\")")
    assert len(_note(page)) < 200 and "Traceback" not in page.content()

    # the shown window (the whole scene is in view): every square, classed by the phrase
    page.fill("#ev-text", "square, tree")
    with page.expect_response("**/everything") as started:
        page.press("#ev-text", "Enter")
    assert started.value.status == 202
    sent = started.value.request.post_data_json
    assert sent["scope"] == "text" and sent["phrases"] == ["square", "tree"]
    assert sent["window"] == {"col_off": 0, "row_off": 0, "width": SCENE_W, "height": SCENE_H}
    page.wait_for_function("() => document.getElementById('ev-shown').textContent.includes('shown')")
    shown = page.evaluate("() => window.TerramaskEverything.shown()")
    assert len(shown) == 24 and {c["class"] for c in shown} == {"square"} and all(c["class_id"] is None for c in shown)
    assert page.locator("#ev-list li .cls").first.inner_text().strip() == "square"
    if os.environ.get("TERRAMASK_SCREENSHOTS"):
        page.locator("#everything").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(os.environ["TERRAMASK_SCREENSHOTS"]) / "web-text-box.jpg"), type="jpeg", quality=85)
    with page.expect_response("**/accept") as accepted:
        page.click("#ev-accept-shown")
    assert accepted.value.request.post_data_json["proposed"] is True
    assert len(accepted.value.json()["accepted"]) == 24
    page.wait_for_function("() => document.querySelectorAll('#objects li.choice').length === 24")
    assert page.locator("#classes li", has_text="square").count() == 1, "the phrase became a class of the layer"

    # the whole scene, tiled: progress in tiles, the squares again, now proposed as the layer's class
    # (and duplicates of the accepted ones: shown on request)
    page.check("#ev-show-duplicates")
    page.fill("#ev-text", "square")
    with page.expect_response("**/everything") as started:
        page.click("#ev-text-scene")
    assert started.value.status == 202 and "window" not in started.value.request.post_data_json
    assert started.value.json()["unit"] == "tiles"
    page.wait_for_function("() => window.TerramaskEverything.shown().some((c) => c.class_id !== null)")
    shown = page.evaluate("() => window.TerramaskEverything.shown()")
    assert len(shown) == 24 and len({c["class_id"] for c in shown}) == 1 and shown[0]["class_id"] is not None
    assert all(c["duplicate_of"] for c in shown) and page.evaluate("() => window.TerramaskEverything.bulk()") == []
    assert "24 candidate" in page.locator("#status").inner_text()
    page.close()


def test_without_a_text_model_the_box_is_off_and_says_which_option_turns_it_on(servers, browser):
    page = _open(browser, servers["plain"])
    page.wait_for_function("() => document.getElementById('ev-text-reason').textContent.includes('--detector')")
    assert not page.locator("#ev-text").is_enabled()
    assert not page.locator("#ev-text-window").is_enabled() and not page.locator("#ev-text-scene").is_enabled()
    assert "\n" not in _note(page).strip()
    page.close()
