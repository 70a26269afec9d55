"""Pixels of merged objects -> polygons and COCO RLE, without scene-sized arrays.

A :class:`terramask.pipelines.scene.merge.MergedObject` is a set of pieces (bool crops in
scene pixels). :func:`object_geometry` traces its polygon (scene pixel frame, ``x=col``,
``y=row``); :func:`to_world` moves it to the scene CRS; :func:`object_rle` gives its
uncompressed COCO RLE over the whole scene grid from the pieces, a band of columns at a
time, so a 100,000² scene never needs a mask of its size.
"""

from __future__ import annotations

import numpy as np
import shapely
import shapely.affinity
from affine import Affine

from terramask.core.rle import positions_to_counts, window_change_positions
from terramask.pipelines.scene.merge import MergedObject


def piece_geometry(box, crop: np.ndarray):
    """Pixel-edge polygon(s) of a bool ``crop`` whose top-left pixel is ``box[:2]`` (scene
    pixels); None when empty.

    The tracing of :func:`terramask.io.vectors.mask_to_geometry` (GDAL polygonize,
    4-connected), building the polygons from coordinate arrays and without its validity
    repair: GDAL's 4-connected pixel polygons are valid, and checking each of thousands of
    pieces costs more than tracing them. Merged geometries are checked once, after union.
    """
    from rasterio.features import shapes

    crop = np.ascontiguousarray(crop, dtype=bool)
    if not crop.any():
        return None
    polys = []
    for geom, value in shapes(crop.view(np.uint8), mask=crop, connectivity=4,
                              transform=Affine.translation(box[0], box[1])):
        if value:
            rings = [shapely.linearrings(np.asarray(r, dtype=np.float64)) for r in geom["coordinates"]]
            polys.append(shapely.Polygon(rings[0], rings[1:]) if len(rings) > 1 else shapely.Polygon(rings[0]))
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


#: Objects made of several pieces are traced from one mask of their box up to this many
#: pixels (exact and linear in the pixels); larger ones by a union of polygons.
RASTER_UNION_MAX_PX = 8192 * 8192


def object_geometry(obj: MergedObject):
    """Polygon/MultiPolygon of a merged object in scene pixel coordinates (x=col, y=row).

    A single piece is traced directly. Several pieces are painted into one mask of the
    object's box and traced once when the box holds at most :data:`RASTER_UNION_MAX_PX`
    pixels (bounded by ``MergeParams.max_object_size``), else their polygons are unioned.
    """
    if len(obj.parts) == 1:
        (box, crop), = obj.pieces()
        return piece_geometry(box, crop)
    x0, y0, x1, y1 = obj.box
    if (x1 - x0) * (y1 - y0) <= RASTER_UNION_MAX_PX:
        box, mask = obj.mask()
        return piece_geometry(box, mask)
    geoms = [g for g in (piece_geometry(box, crop) for box, crop in obj.pieces()) if g is not None]
    if len(geoms) == 1:
        return geoms[0]
    if obj.disjoint:
        geom = _union_disjoint(geoms)
        if geom is not None:
            return geom
    geom = shapely.union_all(geoms)
    return geom if geom.is_valid else shapely.make_valid(geom)


def _polygons_of(geom) -> list:
    return list(geom.geoms) if hasattr(geom, "geoms") else [geom]


def _union_disjoint(geoms: list):
    """Union of pieces that do not overlap (cut to tile cores), shells first.

    A hole of a piece lies strictly inside its region (a piece is cut at its region's
    edge, so anything open to that edge belongs to its outline), so no other piece can
    fill it: only the outlines need a union, and the holes are put back into the merged
    polygon that holds them. Several times faster than a union of the full polygons on
    large, hole-riddled regions; None when the result is not valid (then the caller does
    the plain union).
    """
    polys = [p for g in geoms for p in _polygons_of(g)]
    merged = _polygons_of(shapely.union_all([shapely.Polygon(p.exterior) for p in polys]))
    holes: list[list] = [[] for _ in merged]
    tree = shapely.STRtree(merged)
    for p in polys:
        if p.interiors:
            hit = tree.query(shapely.Polygon(p.exterior).representative_point(), predicate="intersects")
            if len(hit) != 1:
                return None
            holes[int(hit[0])].extend(p.interiors)
    out = [shapely.Polygon(m.exterior, [*m.interiors, *h]) if h else m for m, h in zip(merged, holes, strict=True)]
    geom = out[0] if len(out) == 1 else shapely.MultiPolygon(out)
    return geom if geom.is_valid else None


def to_world(geom, transform: Affine):
    """A scene-pixel geometry in the world frame of ``transform``."""
    return shapely.affinity.affine_transform(geom, [transform.a, transform.b, transform.d, transform.e,
                                                    transform.c, transform.f])


#: Columns of an object's box painted at once when computing its RLE from pieces.
RLE_BAND_PX = 4096 * 4096


def object_rle(obj: MergedObject, shape: tuple[int, int]) -> dict:
    """Uncompressed COCO RLE ``{"size": [H, W], "counts": [...]}`` of ``obj`` over the
    scene grid ``shape``; equal to :func:`terramask.core.rle.mask_to_rle` of the object's
    full-scene mask. Works on bands of the object's box (COCO runs are column-major, so
    bands of columns follow each other): memory at most :data:`RLE_BAND_PX` booleans."""
    rows, cols = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = obj.box
    height = y1 - y0
    step = max(1, RLE_BAND_PX // max(1, height))
    pieces = list(obj.pieces())
    positions = []
    for bx0 in range(x0, x1, step):
        bx1 = min(x1, bx0 + step)
        band = np.zeros((height, bx1 - bx0), dtype=bool)
        for (px0, py0, px1, py1), crop in pieces:
            lo, hi = max(px0, bx0), min(px1, bx1)
            if lo < hi:
                band[py0 - y0 : py1 - y0, lo - bx0 : hi - bx0] |= crop[:, lo - px0 : hi - px0]
        positions.append(window_change_positions(band, bx0, y0, rows))
    counts = positions_to_counts(np.concatenate(positions) if positions else np.zeros(0, np.int64), rows * cols)
    return {"size": [rows, cols], "counts": counts}
