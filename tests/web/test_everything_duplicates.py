"""Which segment-everything candidates duplicate objects of the layer
(web/everything_duplicates.py): the same object (IoU >= 0.5), a part of one (80 % inside
it); a candidate holding a smaller object, or barely touching one, is new."""

from __future__ import annotations

import shapely

from terramask.web.everything_candidates import Candidate
from terramask.web.everything_duplicates import DUPLICATE_INSIDE, DUPLICATE_IOU, duplicate_of


def _cand(cid: int, geometry) -> Candidate:
    return Candidate(cid, geometry, 0.9, 0.9, int(geometry.area), None)


def test_the_same_object_and_a_part_of_one_are_duplicates_a_whole_holding_one_is_not():
    layer = {7: shapely.box(0, 0, 10, 10), 9: shapely.box(100, 0, 140, 40)}
    cands = [
        _cand(1, shapely.box(2, 0, 12, 10)),      # shifted by 2: IoU 8/12 = 0.67
        _cand(2, shapely.box(5, 0, 15, 10)),      # shifted by 5: IoU 1/3, half inside
        _cand(3, shapely.box(110, 10, 120, 20)),  # a part of object 9: all inside, IoU 1/16
        _cand(4, shapely.box(-20, -20, 30, 30)),  # holds object 7: IoU 0.04, 4 % inside
        _cand(5, shapely.box(50, 50, 60, 60)),    # far from everything
    ]
    assert duplicate_of(cands, layer) == {1: 7, 3: 9}


def test_the_thresholds_and_the_best_overlap_is_named():
    unit = shapely.box(0, 0, 10, 10)
    # a copy shifted by s along x has IoU (10 - s) / (10 + s): DUPLICATE_IOU at s = 10/3
    s = 10 * (1 - DUPLICATE_IOU) / (1 + DUPLICATE_IOU)
    assert duplicate_of([_cand(1, shapely.box(s - 0.01, 0, 10 + s - 0.01, 10))], {1: unit}) == {1: 1}
    assert duplicate_of([_cand(1, shapely.box(s + 0.1, 0, 10 + s + 0.1, 10))], {1: unit}) == {}
    # DUPLICATE_INSIDE of a narrow candidate inside a large object (IoU small)
    big = shapely.box(0, 0, 100, 100)
    inside = 10 * DUPLICATE_INSIDE
    assert duplicate_of([_cand(1, shapely.box(99.99 - inside, 0, 109.99 - inside, 10))], {1: big}) == {1: 1}
    assert duplicate_of([_cand(1, shapely.box(100 - inside + 0.5, 0, 110 - inside + 0.5, 10))], {1: big}) == {}
    # inside two objects: the one with the higher IoU
    cand = _cand(4, shapely.box(0, 0, 10, 10))
    assert duplicate_of([cand], {3: shapely.box(-50, -50, 50, 50), 8: shapely.box(0, 0, 11, 10)}) == {4: 8}


def test_no_objects_no_candidates_and_invalid_polygons():
    box = shapely.box(0, 0, 10, 10)
    assert duplicate_of([], {1: box}) == {} and duplicate_of([_cand(1, box)], {}) == {}
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting: repaired to compare
    assert not bowtie.is_valid
    assert duplicate_of([_cand(1, bowtie)], {1: box}) == {1: 1}  # two triangles, all inside the box
    assert duplicate_of([_cand(1, box)], {1: bowtie}) == {1: 1}  # IoU 50 / 100
    assert duplicate_of([_cand(1, box)], {2: shapely.MultiPolygon([box, shapely.box(20, 0, 30, 10)])}) == {1: 2}
