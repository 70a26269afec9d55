"""Cross-tile merging with synthetic objects placed across tile edges and corners.

A "perfect" segmenter returns, for each tile, every true object clipped to the tile
window; after merging, each true object must come out exactly once, pixel for pixel.
Imperfect views (partial fragments, slightly different duplicates) are built by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from terramask.core.errors import InputError
from terramask.core.geometry import Tile, Window, plan_tiles
from terramask.core.maskset import MaskSet
from terramask.pipelines.scene.merge import (
    EDGE_BOTTOM,
    EDGE_LEFT,
    EDGE_RIGHT,
    EDGE_TOP,
    MergeParams,
    Part,
    TileGrid,
    TileMerger,
    merge_tiles,
    parts_from_maskset,
)

TILE, OVERLAP = 256, 64


def rect(shape, x0, y0, x1, y1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def disc(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def ring(shape, cx, cy, r0, r1):
    return disc(shape, cx, cy, r1) & ~disc(shape, cx, cy, r0)


def split_components(mask):
    import cv2

    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return [lab == k for k in range(1, n)]


def perfect_tiles(objects, grid, scores=None, split=False):
    """Per tile: every object clipped to the window (optionally one mask per connected piece)."""
    for seq, tile in enumerate(grid.tiles):
        w = tile.window
        masks, sc = [], []
        for k, obj in enumerate(objects):
            m = obj[w.slices()]
            for piece in (split_components(m) if split else [m]):
                if piece.any():
                    masks.append(piece)
                    sc.append(1.0 if scores is None else scores[k])
        stack = np.stack(masks) if masks else np.zeros((0, *w.shape), dtype=bool)
        ms = MaskSet(stack, np.asarray(sc, dtype=np.float32))
        yield seq, parts_from_maskset(ms, seq, w, grid.interior_edges(seq), edge_margin=2)


def scene_mask(obj, shape):
    box, m = obj.mask()
    out = np.zeros(shape, dtype=bool)
    out[box[1] : box[3], box[0] : box[2]] = m
    return out


def assert_same_objects(merged, objects, shape):
    got = [scene_mask(o, shape) for o in merged]
    assert len(got) == len(objects), f"{len(got)} objects merged, {len(objects)} expected"
    unmatched = list(range(len(got)))
    for k, truth in enumerate(objects):
        hit = [i for i in unmatched if np.array_equal(got[i], truth)]
        assert hit, f"object {k} (area {truth.sum()}) did not come out whole"
        unmatched.remove(hit[0])


def make_grid(width, height, tile=TILE, overlap=OVERLAP):
    return TileGrid(plan_tiles("s", width, height, tile, overlap), width, height)


def test_grid_geometry():
    grid = make_grid(640, 640)  # starts 0, 192, 384
    assert (grid.nrows, grid.ncols) == (3, 3)
    assert grid.interior_edges(0) == EDGE_RIGHT | EDGE_BOTTOM
    assert grid.interior_edges(4) == EDGE_LEFT | EDGE_TOP | EDGE_RIGHT | EDGE_BOTTOM
    assert grid.interior_edges(8) == EDGE_LEFT | EDGE_TOP
    assert grid.neighbours(4) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert grid.neighbours(0) == [1, 3, 4]
    assert grid.last_seq_meeting((10, 10, 20, 20)) == 0
    assert grid.last_seq_meeting((200, 10, 210, 20)) == 1  # in the overlap of tiles 0 and 1
    assert grid.last_seq_meeting((200, 200, 210, 210)) == 4  # corner square of 0, 1, 3, 4
    one = make_grid(100, 80)
    assert len(one) == 1 and one.interior_edges(0) == 0


def test_grid_rejects_non_grid_tiles():
    tiles = plan_tiles("s", 640, 640, TILE, OVERLAP)
    with pytest.raises(InputError, match="row-major"):
        TileGrid(tiles[::-1], 640, 640)
    with pytest.raises(InputError, match="grid"):
        TileGrid(tiles[:-1], 640, 640)
    with pytest.raises(InputError, match="outside"):
        TileGrid(tiles, 600, 640)


def test_part_edges_and_packing():
    w = Window(192, 0, 256, 256)
    m = rect((256, 256), 0, 10, 30, 40)  # touches the tile's left edge
    p = Part.from_mask(m, 1, w, interior_edges=EDGE_LEFT | EDGE_BOTTOM, edge_margin=2, score=0.7)
    assert p.box == (192, 10, 222, 40) and p.area == 900 and p.edges == EDGE_LEFT and not p.complete
    assert np.array_equal(p.mask(), np.ones((30, 30), bool))
    # the scene border is not an interior edge: a mask touching it is still complete
    q = Part.from_mask(rect((256, 256), 100, 0, 120, 5), 1, w, interior_edges=EDGE_LEFT, edge_margin=2)
    assert q.edges == 0 and q.complete
    # within the margin counts as touching
    r = Part.from_mask(rect((256, 256), 100, 250, 120, 255), 1, w, interior_edges=EDGE_BOTTOM, edge_margin=2)
    assert r.edges == EDGE_BOTTOM
    assert Part.from_mask(np.zeros((256, 256), bool), 1, w, 0, 2) is None


def test_objects_across_edges_and_corners_come_out_once():
    shape = (640, 640)  # 3 x 3 tiles; overlaps x/y in [192, 256) and [384, 448)
    objects = [
        disc(shape, 90, 90, 40),               # inside tile 0 only
        rect(shape, 200, 20, 300, 60),         # crosses the 0|1 edge; tile 1 sees it whole
        rect(shape, 200, 100, 250, 150),       # inside the 0|1 overlap: a duplicate pair
        rect(shape, 205, 205, 245, 245),       # inside the corner square of tiles 0,1,3,4
        rect(shape, 150, 420, 300, 600),       # across the 3|4/6|7 corner, no tile sees it whole
        rect(shape, 10, 300, 630, 330),        # a stripe through a whole row of tiles
        ring(shape, 320, 320, 130, 150),       # larger than a tile, crosses many edges
        rect(shape, 400, 30, 440, 70),         # in the 1|2 overlap
    ]
    grid = make_grid(*shape)
    merged = merge_tiles(grid, perfect_tiles(objects, grid))
    assert_same_objects(merged, objects, shape)
    by_area = {int(scene_mask(o, shape).sum()): o for o in merged}
    assert by_area[int(objects[3].sum())].complete and len(by_area[int(objects[3].sum())].members) == 4
    ring_obj = by_area[int(objects[6].sum())]
    assert not ring_obj.complete and len(ring_obj.tiles) == 9  # pieces from every tile


@pytest.mark.parametrize("rule", [True, False])
def test_nested_objects_are_not_glued_together(rule, monkeypatch):
    """A multi-scale generator gives a field and the farm holding it. Tile 0 only sees the
    field (so its field and farm masks are equal there); inside the overlap every view
    agrees. They must stay two objects because same-tile parts that overlap never merge;
    without that rule everything is glued into one."""
    if not rule:
        monkeypatch.setattr(TileMerger, "_mark_conflicts", lambda self, parts, masks: None)
    shape = (256, 448)  # one row of two tiles; overlap x in [192, 256)
    field_a = rect(shape, 150, 50, 300, 120)   # crosses the edge
    field_b = rect(shape, 300, 50, 420, 120)   # only in tile 1, outside the overlap
    farm = field_a | field_b
    objects = [field_a, field_b, farm]
    grid = make_grid(448, 256)
    merged = merge_tiles(grid, perfect_tiles(objects, grid))
    if rule:
        assert_same_objects(merged, objects, shape)
    else:
        assert len(merged) < len(objects)


def test_object_reentering_a_tile_is_one_object():
    """A U-shaped object leaves tile 0 and comes back: tile 0 sees two disjoint pieces,
    which join through tile 1's view."""
    shape = (256, 448)  # one row of two tiles; overlap x in [192, 256)
    u = rect(shape, 150, 40, 330, 60) | rect(shape, 150, 180, 330, 200) | rect(shape, 310, 40, 330, 200)
    grid = make_grid(448, 256)
    merged = merge_tiles(grid, perfect_tiles([u], grid, split=True))
    assert_same_objects(merged, [u], shape)
    assert len(merged[0].parts) == 3  # two pieces from tile 0, one from tile 1


