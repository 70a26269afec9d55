"""Segment everything does not double objects already in the layer (issue 10), in a real
browser (Playwright + Debian's chromium): after segment everything, clicking a square
into the layer hides its candidate (the page asks the server again when the layer
changes), "accept all shown" leaves duplicates out, "show duplicates" lists them greyed
with the object they repeat, and one accepted by its own button is taken.

The app runs in this process (uvicorn on 127.0.0.1) with the classic engine on the
generated scene of 24 squares.
"""

from __future__ import annotations

import pytest
from browsers import CHROMIUM, sync_api  # skips this module without a browser
from served import serve_in_thread

from helpers.scenes import write_geotiff
from helpers.squares_scene import CENTRES, SCENE_H, SCENE_W, squares_scene

pytestmark = pytest.mark.slow
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from terramask.models.resolve import load_backend
    from terramask.web.app import create_app

    root = tmp_path_factory.mktemp("duplicates")
    app = create_app(write_geotiff(root / "squares.tif", squares_scene()), load_backend("classic"),
                     out_dir=root / "out")
    with serve_in_thread(app) as url:
        yield url
    app.state.terramask.close()


@pytest.fixture()
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(WAIT_MS)
        page.goto(server)
        page.wait_for_function("document.getElementById('busy').hidden && "
                               "!document.getElementById('scene-name').textContent.startsWith('loading')")
        page.wait_for_selector("#classes li")
        yield page
        browser.close()


def _screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of scene pixel (x, y) in the fitted view (app.js fitView)."""
    box = page.locator("#canvas").bounding_box()
    scale = min(box["width"] / SCENE_W, box["height"] / SCENE_H) * 0.96
    return (box["x"] + (box["width"] - SCENE_W * scale) / 2 + x * scale,
            box["y"] + (box["height"] - SCENE_H * scale) / 2 + y * scale)


def _set_slider(page, element_id: str, value: float) -> None:
    page.evaluate("""([id, v]) => { const el = document.getElementById(id); el.value = String(v);
        el.dispatchEvent(new Event('input', { bubbles: true })); }""", [element_id, value])


def _shown(page) -> list[dict]:
    return page.evaluate("() => window.TerramaskEverything.shown()")


def test_a_square_clicked_after_segment_everything_hides_its_candidate_and_bulk_accept_leaves_it(page):
    with page.expect_response("**/everything") as started:
        page.click("#ev-window")
    assert started.value.status == 202
    page.wait_for_function("() => window.TerramaskEverything.shown().length > 0")
    _set_slider(page, "ev-max-area", 1000)
    _set_slider(page, "ev-min-area", 800)
    assert len(_shown(page)) == 24 and page.locator("#ev-duplicates").inner_text() == ""

    x, y = CENTRES[0]
    with page.expect_response("**/predict"):
        page.mouse.click(*_screen(page, x, y))
    page.wait_for_selector("#candidates li.choice")
    page.locator("#canvas").focus()
    with page.expect_response("**/duplicates") as asked:  # the layer changed: the marks again
        page.keyboard.press("Enter")
    assert asked.value.status == 200 and list(asked.value.json()["duplicate_of"].values()) == [1]
    page.wait_for_function("() => window.TerramaskEverything.shown().length === 23")
    assert page.locator("#ev-duplicates").inner_text() == "(1)"
    assert "1 duplicate(s) of layer objects hidden" in page.locator("#ev-shown").inner_text()
    assert all(abs(c["bbox_px"][0] - (x - 15)) > 3 or abs(c["bbox_px"][1] - (y - 15)) > 3 for c in _shown(page))

    page.check("#ev-show-duplicates")
    assert len(_shown(page)) == 24 and len(page.evaluate("() => window.TerramaskEverything.bulk()")) == 23
    row = page.locator("#ev-list li.duplicate")
    assert row.count() == 1 and "duplicate of object #1" in row.inner_text()
    with page.expect_response("**/accept") as accepted:
        page.click("#ev-accept-shown")
    sent = accepted.value.request.post_data_json
    assert len(sent["ids"]) == 23 and not sent.get("duplicates")
    assert len(accepted.value.json()["accepted"]) == 23 and accepted.value.json()["duplicates"] == []
    page.wait_for_function("() => document.querySelectorAll('#objects li.choice').length === 24")
    assert len(_shown(page)) == 1, "the duplicate stays open"

    with page.expect_response("**/accept") as accepted:  # by its own button: the user's choice
        row.get_by_role("button", name="✓").click()
    assert accepted.value.request.post_data_json["duplicates"] is True
    assert len(accepted.value.json()["accepted"]) == 1
    page.wait_for_function("() => document.querySelectorAll('#objects li.choice').length === 25")
