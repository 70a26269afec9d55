"""Batches: input expansion, per-scene outputs, gallery and index, resuming from the
journal, bad files reported without stopping the batch."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from helpers.blobs import BlobSegmenter, blob_scene, disc, rect
from helpers.scenes import write_geotiff
from terramask.core.errors import InputError, OutputError
from terramask.pipelines.batch.journal import Journal
from terramask.pipelines.batch.run import expand_inputs, plan_items, run_batch
from terramask.pipelines.scene.config import SceneRunConfig
from terramask.pipelines.scene.segmenters import AutoSegmenter

CONFIG = SceneRunConfig(tile_size=128, overlap=32, progress=False)


def make_scene(path, seed, shape=(200, 260)):
    objs = [rect(shape, 20 + seed * 7, 30, 90 + seed * 7, 80), disc(shape, 180, 140, 25 + seed)]
    return write_geotiff(path, blob_scene(shape, objs, seed=seed))


@pytest.fixture()
def inputs(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        make_scene(src / f"s{i}.tif", i)
    make_scene(src / "sub" / "s0.tif", 5)        # same stem as in/s0.tif
    (src / "broken.tif").write_bytes(os.urandom(2000))
    (src / "notes.txt").write_text("not an image")
    return src


def test_expand_inputs(inputs):
    found = expand_inputs([inputs])
    assert [p.name for p in found] == ["broken.tif", "s0.tif", "s1.tif", "s2.tif"]  # folders: images only, sorted
    found = expand_inputs([str(inputs / "**" / "s0.tif"), inputs / "s1.tif", inputs / "s1.tif"])
    assert [os.fspath(p.relative_to(inputs)) for p in found] == ["s0.tif", "sub/s0.tif", "s1.tif"]
    missing = expand_inputs([inputs / "nope.tif"])  # kept, reported as failed later
    assert missing == [inputs / "nope.tif"]
    with pytest.raises(InputError, match="no input images"):
        expand_inputs([str(inputs / "*.jp2")])


def test_plan_items_unique_names(inputs, tmp_path):
    paths = expand_inputs([inputs / "s0.tif", inputs / "sub" / "s0.tif", inputs / "s1.tif"])
    items = plan_items(paths, tmp_path / "out", "settings")
    assert [it.name for it in items] == ["s0", "s0_2", "s1"]
    assert len({it.key for it in items}) == 3
    assert plan_items(paths, tmp_path / "out", "other settings")[0].key != items[0].key


def read_index(out):
    with open(out / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_batch_outputs_and_bad_file(inputs, tmp_path):
    out = tmp_path / "out"
    result = run_batch([inputs, inputs / "missing.tif"], out, BlobSegmenter(), CONFIG)
    assert result.done == 3 and result.failed == 2 and result.computed == 5
    for name in ("s0", "s1", "s2"):
        for f in ("labels.tif", "objects.gpkg", "masks.json", "overlay.png", "summary.json"):
            assert (out / name / f).is_file()
    assert (out / "gallery.png").is_file() and not (out / "broken").exists()
    rows = read_index(out)
    assert [r["name"] for r in rows] == ["broken", "s0", "s1", "s2", "missing"]
    assert [r["status"] for r in rows] == ["failed", "done", "done", "done", "failed"]
    assert rows[0]["error"] and "broken.tif" in rows[0]["error"]
    assert "no such file" in rows[4]["error"]
    assert all(int(r["objects"]) == 2 for r in rows[1:4])
    assert rows[1]["model"] == "blobs" and json.loads(rows[1]["params"]) == {"threshold": 128}
    summary = json.loads((out / "s0" / "summary.json").read_text())
    assert summary["model"] == "blobs" and summary["parameters"] == {"threshold": 128}
    index = json.loads((out / "index.json").read_text())
    assert index["done"] == 3 and index["failed"] == 2 and index["objects"] == 6
    assert index["settings"]["tile_size"] == 128
    assert [r["name"] for r in index["images"]] == [r["name"] for r in rows]
    assert not list(out.rglob(".*tmp-*"))


def test_resume_recomputes_nothing_finished(inputs, tmp_path):
    out = tmp_path / "out"
    first = run_batch([inputs], out, BlobSegmenter(), CONFIG)
    stamps = {n: (out / n / "labels.tif").stat().st_mtime_ns for n in ("s0", "s1", "s2")}
    def index_without_timings():
        index = json.loads((out / "index.json").read_text())
        for row in index["images"]:
            row.pop("seconds")  # the broken file is retried, with a new timing
        return index

    index_before = index_without_timings()
    again = run_batch([inputs], out, BlobSegmenter(), CONFIG)
    assert first.computed == 4 and again.computed == 1 and again.reused == 3  # only the broken file is retried
    assert {n: (out / n / "labels.tif").stat().st_mtime_ns for n in stamps} == stamps
    assert index_without_timings() == index_before
    # a scene whose outputs disappeared, and different settings, are computed again
    (out / "s1" / "summary.json").unlink()
    third = run_batch([inputs], out, BlobSegmenter(), CONFIG)
    assert third.computed == 2
    fourth = run_batch([inputs], out, BlobSegmenter(threshold=100), CONFIG)
    assert fourth.computed == 4


def test_journal_survives_a_torn_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as j:
        j.record("a", "done", objects=3)
        j.record("b", "failed", error="x")
    with open(path, "ab") as fh:
        fh.write(b'{"v": 1, "key": "c", "sta')  # killed in the middle of a write
    with Journal(path) as j:
        assert j.torn == 1 and j.done("a") and not j.done("b") and j.get("c") is None
        j.record("c", "done")
    with Journal(path) as j:
        assert j.done("c") and j.torn == 0 and len(j) == 3
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["v"] == 1 for line in lines)


def test_journal_is_exclusive(tmp_path):
    with Journal(tmp_path / "journal.jsonl"):
        with pytest.raises(OutputError, match="another terramask batch"):
            Journal(tmp_path / "journal.jsonl").open()


def test_batch_configuration_errors_stop_early(inputs, tmp_path):
    with pytest.raises(InputError, match="overlap"):
        run_batch([inputs], tmp_path / "o", BlobSegmenter(), SceneRunConfig(tile_size=128, overlap=128))
    with pytest.raises(InputError, match="unknown parameter"):
        run_batch([inputs], tmp_path / "o", AutoSegmenter("classic", params={"bogus": 1}), CONFIG)
    assert not (tmp_path / "o").exists()


def test_gallery_follows_input_order(inputs, tmp_path):
    import cv2

    out = tmp_path / "out"
    run_batch([inputs / "s2.tif", inputs / "s0.tif"], out, BlobSegmenter(), CONFIG, gallery_cols=1, gallery_thumb=64)
    sheet = cv2.imread(str(out / "gallery.png"))
    assert sheet.shape[0] > sheet.shape[1]  # one column, two rows
    assert np.any(sheet != 255)