def masks_set(masks, scores):
    return MaskSet(np.stack(masks), np.asarray(scores, dtype=np.float32))


def run_two_tiles(masks0, scores0, masks1, scores1, params=None):
    grid = make_grid(448, 256)
    w0, w1 = grid.window(0), grid.window(1)
    p0 = parts_from_maskset(masks_set([m[w0.slices()] for m in masks0], scores0), 0, w0, grid.interior_edges(0))
    p1 = parts_from_maskset(masks_set([m[w1.slices()] for m in masks1], scores1), 1, w1, grid.interior_edges(1))
    return merge_tiles(grid, [(0, p0), (1, p1)], params)


def test_partial_view_inside_a_whole_view_is_dropped():
    shape = (256, 448)
    whole = disc(shape, 250, 128, 40)          # tile 1 ([192, 448)) sees it whole
    fragment = whole & rect(shape, 225, 100, 256, 160)  # tile 0 only segments a piece by its edge
    merged = run_two_tiles([fragment], [0.99], [whole], [0.9])
    assert len(merged) == 1
    obj = merged[0]
    assert obj.complete and obj.tile == 1 and obj.score == pytest.approx(0.9)
    assert np.array_equal(scene_mask(obj, shape), whole)


def test_best_duplicate_wins():
    shape = (256, 448)
    a = rect(shape, 200, 100, 240, 140)
    b = rect(shape, 201, 101, 241, 141)  # the other tile's slightly shifted view (IoU ~ 0.9)
    merged = run_two_tiles([a], [0.8], [b], [0.95])
    assert len(merged) == 1 and merged[0].score == pytest.approx(0.95)
    assert np.array_equal(scene_mask(merged[0], shape), b)
    # below the IoU threshold they stay two objects
    merged = run_two_tiles([a], [0.8], [b], [0.95], MergeParams(iou_thresh=0.95))
    assert len(merged) == 2


