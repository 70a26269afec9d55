"""``terramask auto --mosaic``: a field crossing the border between two scenes in
different UTM zones is one object."""

from __future__ import annotations

import json

import pyogrio.raw
import shapely

from helpers.mosaic_scenes import write_two_zones


def test_field_across_the_zone_border_is_one_object(run_cli, tmp_path):
    west, east, field = write_two_zones(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli("auto", "--mosaic", west, east, "--model", "classic", "--tile-size", "128",
                           "--overlap", "32", "-q", "--out", out)
    assert code == 0, err
    _, _, geoms, _ = pyogrio.raw.read(out / "objects.gpkg")
    polys = [shapely.from_wkb(g) for g in geoms]
    hits = [p for p in polys if p.intersects(field.centroid.buffer(5))]
    assert len(hits) == 1  # one object where the field crosses the border
    obj = hits[0]
    assert obj.intersection(field).area > 0.8 * field.area and obj.area < 1.3 * field.area
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scene"]["crs"] == "EPSG:32633" and summary["tiles"]["total"] > 1
    assert summary["scene"]["path"].startswith("mosaic of 2 scenes")


def test_mosaic_needs_two_scenes_and_one_scene_needs_no_mosaic(run_cli, tmp_path):
    west, east, _ = write_two_zones(tmp_path)
    code, _, err = run_cli("auto", "--mosaic", west, "--model", "classic", "--out", tmp_path / "a")
    assert code != 0 and "at least two scenes" in err
    code, _, err = run_cli("auto", west, east, "--model", "classic", "--out", tmp_path / "b")
    assert code != 0 and "--mosaic" in err
