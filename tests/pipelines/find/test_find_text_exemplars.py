"""Phrases and exemplars together (``find_scene(phrases=..., exemplars=...)``) on a tiled
colour scene with deterministic fakes: detector + SAM combines the detector's objects for
the phrase with find-similar's objects for the exemplars, each keeping its class, one
object per thing (per-class NMS across the two routes, cross-tile merge); SAM 3 gets, in
every tile, the phrases and the exemplar boxes lying in that tile, in tile pixels."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import shapely
from scipy import ndimage

from helpers.colour_tiles import BLUE_BOXES, CONFIG, RED_BOXES
from helpers.colour_tiles import colour_tiles_scene as _scene
from helpers.colour_tiles import world_box as _world_box
from helpers.colour_tiles import write_exemplars as _exemplars
from helpers.feature_backends import ColourFeatureBackend
from helpers.scenes import UTM33_TRANSFORM
from terramask.core.errors import InputError
from terramask.core.maskset import MaskSet
from terramask.models.concept.base import CLASS_COLUMN
from terramask.models.concept.detector_sam import DetectorSam
from terramask.models.concept.detectors import Detections
from terramask.pipelines.find.run import find_scene


class BlueDetector:
    """Finds the blue rectangles of a tile for every phrase (score 0.8)."""

    name = "blue-detector"

    def detect(self, rgb, phrases):
        blue = (rgb[..., 2] > 150) & (rgb[..., 0] < 100)
        labels, n = ndimage.label(blue)
        boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)]
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        return Detections(boxes, np.full(n, 0.8, np.float32), np.zeros(n, dtype=np.int64))


def _objects(out):
    meta, _, wkb, fields = pyogrio.raw.read(str(out / "objects.gpkg"))
    cols = dict(zip(meta["fields"], fields, strict=True))
    return list(shapely.from_wkb(wkb)), list(cols["class"]), cols


def _count_like(polys, classes, boxes, cls):
    """How many objects of class ``cls`` match each of ``boxes`` (IoU > 0.8)."""
    counts = []
    for box in boxes:
        truth = _world_box(*box)
        counts.append(sum(1 for p, c in zip(polys, classes, strict=True)
                          if c == cls and p.intersection(truth).area / p.union(truth).area > 0.8))
    return counts


def test_detector_and_similar_objects_are_combined_each_with_its_class(tmp_path):
    scene = _scene(tmp_path)
    ex = _exemplars(tmp_path / "ex.gpkg", [_world_box(*RED_BOXES[0])], [1], ["roof"])
    concept = DetectorSam(BlueDetector(), ColourFeatureBackend(), batch_boxes=1)
    run = find_scene(scene, tmp_path / "out", phrases=["pool"], concept=concept, exemplars=ex, config=CONFIG)
    assert run.summary["classes"] == {"0": None, "1": "pool", "2": "roof"}
    assert run.summary["mode"] == "text+similar"
    polys, classes, cols = _objects(tmp_path / "out")
    assert _count_like(polys, classes, BLUE_BOXES, "pool") == [1] * len(BLUE_BOXES)
    assert _count_like(polys, classes, RED_BOXES, "roof") == [1] * len(RED_BOXES), "the long roof is one object"
    assert len(polys) == len(RED_BOXES) + len(BLUE_BOXES)
    pools = [s for s, c in zip(cols["score"], classes, strict=True) if c == "pool"]
    assert pools == pytest.approx([0.8] * len(BLUE_BOXES)), "detector score"


def test_exemplars_without_a_class_are_examples_of_the_one_phrase_and_duplicates_go(tmp_path):
    """A blue exemplar without a class with --text pool: both routes find the blue
    rectangles as 'pool'; per-class NMS keeps one object each."""
    scene = _scene(tmp_path)
    ex = _exemplars(tmp_path / "ex.gpkg", [_world_box(*BLUE_BOXES[0])], [1], [None])
    concept = DetectorSam(BlueDetector(), ColourFeatureBackend(), batch_boxes=1)
    run = find_scene(scene, tmp_path / "out", phrases=["pool"], concept=concept, exemplars=ex, config=CONFIG)
    assert run.summary["classes"] == {"0": None, "1": "pool"}
    polys, classes, _ = _objects(tmp_path / "out")
    assert _count_like(polys, classes, BLUE_BOXES, "pool") == [1] * len(BLUE_BOXES)
    assert set(classes) == {"pool"} and len(polys) == len(BLUE_BOXES)


class BoxReader:
    """A SAM 3 stand-in: records each tile's query and returns one filled box per example
    box of the query (class: the box's class), nothing for phrases."""

    name = "box-reader"
    takes_exemplar_boxes = True

    def __init__(self):
        self.seen = []

    def find(self, image, query):
        self.seen.append((image.transform, query))
        rows, cols = image.shape
        keep = query.exemplar_labels == 1
        boxes = query.exemplar_boxes[keep]
        masks = np.zeros((len(boxes), rows, cols), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = True
        extras = {CLASS_COLUMN: query.box_classes()[keep], "predicted_iou": np.full(len(boxes), 0.9, np.float32)}
        return MaskSet(masks, np.full(len(boxes), 0.7, np.float32), extras=extras, transform=image.transform,
                       crs=image.crs)


def test_sam3_gets_the_phrases_and_the_boxes_of_each_tile_in_tile_pixels(tmp_path):
    scene = _scene(tmp_path)
    inside, crossing = (24, 24, 72, 64), (300, 380, 420, 420)  # the second spans the tiles from x=256 (overlap 64)
    ex = _exemplars(tmp_path / "ex.gpkg", [_world_box(*inside), _world_box(*crossing), _world_box(*BLUE_BOXES[0])],
                    [1, 1, 0], ["roof", "pool", None])
    reader = BoxReader()
    run = find_scene(scene, tmp_path / "out", phrases=["roof", "tree"], concept=reader, exemplars=ex, config=CONFIG)
    assert run.summary["mode"] == "text+exemplars" and run.tiles == 9
    assert run.summary["classes"] == {"0": None, "1": "roof", "2": "tree", "3": "pool"}
    assert len(reader.seen) == 9 and all(q.phrases == ("roof", "tree") for _, q in reader.seen)
    for transform, query in reader.seen:
        col, row = (~UTM33_TRANSFORM) @ (transform.c, transform.f)
        expected = []
        for box, cls, label in ((inside, "roof", 1), (crossing, "pool", 1), (BLUE_BOXES[0], "object", 0)):
            x0, y0, x1, y1 = box[0] - col, box[1] - row, box[2] - col, box[3] - row
            clipped = (max(x0, 0), max(y0, 0), min(x1, 256), min(y1, 256))
            share = max(clipped[2] - clipped[0], 0) * max(clipped[3] - clipped[1], 0) / ((x1 - x0) * (y1 - y0))
            if share >= 0.5:
                expected.append((clipped, cls, label))
        np.testing.assert_allclose(query.exemplar_boxes, np.array([b for b, _, _ in expected]).reshape(-1, 4), atol=1e-6)
        assert list(query.box_classes()) == [c for _, c, _ in expected]
        assert query.exemplar_labels.tolist() == [lab for _, _, lab in expected]
    polys, classes, _ = _objects(tmp_path / "out")
    assert _count_like(polys, classes, [inside], "roof") == [1]
    assert _count_like(polys, classes, [crossing], "pool") == [1], "found in two tiles, merged into one"


def test_bad_combinations_are_one_line(tmp_path):
    scene = _scene(tmp_path)
    out = tmp_path / "out"
    point = _exemplars(tmp_path / "pt.gpkg", [shapely.Point(UTM33_TRANSFORM @ (40, 40))], [1], ["roof"])
    with pytest.raises(InputError, match="is a point; SAM 3 takes example boxes"):
        find_scene(scene, out, phrases=["roof"], concept=BoxReader(), exemplars=point, config=CONFIG)
    negative = _exemplars(tmp_path / "neg.gpkg", [_world_box(*RED_BOXES[0])], [0], ["car"])
    with pytest.raises(InputError, match="class 'car' are only counter-examples"):
        find_scene(scene, out, phrases=["roof"], concept=BoxReader(), exemplars=negative, config=CONFIG)

    class TextOnly:
        name = "text-only"

        def find(self, image, query):
            raise AssertionError("not reached")

    ex = _exemplars(tmp_path / "ex.gpkg", [_world_box(*RED_BOXES[0])], [1], ["roof"])
    with pytest.raises(InputError, match="no SAM-family model"):
        find_scene(scene, out, phrases=["roof"], concept=TextOnly(), exemplars=ex, config=CONFIG)
    assert not out.exists() or not any(out.iterdir())