def test_small_whole_object_does_not_swallow_a_large_partial_one():
    shape = (256, 448)
    large = rect(shape, 20, 60, 256, 200)      # tile 0's large region, cut at its right edge
    small = rect(shape, 230, 100, 250, 120)    # tile 1 sees a small complete object inside it
    merged = run_two_tiles([large], [0.9], [small], [0.9])
    got = sorted(int(scene_mask(o, shape).sum()) for o in merged)
    assert got == sorted([int(small.sum()), int(large.sum())])


def test_objects_are_released_as_soon_as_no_later_tile_can_touch_them():
    shape = (640, 640)
    inner = disc(shape, 90, 90, 30)            # tile 0 only
    bottom = rect(shape, 90, 230, 120, 250)    # tile 0's bottom overlap: waits for tile 3
    grid = make_grid(*shape)
    merger = TileMerger(grid)
    tiles = dict(perfect_tiles([inner, bottom], grid))
    first = merger.add_tile(0, tiles[0])
    assert len(first) == 1 and np.array_equal(scene_mask(first[0], shape), inner)
    assert merger.pending_parts == 1
    for seq in (1, 2):
        assert merger.add_tile(seq, tiles[seq]) == []
    released = merger.add_tile(3, tiles[3])
    assert len(released) == 1 and np.array_equal(scene_mask(released[0], shape), bottom)
    assert merger.pending_parts == 0
    for seq in range(4, 9):
        assert merger.add_tile(seq, tiles[seq]) == []
    assert merger.finish() == []


def test_tiles_must_come_in_order():
    grid = make_grid(640, 640)
    merger = TileMerger(grid)
    with pytest.raises(InputError, match="grid order"):
        merger.add_tile(1, [])
    merger.add_tile(0, [])
    with pytest.raises(InputError, match="finished after 1 of 9"):
        merger.finish()


def test_merge_params_validation():
    with pytest.raises(InputError, match="iou_thresh"):
        MergeParams(iou_thresh=0)
    with pytest.raises(InputError, match="edge_margin"):
        MergeParams(edge_margin=0)
    with pytest.raises(InputError, match="conflict_frac"):
        MergeParams(conflict_frac=1.5)


