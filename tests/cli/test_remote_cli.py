"""Commands on scenes served over HTTP by a loopback server: window reads only, the same
results as the local file, one clear line per network failure, and no signature in any
output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio

from helpers.remote_scenes import DATA_BLOCK_CENTRE, write_large_scene
from helpers.remote_server import RemoteServer
from helpers.scenes import blob_scene, write_geotiff

SECRET = "X-Amz-Signature=SECRET123"
AUTO = ["--model", "classic", "--tile-size", "160", "--overlap", "32", "-q"]


@pytest.fixture()
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    write_geotiff(root / "blob.tif", blob_scene(), nodata=0)
    with RemoteServer(root) as server:
        yield server, root


@pytest.fixture()
def fast_retries(monkeypatch):
    """GDAL's network options with one quick retry (set process-wide, like the defaults)."""
    from rasterio._env import del_gdal_config

    import terramask.io.remote as remote

    def clear():
        for key in remote.GDAL_OPTIONS:
            del_gdal_config(key)
        remote._configured = False

    monkeypatch.setitem(remote.GDAL_OPTIONS, "GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setitem(remote.GDAL_OPTIONS, "GDAL_HTTP_RETRY_DELAY", "0.01")
    clear()
    yield
    monkeypatch.undo()
    clear()


def _all_text(folder):
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.suffix in (".json", ".csv", ".jsonl"))


def test_auto_on_a_remote_scene_equals_the_local_file(run_cli, served, tmp_path):
    server, root = served
    url = server.url(f"blob.tif?{SECRET}")
    code, _, err = run_cli("auto", url, *AUTO, "--out", tmp_path / "remote")
    assert code == 0, err
    code, _, err = run_cli("auto", root / "blob.tif", *AUTO, "--out", tmp_path / "local")
    assert code == 0, err
    with rasterio.open(tmp_path / "remote" / "labels.tif") as a, rasterio.open(tmp_path / "local" / "labels.tif") as b:
        assert a.crs == b.crs and a.transform == b.transform
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.read(1).max() > 0
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert summary["scene"]["path"] == server.url("blob.tif")  # no query string
    assert summary["tiles"]["total"] > 1  # tile reads reopen the scene by its full URL
    assert SECRET not in _all_text(tmp_path / "remote")


@pytest.mark.parametrize("case, switches, message", [
    ("404", {"not_found": True}, "blob.tif: not found on the server (HTTP 404)"),
    ("403", {"status": 403}, "blob.tif: access denied (HTTP 403)"),
])
def test_auto_network_failure_is_one_line_and_no_outputs(run_cli, served, tmp_path, case, switches, message):
    server, _ = served
    server.set(**switches)
    out = tmp_path / "out"
    code, _, err = run_cli("auto", server.url(f"blob.tif?{SECRET}"), *AUTO, "--out", out)
    _check_failure(code, err, out, message)


@pytest.mark.parametrize("case", ["reset", "truncated"])
def test_auto_on_a_broken_transfer_is_one_line_and_no_outputs(run_cli, served, tmp_path, fast_retries, case):
    server, root = served
    whole = (root / "blob.tif").read_bytes()
    (root / "cut.tif").write_bytes(whole[: len(whole) // 2])
    if case == "reset":
        server.set(drop_from=4096)  # every range after the first 4 kB loses its connection half-way
    out = tmp_path / "out"
    name = "blob.tif" if case == "reset" else "cut.tif"
    code, _, err = run_cli("auto", server.url(f"{name}?{SECRET}"), *AUTO, "--out", out)
    _check_failure(code, err, out, f"{server.url(name)}: ")


def _check_failure(code, err, out, message):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("terramask: error")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and SECRET not in err
    assert not out.exists() or not any(p.name != ".terramask" for p in out.iterdir())


def test_batch_reports_a_missing_remote_scene_as_a_failed_row(run_cli, served, tmp_path):
    server, _ = served
    out = tmp_path / "out"
    good, bad = server.url(f"blob.tif?{SECRET}"), server.url(f"gone.tif?{SECRET}")
    code, _, err = run_cli("batch", good, bad, "--out", out, *AUTO)
    assert code != 0  # one scene failed
    with open(out / "index.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert rows["blob"]["status"] == "done" and rows["blob"]["input"] == server.url("blob.tif")
    assert rows["gone"]["status"] == "failed" and "HTTP 404" in rows["gone"]["error"]
    assert (out / "blob" / "labels.tif").exists() and not (out / "gone").exists()
    assert SECRET not in _all_text(out)
    code, _, _ = run_cli("batch", good, bad, "--out", out, *AUTO)  # resumed: the done scene is kept
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert sum(j.get("name") == "blob" and j.get("status") == "done" for j in journal) == 1


@pytest.mark.slow
def test_predict_on_a_remote_20000_px_scene_reads_under_5_percent(run_cli, tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    big = write_large_scene(root / "big.tif")
    size = big.stat().st_size
    with RemoteServer(root) as server:
        # no query string: GDAL asks the size with HEAD (a signed URL gets a GET that GDAL
        # hangs up on after the headers, which the loopback socket over-counts)
        code, _, err = run_cli("predict", server.url("big.tif"), "--point", "{},{}".format(*DATA_BLOCK_CENTRE),
                               "--model", "classic", "--out", tmp_path / "out")
        stats = server.stats()
    assert code == 0, err
    assert stats["bytes_sent"] < 0.05 * size, stats
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["scene"]["width"] == 20_000 and result["scene"]["path"] == server.url("big.tif")


def test_auto_on_a_stac_item_equals_the_stacked_local_bands(run_cli, served, tmp_path):
    server, root = served
    pixels = blob_scene()
    assets = {}
    for i, key in enumerate(("b1", "b2", "b3")):
        write_geotiff(root / f"{key}.tif", pixels[i : i + 1], nodata=0)
        assets[key] = {"href": f"./{key}.tif", "roles": ["data"]}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "blob-item", "geometry": None, "links": [],
            "properties": {"datetime": "2024-05-01T00:00:00Z", "gsd": 0.5}, "assets": assets}
    (root / "item.json").write_text(json.dumps(item))
    code, _, err = run_cli("auto", server.url("item.json"), "--assets", "b1,b2,b3", *AUTO, "--out", tmp_path / "stac")
    assert code == 0, err
    code, _, err = run_cli("auto", root / "blob.tif", *AUTO, "--out", tmp_path / "local")
    assert code == 0, err
    with rasterio.open(tmp_path / "stac" / "labels.tif") as a, rasterio.open(tmp_path / "local" / "labels.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    scene = json.loads((tmp_path / "stac" / "summary.json").read_text())["scene"]
    assert scene["path"] == server.url("item.json") + "#b1,b2,b3"
    assert scene["stac"]["id"] == "blob-item" and scene["stac"]["properties"]["gsd"] == 0.5
    code, _, err = run_cli("auto", server.url("item.json"), "--assets", "b1,nir", *AUTO, "--out", tmp_path / "bad")
    assert code != 0 and "blob-item has no asset or band 'nir'; its assets: b1, b2, b3" in err
