"""What a click answers: PNGs and pixel-count areas, no polygons unless asked; embedding
reuse reported as such (bug 4); a refine click outside the encoded window (bug 1)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from fastapi.testclient import TestClient
from shapely.geometry import shape

from helpers.scenes import blob_scene, write_geotiff
from terramask.web.measures import PixelArea

INSIDE = {"x": 140, "y": 100}


def test_a_click_answers_without_polygons_and_with_areas_from_pixel_counts(client, app):
    response = client.post("/predict", json={"points": [INSIDE]})
    assert response.status_code == 200, response.text
    body = response.json()
    for c in body["candidates"]:
        assert "geojson" not in c and "geojson_lonlat" not in c and "perimeter_m" not in c
        assert c["area_m2"] == pytest.approx(c["area_px"] * 0.25)  # 0.5 m pixels
        assert c["number"] == c["index"] + 1
        assert (c["png"] is None) == (c["area_px"] == 0)


def test_asked_polygons_measure_the_same_area_as_the_pixel_count(client):
    body = client.post("/predict", json={"points": [INSIDE], "include": ["geojson"]}).json()
    for c in body["candidates"]:
        assert "png" not in c
        if c["area_px"]:
            assert shape(c["geojson"]["geometry"]).area == pytest.approx(c["area_m2"])
            assert c["perimeter_m"] > 0


def test_geographic_pixel_area_matches_the_geodesic_polygon_area():
    """A 1e-5 degree pixel grid at 48 N: one pixel's geodesic area times a count equals the
    polygon of those pixels within 0.01 %, and a grid without CRS has no ground area."""
    from pyproj import Geod

    transform = Affine(1e-5, 0, 11.0, 0, -1e-5, 48.0)
    measure = PixelArea("EPSG:4326", transform)
    block = shapely.box(11.0 + 10e-5, 48.0 - 60e-5, 11.0 + 50e-5, 48.0 - 20e-5)  # 40 x 40 px
    geodesic, _ = Geod(ellps="WGS84").geometry_area_perimeter(block)
    assert measure.area_m2(1600, 30, 40) == pytest.approx(abs(geodesic), rel=1e-4)
    assert PixelArea(None, Affine.identity()).area_m2(10, 0, 0) is None
    assert PixelArea("EPSG:32633", Affine(2, 0, 0, 0, -2, 0)).area_m2(10, 5, 5) == pytest.approx(40.0)


def test_a_reused_embedding_is_reported_as_reused_not_as_a_miss(web_env, tiny_backend):
    """Bug 4: the first click computes the embedding; later clicks say 'reused', with no
    encoder time, whatever the persistent cache said when it was made."""
    from terramask.web.app import create_app

    app = create_app(web_env["scene"], tiny_backend, out_dir=web_env["root"] / "exports-reuse")
    try:
        with TestClient(app) as c:
            first = c.post("/predict", json={"points": [INSIDE]}).json()["timings"]
            second = c.post("/predict", json={"points": [{"x": 60, "y": 200}]}).json()
            refined = c.post("/predict", json={"points": [{"x": 30, "y": 30, "label": 0}], "refine_from": "last",
                                               "session_id": second["session_id"]}).json()["timings"]
    finally:
        app.state.terramask.close()
    assert first["embedding"] == "computed" and first["encoder_s"] > 0
    for later in (second["timings"], refined):
        assert later["embedding"] == "reused"
        assert later["encoder_s"] == 0.0 and later["embedding_cache"] == "memory"


@pytest.fixture(scope="module")
def large(web_env, tiny_backend):
    """A 'large' 1200 x 300 px scene (encoded in 128 px windows)."""
    from terramask.web.app import create_app

    path = write_geotiff(web_env["root"] / "wide.tif", blob_scene(rows=300, cols=1200))
    app = create_app(path, tiny_backend, window_size=128, full_scene_max=200, out_dir=web_env["root"] / "exp-wide")
    with TestClient(app) as c:
        yield c
    app.state.terramask.close()


def test_a_refine_click_far_outside_the_window_starts_a_new_object_there(large):
    """Bug 1: with 'refine' on, an object click ~900 px away used to be a raw 422 showing a
    Python dict; it now starts a new object around the click and says so in a sentence."""
    first = large.post("/predict", json={"points": [INSIDE]}).json()
    far = large.post("/predict", json={"points": [{"x": 1040, "y": 150}], "session_id": first["session_id"],
                                       "refine_from": first["prediction_id"]})
    assert far.status_code == 200, far.text
    body = far.json()
    assert body["refined"] is False
    assert body["prompts"]["points"] == [[1040.0, 150.0]] and body["prompts"]["prior_mask"] is False
    w = body["window"]
    assert w["col_off"] <= 1040 < w["col_off"] + w["width"] and w != first["window"]
    assert "starts a new object" in body["note"] and "{" not in body["note"]
    near = large.post("/predict", json={"points": [{"x": 1050, "y": 160, "label": 0}],
                                        "session_id": first["session_id"], "refine_from": "last"}).json()
    assert near["refined"] is True and near["prompts"]["points"] == [[1040.0, 150.0], [1050.0, 160.0]]


def test_a_far_background_click_with_refine_is_a_sentence(large):
    first = large.post("/predict", json={"points": [INSIDE]}).json()
    far = large.post("/predict", json={"points": [{"x": 1040, "y": 150, "label": 0}],
                                       "session_id": first["session_id"], "refine_from": "last"})
    assert far.status_code == 422
    detail = far.json()["detail"]
    assert "background point" in detail and "columns" in detail
    assert "{" not in detail and "col_off" not in detail


def _rgba(data_url: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGBA"))


def test_pngs_are_the_cropped_mask_in_its_colour_and_its_outline_in_white(client, app):
    """What the page draws as it is: the mask in the notebook's blue, transparent off it,
    and its boundary pixels (4-neighbourhood, the crop's edge counts) in white."""
    from terramask.io.overlay import MASK_COLOR

    body = client.post("/predict", json={"points": [INSIDE], "multimask": False}).json()
    c = body["candidates"][0]
    png = c["png"]
    fill, outline = _rgba(png["data"]), _rgba(png["outline"])
    assert fill.shape == outline.shape == (png["height"], png["width"], 4)
    on = fill[..., 3] == 255
    assert set(np.unique(fill[..., 3])) <= {0, 255} and int(on.sum()) == c["area_px"]
    assert (fill[on][:, :3] == MASK_COLOR).all()
    assert on[0].any() and on[-1].any() and on[:, 0].any() and on[:, -1].any(), "cropped to the bounding box"
    edge = outline[..., 3] == 255
    expected = np.zeros_like(on)
    h, w = on.shape
    for y, x in zip(*np.nonzero(on)):
        neighbours = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
        expected[y, x] = any(not (0 <= r < h and 0 <= q < w) or not on[r, q] for r, q in neighbours)
    np.testing.assert_array_equal(edge, expected)
    assert (outline[edge][:, :3] == 255).all()
