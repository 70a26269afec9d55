"""``terramask stac search`` against a STAC API stand-in on a loopback server: items
written as files that ``auto`` takes as scenes."""

from __future__ import annotations

import json

import pytest

from helpers.remote_server import RemoteServer
from helpers.scenes import blob_scene, write_geotiff

pytest.importorskip("pystac_client")


def _item(item_id: str, server) -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "blobs",
            "geometry": None, "properties": {"datetime": "2024-05-01T00:00:00Z"},
            "links": [{"rel": "self", "href": server.url(f"api/collections/blobs/items/{item_id}")}],
            "assets": {"visual": {"href": "../../../../blob.tif", "roles": ["data"]}}}


@pytest.fixture()
def api(tmp_path):
    root = tmp_path / "served"
    (root / "api").mkdir(parents=True)
    write_geotiff(root / "blob.tif", blob_scene(), nodata=0)
    with RemoteServer(root) as server:
        landing = {
            "type": "Catalog", "id": "test-api", "stac_version": "1.0.0", "description": "stand-in",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
            "links": [{"rel": "self", "href": server.url("api/landing.json")},
                      {"rel": "root", "href": server.url("api/landing.json")},
                      {"rel": "search", "href": server.url("api/search"), "type": "application/geo+json",
                       "method": "GET"}],
        }
        (root / "api" / "landing.json").write_text(json.dumps(landing))
        features = [_item("blob-a", server), _item("blob-b", server)]
        (root / "api" / "search").write_text(json.dumps({"type": "FeatureCollection", "features": features,
                                                          "links": []}))
        yield server, root


def test_search_writes_items_that_auto_takes(run_cli, api, tmp_path):
    server, root = api
    items = tmp_path / "items"
    code, stdout, err = run_cli("stac", "search", server.url("api/landing.json"), "--collections", "blobs",
                                "--bbox", "15,37,15.1,37.1", "--datetime", "2024-05-01/2024-05-31",
                                "--max-items", "5", "--out", items)
    assert code == 0, err
    assert sorted(p.name for p in items.iterdir()) == ["blob-a.json", "blob-b.json"]
    written = json.loads((items / "blob-a.json").read_text())
    assert written["assets"]["visual"]["href"] == server.url("blob.tif")  # absolute: the file lives elsewhere
    out = tmp_path / "out"
    code, _, err = run_cli("auto", items / "blob-a.json", "--model", "classic", "-q", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scene"]["stac"]["id"] == "blob-a" and summary["objects"] > 0


def test_search_errors_are_one_line(run_cli, api, tmp_path):
    server, _ = api
    code, _, err = run_cli("stac", "search", server.url("api/landing.json"), "--bbox", "15,37,14,38")
    assert code != 0 and "--bbox must be WEST,SOUTH,EAST,NORTH" in err
    code, _, err = run_cli("stac", "search", server.url("nowhere.json"))
    assert code != 0 and "STAC search failed" in err and "Traceback" not in err


def test_batch_over_searched_items_with_assets(run_cli, api, tmp_path):
    server, root = api
    items = tmp_path / "items"
    code, _, err = run_cli("stac", "search", server.url("api/landing.json"), "--out", items)
    assert code == 0, err
    out = tmp_path / "batch"
    code, _, err = run_cli("batch", str(items / "*.json"), "--assets", "visual", "--model", "classic", "-q",
                           "--out", out)
    assert code == 0, err
    summaries = [json.loads((out / name / "summary.json").read_text()) for name in ("blob-a", "blob-b")]
    assert [s["scene"]["stac"]["id"] for s in summaries] == ["blob-a", "blob-b"]
    assert summaries[0]["scene"]["path"].endswith("blob-a.json#visual")
    code, _, err = run_cli("batch", str(items / "*.json"), "--assets", "nir", "--model", "classic", "-q",
                           "--out", tmp_path / "bad")
    assert code != 0 and "has no asset or band 'nir'" in err  # each item a failed row, one line each
