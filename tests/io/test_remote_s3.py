"""``s3://`` scenes through GDAL's /vsis3/ against an S3-compatible endpoint on 127.0.0.1
(``moto`` in server mode, started by the test): same pixels as the local file, a missing
object is one clear line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.remote_scenes import write_cog
from terramask.core.errors import SceneNotFoundError
from terramask.core.geometry import Window
from terramask.io.scene import open_scene

pytest.importorskip("moto.server", reason="moto[server] provides the local S3 endpoint")
boto3 = pytest.importorskip("boto3")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 endpoint with bucket ``scenes`` holding ``scene.tif``; yields
    (GDAL options for it, the local copy, its pixels)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        for _ in range(100):  # the server takes a moment to listen
            try:
                client.create_bucket(Bucket="scenes")
                break
            except Exception:
                time.sleep(0.1)
        root = tmp_path_factory.mktemp("s3")
        pixels = np.random.default_rng(9).integers(0, 250, (3, 512, 640)).astype(np.uint8)
        local = write_cog(root / "scene.tif", pixels)
        client.upload_file(str(local), "scenes", "tiles/scene.tif")
        options = {"AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
                   **CREDENTIALS}
        yield options, local, pixels
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def s3_env(s3, monkeypatch):
    """The endpoint and credentials in the environment, where GDAL (and users) set them."""
    options, local, pixels = s3
    for key, value in options.items():
        monkeypatch.setenv(key, value)
    return local, pixels


def test_s3_scene_reads_like_the_local_file(s3_env):
    local, pixels = s3_env
    with open_scene("s3://scenes/tiles/scene.tif") as scene:
        assert scene.path == "s3://scenes/tiles/scene.tif" and scene.shape == (512, 640)
        with open_scene(local) as ref:
            assert (scene.crs, scene.transform) == (ref.crs, ref.transform)
        np.testing.assert_array_equal(scene.read(Window(256, 0, 256, 256)).pixels, pixels[:, :256, 256:512])


def test_missing_s3_object_is_one_clear_line(s3_env):
    with pytest.raises(SceneNotFoundError) as err:
        open_scene("s3://scenes/tiles/missing.tif")
    assert str(err.value).startswith("s3://scenes/tiles/missing.tif: not found on the server")
    assert "\n" not in str(err.value)
