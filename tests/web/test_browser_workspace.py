"""The labelling workflow of issue 10 in a real browser (Playwright + Debian's chromium),
literally: open a scene -> click 20 objects in 2 classes (accept each) -> segment everything
in the shown window (the 20 come back as duplicates of layer objects: hidden) -> accept 10
of the new candidates, one by one, 5 with each class -> export the GeoPackage and check its
features on disk (count, classes, CRS, each a square of the scene, inside its bounds); and
the "find similar to the selected object" button's answer on a model without embeddings.

The app runs in this process (uvicorn on 127.0.0.1) with the weight-free classic engine
on a generated scene of 36 squares (6 x 6), all in the fitted view. Set
``TERRAMASK_SCREENSHOTS=DIR`` to save pictures of the workspace with objects and of the
segment-everything candidates (docs/img/ holds them).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from browsers import CHROMIUM, sync_api  # skips this module without a browser
from served import serve_in_thread

from helpers.scenes import UTM33_TRANSFORM, write_geotiff
from helpers.squares_scene import SCENE_W, SIDE, centres, corners, scene_height, squares_scene

pytestmark = pytest.mark.slow


WAIT_MS = 60_000
#: Rows of squares: 36 squares, so 16 are new after the 20 clicked ones (10 of them accepted).
ROWS = 6
SCENE_H = scene_height(ROWS)
CENTRES = centres(ROWS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``create_app`` on the squares scene with the classic engine, served by uvicorn."""
    from terramask.models.resolve import load_backend
    from terramask.web.app import create_app

    root = tmp_path_factory.mktemp("workspace")
    scene = write_geotiff(root / "squares.tif", squares_scene(ROWS))
    app = create_app(scene, load_backend("classic"), out_dir=root / "out")
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
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
    tx = (box["width"] - SCENE_W * scale) / 2
    ty = (box["height"] - SCENE_H * scale) / 2
    return box["x"] + tx + x * scale, box["y"] + ty + y * scale


def _shot(page, name: str, section: str) -> None:
    folder = os.environ.get("TERRAMASK_SCREENSHOTS")
    if folder:
        page.locator(section).scroll_into_view_if_needed()
        page.screenshot(path=str(Path(folder) / f"{name}.jpg"), type="jpeg", quality=85)


def _objects(page) -> int:
    return page.locator("#objects li.choice").count()


def _set_slider(page, element_id: str, value: float) -> None:
    page.evaluate("""([id, v]) => { const el = document.getElementById(id); el.value = String(v);
        el.dispatchEvent(new Event('input', { bubbles: true })); }""", [element_id, value])


def _accept_first_listed(page, class_index: int) -> dict:
    """Accept the first candidate row by its own ✓ with class ``class_index``; returns its candidate."""
    page.locator("#classes li").nth(class_index).click()
    row = page.locator("#ev-list li.choice").first
    cid = int(row.get_attribute("data-candidate-id"))
    candidate = page.evaluate(f"() => window.TerramaskEverything.shown().find((c) => c.id === {cid})")
    with page.expect_response("**/accept") as accepted:
        row.locator("button", has_text="✓").click()
    assert accepted.value.status == 200 and len(accepted.value.json()["accepted"]) == 1, accepted.value.text()
    return candidate


def _square_of(x: float, y: float) -> int | None:
    """Index of the square (row by row) holding scene pixel (x, y), or None."""
    for k, (x0, y0) in enumerate(corners(ROWS)):
        if x0 <= x < x0 + SIDE and y0 <= y < y0 + SIDE:
            return k
    return None


