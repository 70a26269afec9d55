"""Remote scenes: URL rewriting and redaction, window reads over HTTP range requests from a
loopback server, and one clear error for each way a network read fails."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from helpers.remote_scenes import write_cog
from helpers.remote_server import RemoteServer
from terramask.core.errors import SceneError, SceneNotFoundError
from terramask.core.geometry import Window
from terramask.io.remote import configure_gdal, display_name, gdal_path, is_remote, redact
from terramask.io.scene import open_scene

SECRET = "X-Amz-Signature=SECRET123"
#: Fast retries for tests (a thread-local GDAL option wins over the process-wide ones).
FAST_RETRY = {"GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "0.01"}


@pytest.mark.parametrize(
    "path, expected",
    [
        ("https://h.example/a/b.tif", "/vsicurl/https://h.example/a/b.tif"),
        ("http://127.0.0.1:8000/b.tif?sig=1", "/vsicurl/http://127.0.0.1:8000/b.tif?sig=1"),
        ("s3://bucket/key/b.tif", "/vsis3/bucket/key/b.tif"),
        ("gs://bucket/b.tif", "/vsigs/bucket/b.tif"),
        ("az://container/b.tif", "/vsiaz/container/b.tif"),
        ("/vsizip/x.zip/b.tif", "/vsizip/x.zip/b.tif"),
        ("relative/b.tif", "relative/b.tif"),
    ],
)
def test_gdal_path(path, expected):
    assert gdal_path(path) == expected
    assert is_remote(path) == (not path.startswith("relative"))


def test_display_name_drops_query_strings_and_credentials():
    assert display_name(f"https://h.example/b.tif?{SECRET}&X-Amz-Date=1") == "https://h.example/b.tif"
    assert display_name("https://user:pw@h.example:8443/b.tif#frag") == "https://h.example:8443/b.tif"
    assert display_name(f"/vsicurl/https://h.example/b.tif?{SECRET}") == "/vsicurl/https://h.example/b.tif"
    assert display_name("local/b.tif") == "local/b.tif"
    text = f"'/vsicurl/https://h.example/b.tif?{SECRET}' not recognized"
    assert redact(text) == "'/vsicurl/https://h.example/b.tif' not recognized"


@pytest.fixture()
def fresh_gdal_options(monkeypatch):
    """A process where :func:`configure_gdal` has not run yet (and again after the test)."""
    from rasterio._env import del_gdal_config

    import terramask.io.remote as remote

    def clear():
        for key in remote.GDAL_OPTIONS:
            del_gdal_config(key)
        remote._configured = False

    clear()
    yield
    monkeypatch.undo()
    clear()


def test_environment_values_win_over_the_defaults(fresh_gdal_options, monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    configure_gdal()
    assert rasterio.env.get_gdal_config("GDAL_HTTP_MAX_RETRY") in (0, "0")  # from the environment
    assert rasterio.env.get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") == "EMPTY_DIR"
    assert rasterio.env.get_gdal_config("GDAL_HTTP_RETRY_DELAY") in (0.5, "0.5")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 1024 x 768 RGB COG with 256 px blocks (12 blocks of noise, ~200 kB each) on a
    loopback server in a child process."""
    root = tmp_path_factory.mktemp("served")
    pixels = np.random.default_rng(3).integers(0, 200, (3, 768, 1024)).astype(np.uint8)
    write_cog(root / "scene.tif", pixels)
    whole = (root / "scene.tif").read_bytes()
    (root / "plain.tif").write_bytes(whole)  # opened once, by one test, without a query string
    (root / "cut.tif").write_bytes(whole[: len(whole) // 2])  # header kept, the last tiles cut
    with RemoteServer(root) as server:
        yield server, root, pixels


class _Fresh:
    """The module's server with URLs that GDAL has not seen: its /vsicurl/ cache keeps
    file sizes, headers and errors per URL for the process, and a unique query string
    makes another URL (the server ignores it; display names drop it)."""

    def __init__(self, server: RemoteServer, tag: str) -> None:
        self._server, self._tag = server, tag

    def url(self, name: str) -> str:
        sep = "&" if "?" in name else "?"
        return self._server.url(f"{name}{sep}case={self._tag}")

    def __getattr__(self, attr: str):
        return getattr(self._server, attr)


@pytest.fixture()
def server(served, request):
    server, root, pixels = served
    server.set(reset=True, status=None, fail_first=0, drop_from=None)
    return _Fresh(server, request.node.name.replace("[", "_").replace("]", "")), root, pixels


def test_remote_window_equals_local_and_reads_part_of_the_file(server):
    server, root, pixels = server
    url = server.url(f"scene.tif?{SECRET}")
    with open_scene(url) as remote, open_scene(root / "scene.tif") as local:
        assert remote.path == display_name(url) and SECRET not in repr(remote) and "case=" not in remote.path
        assert remote.source == url
        assert (remote.crs, remote.transform, remote.shape) == (local.crs, local.transform, local.shape)
        window = Window(0, 0, 200, 200)  # one 256 px block
        image = remote.read(window)
        np.testing.assert_array_equal(image.pixels, local.read(window).pixels)
        np.testing.assert_array_equal(image.pixels, pixels[:, :200, :200])
        assert image.source == remote.path


def test_a_window_read_fetches_a_part_of_the_file(served):
    # A URL without a query string: GDAL asks for the size with HEAD (for a signed URL it
    # sends a GET and hangs up after the headers, which the loopback socket over-counts).
    server, root, _ = served
    server.set(reset=True, status=None, fail_first=0, drop_from=None)
    with open_scene(server.url("plain.tif")) as scene:
        scene.read(Window(0, 0, 200, 200))
    stats = server.stats()
    assert all(r is not None for r in stats["ranges"][1:])  # range requests after the HEAD
    assert stats["bytes_sent"] < 0.15 * (root / "scene.tif").stat().st_size  # one block of 12 (+ overview)


def test_404_is_scene_not_found_naming_the_url_without_query(server):
    server, _, _ = server
    with pytest.raises(SceneNotFoundError) as err:
        open_scene(server.url(f"missing.tif?{SECRET}"))
    assert str(err.value) == f"{display_name(server.url('missing.tif'))}: not found on the server (HTTP 404)"


def test_403_is_access_denied(server):
    server, _, _ = server
    server.set(status=403)
    with pytest.raises(SceneError, match=r"scene.tif: access denied \(HTTP 403\)") as err:
        open_scene(server.url(f"scene.tif?{SECRET}"))
    assert SECRET not in str(err.value)


def test_transient_errors_are_retried(server):
    server, root, pixels = server
    server.set(fail_first=2)  # two 503 answers, then the file
    with rasterio.Env(**FAST_RETRY), open_scene(server.url("scene.tif")) as scene:
        np.testing.assert_array_equal(scene.read(Window(0, 0, 64, 64)).pixels, pixels[:, :64, :64])
    assert server.stats()["statuses"][:2] == [503, 503]


def test_connection_reset_mid_read_is_one_clear_error(server):
    server, _, _ = server
    server.set(drop_from=40_000)  # the header reads pass; tile reads lose the connection
    with rasterio.Env(**FAST_RETRY), open_scene(server.url(f"scene.tif?{SECRET}")) as scene:
        with pytest.raises(SceneError) as err:
            scene.read()
    message = str(err.value)
    assert message.startswith(f"{display_name(server.url('scene.tif'))}: cannot read") and SECRET not in message
    assert "\n" not in message


def test_truncated_remote_file_is_one_clear_error(server):
    server, _, _ = server
    with rasterio.Env(**FAST_RETRY), open_scene(server.url("cut.tif")) as scene:
        with pytest.raises(SceneError, match=r"cut.tif: cannot read window"):
            scene.read(Window(512, 512, 512, 256))