def test_single_tile_scene_keeps_every_mask():
    shape = (100, 120)
    grid = TileGrid([Tile("s", Window(0, 0, 120, 100), (0, 0), 0)], 120, 100)
    objects = [rect(shape, 0, 0, 50, 50), rect(shape, 10, 10, 30, 30), disc(shape, 90, 70, 20)]
    merged = merge_tiles(grid, perfect_tiles(objects, grid))
    assert_same_objects(merged, objects, shape)
    assert all(o.complete for o in merged)


def test_tile_cores_partition_the_scene():
    for width, height in [(640, 640), (900, 600), (300, 256)]:
        grid = make_grid(width, height)
        cover = np.zeros((height, width), dtype=np.int32)
        for seq in range(len(grid)):
            x0, y0, x1, y1 = grid.core(seq)
            w = grid.window(seq)
            assert w.col_off <= x0 < x1 <= w.col_off + w.width and w.row_off <= y0 < y1 <= w.row_off + w.height
            cover[y0:y1, x0:x1] += 1
        assert np.all(cover == 1)
    assert make_grid(448, 256).core(0) == (0, 0, 224, 256)  # overlap [192, 256) cut in the middle


def test_pieces_of_an_object_no_tile_sees_whole_come_from_the_core_tiles():
    shape = (256, 448)
    grid = make_grid(448, 256)
    truth = rect(shape, 100, 50, 350, 90)
    view0 = rect(shape, 100, 50, 256, 90)          # tile 0: cut at its right edge
    view1 = rect(shape, 192, 50, 350, 90) & ~rect(shape, 192, 50, 210, 60)  # tile 1 misses a notch in tile 0's core
    w0, w1 = grid.window(0), grid.window(1)
    p0 = parts_from_maskset(masks_set([view0[w0.slices()]], [0.9]), 0, w0, grid.interior_edges(0))
    p1 = parts_from_maskset(masks_set([view1[w1.slices()]], [0.8]), 1, w1, grid.interior_edges(1))
    (obj,) = merge_tiles(grid, [(0, p0), (1, p1)])
    assert not obj.complete and obj.disjoint and len(obj.parts) == 2
    assert np.array_equal(scene_mask(obj, shape), truth)  # the notch lies in tile 0's core
    assert sum(int(m.sum()) for _, m in obj.pieces()) == int(truth.sum())


def test_objects_stop_growing_at_max_object_size():
    shape = (256, 1600)  # one row of tiles
    stripe = rect(shape, 0, 100, 1600, 120)
    grid = make_grid(1600, 256)
    whole = merge_tiles(grid, perfect_tiles([stripe], grid), MergeParams(max_object_size=None))
    assert_same_objects(whole, [stripe], shape)
    capped = merge_tiles(grid, perfect_tiles([stripe], grid), MergeParams(max_object_size=600))
    assert len(capped) > 1
    assert all(o.box[2] - o.box[0] <= 600 for o in capped)
    union = np.zeros(shape, dtype=bool)
    for o in capped:
        m = scene_mask(o, shape)
        assert not (union & m).any()  # pieces do not overlap
        union |= m
    assert np.array_equal(union, stripe)


def test_object_seen_only_outside_the_cores_of_the_tiles_that_saw_it_is_kept():
    """Tiles 0 and 2 matched an object in the corner square of four tiles, but neither
    has a pixel of it in its own core (tile 0's box reaches into its core, its pixels do
    not): cutting the views to their cores would leave nothing, so the views are unioned."""
    from terramask.pipelines.scene.merge import _make_object

    shape = (448, 448)  # 2 x 2 tiles; overlaps [192, 256), middles at 224
    grid = make_grid(448, 448)
    bar = rect(shape, 224, 195, 256, 205)
    ell = bar | rect(shape, 200, 230, 215, 245)
    w0, w2 = grid.window(0), grid.window(2)
    p0 = Part.from_mask(ell[w0.slices()], 0, w0, grid.interior_edges(0), 2)
    p2 = Part.from_mask(bar[w2.slices()], 2, w2, grid.interior_edges(2), 2)
    p0.id, p2.id = 1, 2
    assert not p0.complete and not p2.complete
    obj = _make_object([p0, p2], 0.8, grid)
    assert np.array_equal(scene_mask(obj, shape), ell)