def test_click_20_objects_segment_everything_accept_10_and_export_the_geopackage(page, tmp_path):
    page.fill("#class-name", "roof")
    page.click("#add-class")
    page.wait_for_selector("#classes li.chosen:has-text('roof')")
    for k, (x, y) in enumerate(CENTRES[:20]):
        page.locator("#classes li").nth(0 if k < 10 else 1).click()  # 10 "object", then 10 "roof"
        with page.expect_response("**/predict") as resp:
            page.mouse.click(*_screen(page, x, y))
        assert resp.value.status == 200, resp.value.text()
        page.wait_for_selector("#candidates li.choice")
        page.locator("#canvas").focus()
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => document.querySelectorAll('#objects li.choice').length === {k + 1}")
    assert _objects(page) == 20
    _shot(page, "web-workspace", "#objects")

    with page.expect_response("**/everything") as started:
        page.click("#ev-window")
    assert started.value.status == 202
    window = started.value.json()["window"]
    assert window == {"col_off": 0, "row_off": 0, "width": SCENE_W, "height": SCENE_H}, "the fitted view shows it all"
    page.wait_for_function("() => document.getElementById('ev-shown').textContent.includes('shown')")
    assert page.locator("#ev-progress").evaluate("p => p.value === p.max")
    _shot(page, "web-everything", "#everything")
    # the area sliders keep the squares (900 px each; the ground is one large candidate); the 20
    # squares already in the layer come back as duplicates of their objects: hidden
    _set_slider(page, "ev-max-area", 1000)
    _set_slider(page, "ev-min-area", 800)
    new = page.evaluate("() => window.TerramaskEverything.shown()")
    assert len(new) == len(CENTRES) - 20 and all(800 <= c["area_px"] <= 1000 and not c["duplicate_of"] for c in new)
    assert "(20 duplicate(s) of layer objects hidden)" in page.locator("#ev-shown").inner_text()
    page.check("#ev-show-duplicates")
    everything = page.evaluate("() => window.TerramaskEverything.shown()")
    assert len(everything) == len(CENTRES)
    assert sorted(c["duplicate_of"] for c in everything if c["duplicate_of"]) == list(range(1, 21)), \
        "each clicked square is one layer object's duplicate"
    page.uncheck("#ev-show-duplicates")
    assert page.locator("#ev-list li.duplicate").count() == 0

    # accept 10 of the new candidates by their own ✓: 5 with "object", 5 with "roof"
    accepted = [_accept_first_listed(page, 0 if k < 5 else 1) for k in range(10)]
    page.wait_for_function("() => document.querySelectorAll('#objects li.choice').length === 30")
    assert not any(c["duplicate_of"] for c in accepted)
    left = len(CENTRES) - 30
    assert page.locator("#ev-shown").inner_text().startswith(f"{left} shown of ")
    with page.expect_response("**/discard") as discarded:
        page.click("#ev-discard-shown")
    assert len(discarded.value.json()["discarded"]) == left
    page.wait_for_function("() => document.getElementById('ev-shown').textContent.startsWith('0 shown of ')")
    assert _objects(page) == 30

    # find similar to a selected object: the classic engine has no embedding to compare, and says so
    page.locator("#objects li.choice").first.click()
    page.wait_for_selector("#objects li.chosen")
    with page.expect_response("**/everything") as similar:
        page.click("#ev-similar")
    assert similar.value.status == 202 and similar.value.request.post_data_json["object_ids"] == [1]
    page.wait_for_function("() => document.getElementById('status').textContent.includes('needs a SAM-family model')")

    with page.expect_download() as download:
        page.click("#dl-gpkg")
    path = tmp_path / "objects.gpkg"
    download.value.save_as(path)
    meta, _, wkbs, fields = pyogrio.raw.read(path, layer="objects")
    columns = dict(zip(meta["fields"], fields))
    assert len(wkbs) == 30
    assert Counter(columns["class_name"].tolist()) == {"object": 15, "roof": 15}
    assert "32633" in meta["crs"]
    geometries = shapely.from_wkb(wkbs)
    x0, y1 = UTM33_TRANSFORM @ (0, 0)
    x1, y0 = UTM33_TRANSFORM @ (SCENE_W, SCENE_H)
    assert shapely.contains(shapely.box(x0, y0, x1, y1), geometries).all(), "every object inside the scene"
    # each object is one square (in map units: 0.5 m pixels), 30 different squares
    inverse = ~UTM33_TRANSFORM
    centroids = [inverse @ (p.x, p.y) for p in shapely.centroid(geometries)]
    squares = [_square_of(x, y) for x, y in centroids]
    assert None not in squares and len(set(squares)) == 30 and set(range(20)) <= set(squares)
    areas_px = shapely.area(geometries) / (UTM33_TRANSFORM.a * -UTM33_TRANSFORM.e)
    assert np.all(np.abs(areas_px - SIDE * SIDE) < 0.2 * SIDE * SIDE)
