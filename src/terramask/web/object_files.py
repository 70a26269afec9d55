"""The object layer as the page sees it and as files: outlines in scene pixels, accepted
candidates as polygons, GeoJSON (EPSG:4326), FlatGeobuf (scene CRS) and the class raster
``labels.tif``.

Frames: layer geometries are in the scene CRS (world frame of the scene transform);
outlines for drawing are in scene pixels ``(x=col, y=row)``; ``labels.tif`` is on the
scene grid (same size, transform and CRS), ``uint8`` class ids, 0 = no object, later
objects drawn over earlier ones where they overlap.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from terramask.core.errors import InputError
from terramask.core.frames import window_transform
from terramask.core.geometry import Window
from terramask.io.rasters import LabelRasterWriter
from terramask.io.scene import Scene
from terramask.io.vectors import mask_to_geometry, write_vector
from terramask.pipelines.prompted.session import Prediction
from terramask.web.measures import PixelArea
from terramask.web.objects import LayerObject, ObjectLayer

#: Outline simplification for drawing (scene pixels; the files keep the exact polygons).
OUTLINE_TOLERANCE_PX = 0.5


def candidate_polygon(prediction: Prediction, candidate: int) -> tuple[object, int, float | None]:
    """``(polygon in the scene CRS, pixel count, area in m² or None)`` of candidate
    ``candidate`` (0-based) of ``prediction``."""
    c = prediction.candidates
    if not 0 <= candidate < len(c):
        raise InputError(f"candidate {candidate} does not exist; this prediction has candidates 0..{len(c) - 1}")
    mask = c.masks[candidate]
    geometry = mask_to_geometry(mask, c.transform)
    count = int(c.areas[candidate])
    x0, y0, x1, y1 = (float(v) for v in c.boxes[candidate])
    return geometry, count, PixelArea(c.crs, c.transform).area_m2(count, (x0 + x1) / 2, (y0 + y1) / 2)


def _apply(t: Affine, xy: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points through the affine ``t``."""
    return np.column_stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f])


def _rings(geometry) -> list[list[list[float]]]:
    polygons = list(getattr(geometry, "geoms", [geometry]))
    rings: list[list[list[float]]] = []
    for poly in polygons:
        for ring in [poly.exterior, *poly.interiors]:
            rings.append([[round(x, 2), round(y, 2)] for x, y in ring.coords])
    return rings


def object_payload(obj: LayerObject, layer: ObjectLayer, scene: Scene) -> dict:
    """One object for the page: ids, class, version, measures and its outline as rings
    in scene pixels (simplified by :data:`OUTLINE_TOLERANCE_PX`)."""
    pixels = shapely.transform(obj.geometry, lambda xy: _apply(~scene.transform, xy))
    pixels = shapely.simplify(pixels, OUTLINE_TOLERANCE_PX, preserve_topology=True)
    return {
        "id": obj.id, "class_id": obj.class_id, "version": obj.version, "score": obj.score,
        "area_px": obj.area_px, "area_m2": obj.area_m2, "outline_px": _rings(pixels),
    }


def object_bbox_px(obj: LayerObject, scene: Scene) -> tuple[float, float, float, float]:
    """The object's bounding box in scene pixels (xyxy), clipped to the scene."""
    x0, y0, x1, y1 = shapely.transform(obj.geometry, lambda xy: _apply(~scene.transform, xy)).bounds
    return (max(0.0, x0), max(0.0, y0), min(float(scene.width), x1), min(float(scene.height), y1))


def layer_payload(layer: ObjectLayer, scene: Scene) -> dict:
    """``{revision, can_undo, can_redo, classes, objects}``: the whole layer for the page."""
    with layer.lock:
        return {
            "revision": layer.revision,
            "can_undo": layer.can_undo,
            "can_redo": layer.can_redo,
            "classes": [dict(layer.classes[k]) for k in sorted(layer.classes)],
            "objects": [object_payload(o, layer, scene) for o in sorted(layer.objects.values(), key=lambda o: o.id)],
        }


def geojson_bytes(layer: ObjectLayer) -> bytes:
    """The layer as RFC 7946 GeoJSON (EPSG:4326; without a CRS, the scene's world frame)."""
    with tempfile.TemporaryDirectory(dir=_tmp_root(layer)) as tmp:
        path = write_vector(Path(tmp) / "objects.geojson", layer.features(), layer.crs, layer="objects")
        return path.read_bytes()


def gpkg_bytes(layer: ObjectLayer) -> bytes:
    """The layer's GeoPackage (scene CRS), as saved."""
    with tempfile.TemporaryDirectory(dir=_tmp_root(layer)) as tmp:
        path = write_vector(Path(tmp) / "objects.gpkg", layer.features(), layer.crs, layer="objects")
        return path.read_bytes()


def fgb_bytes(layer: ObjectLayer) -> bytes:
    """The layer as FlatGeobuf (scene CRS, spatial index), the GeoPackage's columns."""
    from terramask.io.vector_formats import FlatGeobufWriter
    from terramask.web.objects import SCHEMA

    with tempfile.TemporaryDirectory(dir=_tmp_root(layer)) as tmp:
        writer = FlatGeobufWriter(Path(tmp) / "objects.fgb", layer.crs, SCHEMA, layer="objects").open()
        try:
            writer.write(layer.features())
        except BaseException:
            writer.abort()
            raise
        return writer.close().read_bytes()


def _pixel_window(geometry, transform: Affine, width: int, height: int) -> Window | None:
    """The scene window (pixels) covering ``geometry`` (world frame), clipped to the scene."""
    x0, y0, x1, y1 = geometry.bounds
    corners = _apply(~transform, np.array([[x, y] for x in (x0, x1) for y in (y0, y1)], dtype=np.float64))
    cols, rows = corners[:, 0].tolist(), corners[:, 1].tolist()
    c0, r0 = max(0, math.floor(min(cols))), max(0, math.floor(min(rows)))
    c1, r1 = min(width, math.ceil(max(cols))), min(height, math.ceil(max(rows)))
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def labels_tif_bytes(layer: ObjectLayer, scene: Scene) -> bytes:
    """``labels.tif``: ``uint8`` class ids on the scene grid (0 = no object), written
    object by object in their windows, so memory follows the objects, not the scene."""
    objects = sorted(layer.objects.values(), key=lambda o: o.id)
    with tempfile.TemporaryDirectory(dir=_tmp_root(layer)) as tmp:
        path = Path(tmp) / "labels.tif"
        with LabelRasterWriter(path, scene.width, scene.height, scene.transform, scene.crs, dtype="uint8") as w:
            for obj in objects:
                window = _pixel_window(obj.geometry, scene.transform, scene.width, scene.height)
                if window is None:
                    continue
                burnt = rasterize([(obj.geometry, obj.class_id)], out_shape=(window.height, window.width),
                                  transform=window_transform(scene.transform, window.col_off, window.row_off),
                                  fill=0, dtype="uint8")
                w.write_window(window, burnt, only_nonzero=True)
        return path.read_bytes()


def _tmp_root(layer: ObjectLayer) -> Path:
    layer.folder.mkdir(parents=True, exist_ok=True)
    return layer.folder
