"""The page in a real browser: Playwright for Python driving Debian's ``chromium`` against
``terramask serve`` (tiny random SAM) on 127.0.0.1.

Click -> mask drawn, background click, the request an unticked "Refine" sends (bug 2),
accept with a class, delete, undo, downloads, long errors inside the panel (bug 5), a
click during an encode queued and sent (bug 6). Without Playwright or a chromium binary
the module is skipped with one line saying which is missing (scripts/setup.sh installs
both). Set ``TERRAMASK_SCREENSHOTS=DIR`` to save a picture of each state there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from browsers import CHROMIUM, sync_api  # skips this module without a browser
from served import Served

pytestmark = pytest.mark.slow


#: Every wait in these tests is bounded by this many milliseconds.
WAIT_MS = 20_000
SCENE_W, SCENE_H = 320, 256  # the blob scene (tests/web/conftest.py)


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(web_env, tiny_sam_checkpoint):
    with Served(web_env["scene"], tiny_sam_checkpoint, web_env["root"] / "browser-exports") as served:
        yield served


def _open(chromium, url: str):
    page = chromium.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.wait_for_function("document.getElementById('busy').hidden && "
                           "!document.getElementById('scene-name').textContent.startsWith('loading')")
    page.wait_for_selector("#classes li")
    return page


@pytest.fixture()
def page(chromium, server):
    page = _open(chromium, server.url)
    yield page
    page.close()


def _screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of scene pixel (x, y) in the fitted view (app.js fitView)."""
    box = page.locator("#canvas").bounding_box()
    scale = min(box["width"] / SCENE_W, box["height"] / SCENE_H) * 0.96
    tx = (box["width"] - SCENE_W * scale) / 2
    ty = (box["height"] - SCENE_H * scale) / 2
    return box["x"] + tx + x * scale, box["y"] + ty + y * scale


def _keep_canvas(page) -> None:
    """Remember the canvas pixels in the page (compared there: millions of values)."""
    page.evaluate("""() => { const c = document.getElementById('canvas');
        window.__kept = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; }""")


def _changed_pixels(page) -> int:
    return page.evaluate("""() => { const c = document.getElementById('canvas');
        const now = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let k = 0; k < now.length; k += 4) {
          if (now[k] !== window.__kept[k] || now[k + 1] !== window.__kept[k + 1] || now[k + 2] !== window.__kept[k + 2]) n++;
        } return n; }""")


def _click(page, x: float, y: float, shift: bool = False) -> dict:
    """Click scene pixel (x, y); returns the /predict request body once the answer is drawn."""
    with page.expect_request("**/predict") as req, page.expect_response("**/predict") as resp:
        if shift:
            page.keyboard.down("Shift")
        page.mouse.click(*_screen(page, x, y))
        if shift:
            page.keyboard.up("Shift")
    assert resp.value.status == 200, resp.value.text()
    page.wait_for_selector("#candidates li.choice")
    return json.loads(req.value.post_data or "{}")


def _shot(page, name: str) -> None:
    folder = os.environ.get("TERRAMASK_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_a_click_draws_a_mask_and_lists_the_candidates(page):
    _keep_canvas(page)
    body = _click(page, 140, 100)
    assert body["points"] == [{"x": pytest.approx(140, abs=1.5), "y": pytest.approx(100, abs=1.5), "label": 1}]
    assert body["include"] == ["png_best"], "a click asks for the best mask to draw, no polygons"
    assert page.locator("#candidates li.choice").count() == 3
    page.wait_for_timeout(300)  # the PNG decodes asynchronously
    assert _changed_pixels(page) > 1000, "the mask (and the star) were drawn"
    assert "embedding" in page.locator("#status").inner_text()
    _shot(page, "click")


def test_background_click_and_unticked_refine_sends_only_the_new_point(page):
    _click(page, 140, 100)
    refine = _click(page, 60, 200, shift=True)
    assert refine["points"][0]["label"] == 0 and "refine_from" in refine
    status = page.locator("#status").inner_text()
    assert "embedding reused" in status and "embedding 0" not in status, "bug 4: no encoder time repeated"
    page.uncheck("#use-prior")
    fresh = _click(page, 150, 90)
    assert len(fresh["points"]) == 1 and "refine_from" not in fresh, "bug 2: earlier points must not be sent"


def test_accept_with_a_class_delete_undo_download_and_reload(page, tmp_path):
    _click(page, 140, 100)
    page.fill("#class-name", "roof")
    page.click("#add-class")
    page.wait_for_selector("#classes li.chosen:has-text('roof')")
    page.locator("#canvas").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#objects li.choice:has-text('roof')")
    assert page.locator("#candidates li.choice").count() == 0, "accepting clears the prompts"
    _shot(page, "objects")
    page.locator("#objects li.choice").first.click()
    page.wait_for_selector("#objects li.chosen")
    page.click("#delete-object")
    page.wait_for_selector("#objects li.muted")
    page.click("#layer-undo")
    page.wait_for_selector("#objects li.choice:has-text('roof')")
    with page.expect_download() as download:
        page.click("#dl-geojson")
    path = tmp_path / "objects.geojson"
    download.value.save_as(path)
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["class_name"] for f in features] == ["roof"]
    page.reload()  # the layer lives on the server: a reload (or another tab) shows it again
    page.wait_for_selector("#objects li.choice:has-text('roof')")
    assert page.locator("#classes li:has-text('roof')").count() == 1


