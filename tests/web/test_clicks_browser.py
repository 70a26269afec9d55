"""A click in a real browser (Playwright + Debian's chromium, tiny random SAM): the answer
carries the best candidate's pictures only, the chosen mask is drawn in its colour with a
white outline, another candidate's pictures are fetched when it is shown, and the page's
performance marks and the server's ``Server-Timing`` laps that benchmarks/web_clicks.py
reads are there."""

from __future__ import annotations

import json

import pytest
from browsers import CHROMIUM, sync_api  # skips this module without a browser
from served import Served

pytestmark = pytest.mark.slow

WAIT_MS = 20_000
SCENE_W, SCENE_H = 320, 256  # the blob scene (tests/web/conftest.py)

COUNT_DRAWN = """() => { window.__drawn = 0; window.addEventListener('terramask:drawn', () => { window.__drawn++; }); }"""


@pytest.fixture(scope="module")
def page(web_env, tiny_sam_checkpoint):
    with Served(web_env["scene"], tiny_sam_checkpoint, web_env["root"] / "clicks-browser") as served, \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(WAIT_MS)
        page.goto(served.url)
        page.wait_for_function("document.getElementById('busy').hidden")
        page.wait_for_selector("#classes li")
        yield page
        browser.close()


def _screen(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    scale = min(box["width"] / SCENE_W, box["height"] / SCENE_H) * 0.96
    return (box["x"] + (box["width"] - SCENE_W * scale) / 2 + x * scale,
            box["y"] + (box["height"] - SCENE_H * scale) / 2 + y * scale)


def _mask_colours(page) -> dict[str, int]:
    """Canvas pixels that are pure outline white, and pixels tinted towards the mask blue."""
    return page.evaluate("""() => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let white = 0, blue = 0;
        for (let k = 0; k < d.length; k += 4) {
          if (d[k] === 255 && d[k + 1] === 255 && d[k + 2] === 255) white++;
          else if (d[k + 2] > d[k] + 60) blue++;
        } return { white: white, blue: blue }; }""")


def test_a_click_draws_the_best_mask_and_fetches_the_others_later(page):
    before = _mask_colours(page)
    page.evaluate(COUNT_DRAWN)
    with page.expect_response(lambda r: "/prediction/candidate?" in r.url and "candidate=1" in r.url) as later, \
            page.expect_response("**/predict") as answer:
        page.mouse.click(*_screen(page, 140, 100))
        page.wait_for_function("() => window.__drawn >= 1")
        after = _mask_colours(page)
        page.locator("#canvas").focus()
        page.keyboard.press("2")  # show candidate 2: fetched now, or already by the idle prefetch
    body = json.loads(answer.value.request.post_data or "{}")
    assert body["include"] == ["png_best"]
    response = answer.value.json()
    assert "png" in response["candidates"][0] and all("png" not in c for c in response["candidates"][1:])
    timing = answer.value.header_value("server-timing") or ""
    assert "decode;dur=" in timing and "render;dur=" in timing and "total;dur=" in timing
    assert after["white"] > before["white"] + 20, "the outline is drawn in white"
    assert after["blue"] > before["blue"] + 100, "the mask is tinted blue"
    marks = page.evaluate("() => performance.getEntriesByType('mark').map((m) => m.name)")
    for name in ("send", "parsed", "shown", "decoded", "drawn"):
        assert f"terramask:{name}" in marks
    assert later.value.status == 200 and set(later.value.json()) == {"prediction_id", "index", "png"}
    page.wait_for_function("() => document.querySelector('#candidates li.chosen').textContent.startsWith('Mask 2')")
