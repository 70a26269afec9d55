"""The scene picker, bands, uploads, per-tab sessions and re-opening objects in a real
browser (Playwright + Debian chromium, as tests/web/test_browser.py) against
``terramask serve DIR FILE`` with the tiny random SAM."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
from browsers import CHROMIUM, sync_api  # skips this module without a browser
from served import Served

from helpers.scenes import blob_scene, write_geotiff

pytestmark = pytest.mark.slow


WAIT_MS = 20_000
SCENE_W, SCENE_H = 320, 256


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def scenes_server(web_env, tiny_sam_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-scenes")
    folder = root / "scenes"
    folder.mkdir()
    write_geotiff(folder / "alpha.tif", blob_scene(), nodata=0)
    write_geotiff(folder / "multi.tif", np.concatenate([blob_scene(), blob_scene(seed=2)[:2]]))
    with Served(folder, tiny_sam_checkpoint, root / "out", more=("--max-upload-mb", "5")) as served:
        yield served, root


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.wait_for_function("document.getElementById('busy').hidden && "
                           "!document.getElementById('scene-name').textContent.startsWith('loading')")
    page.wait_for_selector("#classes li")
    return page


def _screen(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    scale = min(box["width"] / SCENE_W, box["height"] / SCENE_H) * 0.96
    tx = (box["width"] - SCENE_W * scale) / 2
    ty = (box["height"] - SCENE_H * scale) / 2
    return box["x"] + tx + x * scale, box["y"] + ty + y * scale


def _click(page, x: float, y: float) -> None:
    with page.expect_response("**/predict") as resp:
        page.mouse.click(*_screen(page, x, y))
    assert resp.value.status == 200, resp.value.text()
    page.wait_for_selector("#candidates li.choice")


def _accept(page) -> None:
    page.locator("#canvas").focus()
    with page.expect_response(lambda r: r.url.endswith("/objects") and r.request.method == "POST") as resp:
        page.keyboard.press("Enter")
    assert resp.value.status == 201, resp.value.text()
    page.wait_for_selector("#candidates li.muted")


def test_the_picker_switches_scenes_and_each_keeps_its_layer(chromium, scenes_server):
    server, _ = scenes_server
    page = _open(chromium, server.url)
    try:
        assert page.locator("#scene-picker option").all_inner_texts() == ["alpha.tif", "multi.tif"]
        _click(page, 140, 100)
        _accept(page)
        alpha_objects = page.locator("#objects li.choice").count()
        assert alpha_objects >= 1
        with page.expect_navigation():
            page.select_option("#scene-picker", "multi")
        page.wait_for_selector("#classes li")
        assert "/scenes/multi/default/" in page.url and page.locator("#scene-name").inner_text() == "multi.tif"
        assert page.locator("#objects li.choice").count() == 0, "the other scene has its own layer"
        assert page.input_value("#bands") == "1,2,3" and page.locator("#bands-count").inner_text() == "of 5"
        page.fill("#bands", "5,4,1")
        with page.expect_navigation():
            page.click("#apply-bands")
        page.wait_for_function("document.getElementById('scene-meta').textContent.includes('bands 5,4,1')")
        assert "/scenes/multi/5-4-1/" in page.url
        with page.expect_navigation():
            page.select_option("#scene-picker", "alpha")
        page.wait_for_selector("#objects li.choice")
        assert page.locator("#objects li.choice").count() == alpha_objects
    finally:
        page.close()


def test_two_tabs_keep_their_own_current_mask_and_a_reload_restores_it(chromium, scenes_server):
    server, _ = scenes_server
    first = _open(chromium, server.url)
    second = _open(chromium, server.url)
    try:
        _click(first, 140, 100)
        with first.expect_response(lambda r: r.url.endswith("/session") and r.request.method == "PUT"
                                   and '"candidate":2' in (r.request.post_data or "")) as put:
            first.locator("#candidates li.choice").nth(2).click()
        assert put.value.status == 200
        second.reload()
        second.wait_for_selector("#classes li")
        second.wait_for_timeout(500)
        assert second.locator("#candidates li.choice").count() == 0, "tab 2 does not see tab 1's mask"
        ids = [tab.evaluate("sessionStorage.getItem('terramask-session')") for tab in (first, second)]
        assert ids[0] and ids[1] and ids[0] != ids[1]
        with first.expect_response(lambda r: "/session?" in r.url):
            first.reload()
        first.wait_for_selector("#candidates li.choice")
        assert first.locator("#candidates li.chosen").inner_text().startswith("Mask 3")
        assert "Restored" in first.locator("#status").inner_text()
    finally:
        first.close()
        second.close()


def test_reopen_refine_and_accept_replaces_the_object(chromium, scenes_server, tmp_path):
    server, _ = scenes_server
    page = _open(chromium, server.url + "/scenes/alpha/default/default/")
    try:
        _click(page, 140, 100)
        _accept(page)
        count = page.locator("#objects li.choice").count()
        page.locator("#objects li.choice").last.click()
        page.wait_for_selector("#objects li.chosen")
        with page.expect_response("**/reopen") as resp:
            page.click("#reopen-object")
        assert resp.value.status == 200
        page.wait_for_selector("#candidates li.choice")
        assert page.locator("#accept").inner_text().startswith("Accept (replace #")
        _click(page, 180, 120)  # refines the re-opened object
        assert page.locator("#accept").inner_text().startswith("Accept (replace #")
        _accept(page)
        assert page.locator("#objects li.choice").count() == count, "replaced, not added"
        assert "replaced" in page.locator("#status").inner_text()
        with page.expect_download() as download:
            page.click("#dl-fgb")
        path = tmp_path / "objects.fgb"
        download.value.save_as(path)
        assert pyogrio.read_info(path)["driver"] == "FlatGeobuf" and pyogrio.read_info(path)["features"] == count
    finally:
        page.close()


def test_an_uploaded_scene_opens_in_the_page(chromium, scenes_server, tmp_path):
    server, root = scenes_server
    page = _open(chromium, server.url)
    try:
        upload = write_geotiff(tmp_path / "field survey.tif", blob_scene(rows=90, cols=120), nodata=0)
        assert page.locator("#upload-limit").inner_text() == "≤ 5 MB"
        with page.expect_navigation():
            page.set_input_files("#upload-file", str(upload))
        page.wait_for_selector("#classes li")
        assert "/scenes/field_survey/default/" in page.url
        assert page.locator("#scene-name").inner_text() == "field_survey.tif"
        assert (root / "out" / "uploads" / "field_survey.tif").is_file()
        assert "field_survey.tif (uploaded)" in page.locator("#scene-picker").inner_text()
    finally:
        page.close()
