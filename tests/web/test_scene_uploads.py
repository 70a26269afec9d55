"""Scene uploads: streamed to disk under ``<out>/uploads/`` only, 413 past the limit (no
partial file left), checked as a GeoTIFF/PNG/JPEG by content (a VRT or text named .tif is
refused), never overwriting, then listed and served like any scene."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image

from helpers.scenes import blob_scene, write_geotiff


@pytest.fixture()
def server(web_env, tiny_backend, tmp_path):
    from terramask.web.server import create_server

    made = []

    def make(**options):
        app = create_server([web_env["scene"]], tiny_backend, out_dir=tmp_path / "out", models=[], **options)
        client = TestClient(app)
        client.__enter__()
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def tif_bytes(tmp_path_factory):
    path = write_geotiff(tmp_path_factory.mktemp("up") / "up.tif", blob_scene(rows=64, cols=80), nodata=0)
    return path.read_bytes()


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((30, 50, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _files(tmp_path):
    folder = tmp_path / "out" / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_an_upload_becomes_a_scene_under_the_upload_folder(server, tif_bytes, tmp_path):
    c = server()
    r = c.post("/scenes", params={"name": "../../../evil name.TIF"}, content=tif_bytes,
               headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["scene"] == {"id": "evil_name", "name": "evil_name.tif", "uploaded": True}
    assert body["url"] == "scenes/evil_name/default/sam-tiny_sam/"
    assert _files(tmp_path) == ["evil_name.tif"]
    assert not (tmp_path / "evil name.TIF").exists() and not (tmp_path.parent / "evil name.TIF").exists()
    with rasterio.open(tmp_path / "out" / "uploads" / "evil_name.tif") as ds:
        assert (ds.width, ds.height, ds.count) == (80, 64, 3)
    assert "evil_name" in [s["id"] for s in c.get("/scenes").json()["scenes"]]
    assert c.get("/scenes/evil_name/default/default/scene").json()["width"] == 80
    again = c.post("/scenes", params={"name": "evil_name.tif"}, content=tif_bytes)
    assert again.status_code == 201 and again.json()["scene"]["id"] == "evil_name-2"
    assert _files(tmp_path) == ["evil_name-2.tif", "evil_name.tif"], "an upload never replaces another"
    png = c.post("/scenes", params={"name": "photo.png"}, content=_png_bytes())
    assert png.status_code == 201 and c.get("/scenes/photo/default/default/scene").json()["width"] == 50
    # a restart lists the uploads again
    c2 = server()
    assert {"evil_name", "evil_name-2", "photo"} <= {s["id"] for s in c2.get("/scenes").json()["scenes"]}


def test_uploads_over_the_limit_get_413_and_leave_nothing(server, tif_bytes, tmp_path):
    c = server(max_upload_mb=0.001)  # 1,000 bytes
    announced = c.post("/scenes", params={"name": "big.tif"}, content=tif_bytes)
    assert announced.status_code == 413 and "--max-upload-mb" in announced.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        for k in range(0, len(tif_bytes), 256):
            yield tif_bytes[k:k + 256]

    streamed = c.post("/scenes", params={"name": "big.tif"}, content=chunks())
    assert streamed.status_code == 413
    assert _files(tmp_path) == []


@pytest.mark.parametrize("name, content, status, words", [
    ("fake.tif", b'<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand band="1">'
                 b'<SimpleSource><SourceFilename>/etc/passwd</SourceFilename></SimpleSource>'
                 b'</VRTRasterBand></VRTDataset>', 422, "not a GeoTIFF, PNG or JPEG"),
    ("renamed.tif", None, 422, "is a PNG but its name says GTiff"),
    ("truncated.tif", b"II*\x00\x08\x00\x00\x00garbage", 422, "cannot be read as a raster"),
    ("empty.png", b"", 422, "empty"),
    ("scene.vrt", b"<VRTDataset/>", 400, ".tif, .tiff, .png"),
])
def test_only_real_rasters_are_accepted(server, tmp_path, name, content, status, words):
    c = server()
    r = c.post("/scenes", params={"name": name}, content=_png_bytes() if content is None else content)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert _files(tmp_path) == []


def test_uploads_can_be_switched_off(server, tif_bytes, tmp_path):
    c = server(max_upload_mb=0)
    r = c.post("/scenes", params={"name": "a.tif"}, content=tif_bytes)
    assert r.status_code == 403 and "--max-upload-mb 0" in r.json()["detail"]
    assert c.get("/scenes").json()["max_upload_mb"] == 0
    assert _files(tmp_path) == []


def test_the_upload_folder_has_a_total_quota(server, tif_bytes, tmp_path):
    """--upload-quota-mb: published uploads plus the one streaming may not pass it; a
    refused upload leaves nothing and gives its bytes back; files deleted by hand free room."""
    quota = int(len(tif_bytes) * 1.5)
    c = server(upload_quota_mb=quota / 1e6)
    assert c.get("/scenes").json()["upload_room_mb"] == pytest.approx(quota / 1e6)
    first = c.post("/scenes", params={"name": "a.tif"}, content=tif_bytes)
    assert first.status_code == 201, first.text
    assert c.get("/scenes").json()["upload_room_mb"] == pytest.approx((quota - len(tif_bytes)) / 1e6)
    announced = c.post("/scenes", params={"name": "b.tif"}, content=tif_bytes)
    assert announced.status_code == 413 and "--upload-quota-mb" in announced.json()["detail"]

    def chunks():  # no Content-Length: refused when the streamed bytes pass the quota
        for k in range(0, len(tif_bytes), 256):
            yield tif_bytes[k:k + 256]

    streamed = c.post("/scenes", params={"name": "b.tif"}, content=chunks())
    assert streamed.status_code == 413 and "quota" in streamed.json()["detail"]
    assert _files(tmp_path) == ["a.tif"]
    assert c.get("/scenes").json()["upload_room_mb"] == pytest.approx((quota - len(tif_bytes)) / 1e6), \
        "a refused upload gives its bytes back"
    rejected = c.post("/scenes", params={"name": "c.png"}, content=b"\x89PNG\r\n\x1a\n broken")
    assert rejected.status_code == 422
    (tmp_path / "out" / "uploads" / "a.tif").unlink()
    again = c.post("/scenes", params={"name": "b.tif"}, content=tif_bytes)
    assert again.status_code == 201, "room freed by hand is seen at the next upload"
    assert _files(tmp_path) == ["b.tif"]


def test_no_total_quota_when_zero(server, tif_bytes, tmp_path):
    c = server(upload_quota_mb=0)
    assert c.get("/scenes").json()["upload_room_mb"] is None
    for name in ("a.tif", "b.tif", "c.tif"):
        assert c.post("/scenes", params={"name": name}, content=tif_bytes).status_code == 201