def test_a_long_error_wraps_inside_the_panel(page):
    page.evaluate("""() => { const s = document.getElementById('status');
        s.textContent = '422: ' + 'x'.repeat(400) + ' /a/very/long/path/' + 'y'.repeat(300);
        s.classList.add('error'); }""")
    widths = page.evaluate("""() => { const p = document.getElementById('panel');
        const s = document.getElementById('status');
        return [p.scrollWidth, p.clientWidth, s.getBoundingClientRect().right, p.getBoundingClientRect().right]; }""")
    scroll_w, client_w, status_right, panel_right = widths
    assert scroll_w <= client_w and status_right <= panel_right + 0.5, "bug 5: the message overflowed the panel"


def test_a_click_during_an_encode_is_queued_and_sent(chromium, web_env, tiny_sam_checkpoint):
    """Bug 6: the first click waits for a 3 s encoder; a second click meanwhile is shown
    as queued and sent as a refinement when the first answer arrives."""
    with Served(web_env["scene"], tiny_sam_checkpoint, web_env["root"] / "slow-exports", encoder_delay=3.0) as slow:
        page = _open(chromium, slow.url)
        try:
            bodies: list[dict] = []
            page.on("request", lambda r: bodies.append(json.loads(r.post_data or "{}"))
                    if r.url.endswith("/predict") else None)
            page.mouse.click(*_screen(page, 140, 100))
            page.wait_for_selector("#busy:not([hidden])")
            page.mouse.click(*_screen(page, 60, 200))
            assert "queued" in page.locator("#status").inner_text()
            page.wait_for_timeout(1200)
            assert " s" in page.locator("#busy").inner_text(), "the indicator counts the seconds"
            _shot(page, "encoding")
            page.wait_for_function("() => document.getElementById('busy').hidden", timeout=WAIT_MS)
            page.wait_for_function("() => document.querySelectorAll('#candidates li.choice').length > 0")
            page.wait_for_timeout(300)
            page.wait_for_function("() => document.getElementById('busy').hidden", timeout=WAIT_MS)
            assert len(bodies) == 2
            assert "refine_from" in bodies[1] and bodies[1]["points"][0]["x"] == pytest.approx(60, abs=1.5)
        finally:
            page.close()


def test_a_stale_tab_is_told_and_reloads_instead_of_overwriting(chromium, server, page):
    """Two tabs share the layer: tab B re-classes an object that tab A changed (409) or
    deleted (404) meanwhile; B gets a sentence, not a silent overwrite, and reloads the layer."""
    _click(page, 140, 100)
    before = page.locator("#objects li.choice").count()  # earlier tests of this module leave objects
    page.locator("#canvas").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelectorAll('#objects li.choice').length > {before}")
    other = _open(chromium, server.url)
    try:
        count = other.locator("#objects li.choice").count()
        assert count == page.locator("#objects li.choice").count() >= 1
        other.locator("#objects li.choice").last.click()
        other.wait_for_selector("#objects li.chosen")
        page.locator("#objects li.choice").last.click()
        page.wait_for_selector("#objects li.chosen")
        with page.expect_response("**/objects/*"):
            page.click("#reclass-object")  # a new version of the object, unseen by tab B
        with other.expect_response("**/objects/*") as stale:
            other.click("#reclass-object")
        assert stale.value.status == 409
        other.wait_for_selector("#status.error")
        assert "changed since" in other.locator("#status").inner_text()
        page.click("#delete-object")
        page.wait_for_function(f"() => document.querySelectorAll('#objects li.choice').length === {count - 1}")
        with other.expect_response("**/objects/*") as gone:
            other.click("#reclass-object")
        assert gone.value.status == 404
        # the status line still shows the 409 sentence until the page handles the 404
        other.wait_for_function("() => document.querySelector('#status').innerText.includes('does not exist')")
        assert "error" in (other.locator("#status").get_attribute("class") or "")
        other.wait_for_function(f"() => document.querySelectorAll('#objects li.choice').length === {count - 1}")
    finally:
        other.close()
