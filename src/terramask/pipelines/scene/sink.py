"""Finished objects -> ``labels.tif``, ``objects.gpkg`` and ``masks.json``, as they come.

:class:`ObjectSink` receives the objects that the cross-tile merge has finalised
(:class:`terramask.pipelines.scene.merge.MergedObject`), gives them IDs, paints them into
the label raster, streams their polygons into the GeoPackage and their COCO records into
``masks.json``. It writes into a folder it is given (the run's staging folder: see
:class:`terramask.io.atomic.StagingDir`); nothing is held per object once written beyond
an ``id -> area`` table for painting.

IDs: 1, 2, … in the order objects are finalised (the merge's deterministic order), the
objects of one finalised batch sorted by area, largest first (stable). A one-tile scene
is one batch, so its IDs are the reference generator's order sorted by area.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import shapely
from affine import Affine

from terramask.core.errors import ModelError
from terramask.core.geometry import Window
from terramask.core.rle import to_coco_rle
from terramask.io.coco import RecordWriter
from terramask.io.rasters import LabelRasterWriter
from terramask.io.vector_formats import open_vector_writer
from terramask.io.vectors import Feature, geometry_measures
from terramask.pipelines.scene.grid import TileGrid
from terramask.pipelines.scene.merge import MergedObject
from terramask.pipelines.scene.merge_geometry import object_geometry, object_rle, to_world

LABELS_NAME = "labels.tif"
OBJECTS_NAME = "objects.gpkg"
MASKS_NAME = "masks.json"
CLASSES_NAME = "classes.tif"
"""Class raster of a classed run (``terramask find``): class index per pixel, 0 = none."""


def object_schema(crs: str | None, transform: Affine, classed: bool = False) -> dict[str, str]:
    """Columns of ``objects.gpkg`` (the same at every scene size): ``id``, ``class``
    (null: automatic objects have no class), ``predicted_iou``, ``stability_score``,
    ``n_tiles`` and the measures (``area_m2``/``perimeter_m``, or ``area_px``/``perimeter_px``
    without a CRS). A ``classed`` run adds ``score`` (detector/presence/similarity) after
    ``class``."""
    measures = geometry_measures(None, crs, transform)
    scored = {"score": "float"} if classed else {}
    return {"id": "int", "class": "str", **scored, "predicted_iou": "float", "stability_score": "float",
            "n_tiles": "int", **{name: ("int" if name == "area_px" else "float") for name in measures}}


def class_dtype(n_classes: int) -> str:
    """``uint8`` for up to 255 classes (0 = none), else ``uint16``."""
    return "uint8" if n_classes < 255 else "uint16"


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _xywh(x0: float, y0: float, x1: float, y1: float) -> list:
    return [int(v) if float(v).is_integer() else float(v) for v in (x0, y0, x1 - x0, y1 - y0)]


class ObjectSink:
    """Paints finished objects into the label raster and streams polygons and records.

    Painting keeps the smaller object visible where objects overlap (ties: the lower ID),
    whatever the arrival order; objects are painted piece by piece (at most a tile
    each). Polygons are buffered up to ``flush_features`` objects or ``flush_vertices``
    coordinates between GeoPackage appends. ``min_area_px``/``max_area_px`` drop objects
    outside that size (whole merged objects). ``output_mode``: ``coco_rle`` or
    ``uncompressed_rle`` for ``masks.json``.

    ``classes`` (a classed run, ``terramask find``): the class names in table order;
    objects then carry ``class`` and ``score`` (``objects.gpkg`` and ``masks.json``), and
    ``classes.tif`` holds the class index (1-based in ``classes``, 0 = none) of the object
    that ``labels.tif`` shows at each pixel. A class not in the list is appended.
    """

    def __init__(self, out_dir: Path, width: int, height: int, transform: Affine, crs: str | None,
                 grid: TileGrid, *, cache_mb: int = 128, min_area_px: float | None = None,
                 max_area_px: float | None = None, output_mode: str = "coco_rle",
                 objects_name: str = OBJECTS_NAME, classes: Sequence[str] | None = None) -> None:
        self.min_area_px, self.max_area_px = min_area_px, max_area_px
        self.output_mode = output_mode
        self.dropped = 0
        self.out_dir = Path(out_dir)
        self.width, self.height = width, height
        self.transform, self.crs = transform, crs
        self.grid = grid
        self.labels = LabelRasterWriter(self.out_dir / LABELS_NAME, width, height, transform, crs, cache_mb=cache_mb)
        self.objects_name = objects_name
        self.classes: list[str] | None = None if classes is None else list(classes)
        self.class_raster = None if classes is None else LabelRasterWriter(
            self.out_dir / CLASSES_NAME, width, height, transform, crs, dtype=class_dtype(len(classes)), cache_mb=cache_mb)
        self._class_of = np.zeros(4096, dtype=np.int64)  # id -> class index
        self.vectors = open_vector_writer(self.out_dir / objects_name, crs,
                                          object_schema(crs, transform, classes is not None), layer="objects")
        self.records = RecordWriter(self.out_dir / MASKS_NAME)
        self._areas = np.full(4096, np.iinfo(np.int64).max, dtype=np.int64)  # id -> area; 0 never wins
        self._batch_px = 4 * grid.tile_w * grid.tile_h
        self.count = 0
        self.flush_features, self.flush_vertices = 2000, 2_000_000
        self._feats: list[Feature] = []
        self._vertices = 0

    def open(self) -> "ObjectSink":
        self.labels.open()
        try:
            if self.class_raster is not None:
                self.class_raster.open()
            self.vectors.open()
            self.records.open()
        except BaseException:
            self.abort()
            raise
        return self

    def add(self, objects: list[MergedObject]) -> None:
        """Write objects the merge has finalised (IDs follow; see the module docstring)."""
        kept = []
        for obj in objects:
            geom_px = object_geometry(obj)
            if geom_px is None:  # defensive: pieces are never empty
                self.dropped += 1
                continue
            area = int(round(geom_px.area))
            if (self.min_area_px is not None and area < self.min_area_px) or (
                    self.max_area_px is not None and area > self.max_area_px):
                self.dropped += 1
                continue
            kept.append((area, obj, geom_px))
        kept.sort(key=lambda t: -t[0])  # stable: the merge's order among equal areas
        paint: list[tuple[tuple, np.ndarray, int, int]] = []
        for area, obj, geom_px in kept:
            oid = self._new_id(area, obj.cls)
            paint.extend((box, crop, oid, area) for box, crop in obj.pieces())
            self._write_feature(oid, obj, geom_px)
            self.records.write(self._record(obj, geom_px, area))
        if paint:
            self._paint(paint)
        if len(self._feats) >= self.flush_features or self._vertices >= self.flush_vertices:
            self._flush()

    def _new_id(self, area: int, cls: str | None = None) -> int:
        self.count += 1
        oid = self.count
        if oid >= len(self._areas):
            grown = np.full(max(2 * len(self._areas), oid + 1), np.iinfo(np.int64).max, dtype=np.int64)
            grown[: len(self._areas)] = self._areas
            self._areas = grown
            self._class_of = np.concatenate([self._class_of, np.zeros(len(grown) - len(self._class_of), np.int64)])
        self._areas[oid] = area
        self._class_of[oid] = self._class_index(cls)
        return oid

    def _class_index(self, cls: str | None) -> int:
        """1-based index of ``cls`` in the class table (appended when new); 0 without classes."""
        if self.classes is None or cls is None:
            return 0
        if cls not in self.classes:
            limit = np.iinfo(self.class_raster.dtype).max if self.class_raster is not None else 0
            if len(self.classes) >= limit:
                raise ModelError(f"more than {limit} classes do not fit the class raster")
            self.classes.append(cls)
        return self.classes.index(cls) + 1

    def _write_feature(self, oid: int, obj: MergedObject, geom_px: Any) -> None:
        world = to_world(geom_px, self.transform)
        props: dict[str, Any] = {"id": oid, "class": obj.cls}
        if self.classes is not None:
            props["score"] = _finite(obj.class_score)
        props.update({"predicted_iou": _finite(obj.score), "stability_score": _finite(obj.stability),
                      "n_tiles": len(obj.tiles)})
        props.update(geometry_measures(world, self.crs, self.transform))
        self._feats.append(Feature(world, props))
        self._vertices += int(shapely.get_num_coordinates(world))

    def _record(self, obj: MergedObject, geom_px: Any, area: int) -> dict:
        """The reference generator's record of ``obj``, in scene pixels."""
        rle = object_rle(obj, (self.height, self.width))
        minx, miny, maxx, maxy = (int(round(v)) for v in geom_px.bounds)
        rep = obj.representative
        crop = rep.crop_box or self.grid.window(rep.tile).bounds
        classed = {} if self.classes is None else {"class": obj.cls, "score": _finite(obj.class_score)}
        return {**classed,
            "segmentation": to_coco_rle(rle) if self.output_mode == "coco_rle" else rle,
            "area": area,
            "bbox": _xywh(minx, miny, maxx - 1, maxy - 1),  # the reference's end-inclusive box
            "predicted_iou": float(obj.score),
            "point_coords": [] if rep.point is None else [[float(rep.point[0]), float(rep.point[1])]],
            "stability_score": _finite(obj.stability),
            "crop_box": _xywh(*crop),
        }

    def _flush(self) -> None:
        if self._feats:
            self.vectors.write(self._feats)
        self._feats, self._vertices = [], 0

    def _paint(self, items: list[tuple[tuple, np.ndarray, int, int]]) -> None:
        boxes = np.array([box for box, _, _, _ in items], dtype=np.int64)
        x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
        x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
        if (x1 - x0) * (y1 - y0) <= self._batch_px:
            self._paint_window((int(x0), int(y0), int(x1), int(y1)), items)
        else:
            for item in items:
                self._paint_window(item[0], [item])

    def _paint_window(self, box, items) -> None:
        bx0, by0, bx1, by1 = box
        window = Window.from_bounds(bx0, by0, bx1, by1)
        current = self.labels.read_window(window)
        for (x0, y0, x1, y1), crop, oid, area in items:
            sub = current[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
            held = self._areas[sub]
            take = crop & ((held > area) | ((held == area) & (sub > oid)))
            sub[take] = oid
        self.labels.write_window(window, current)
        if self.class_raster is not None:
            self.class_raster.write_window(window, self._class_of[current])

    def close(self) -> dict[str, Path]:
        """Finish the three files (in the sink's folder); returns their paths by name."""
        try:
            self._flush()
            vectors = self.vectors.close()
            records = self.records.close()
            labels = self.labels.close()
            classes = None if self.class_raster is None else self.class_raster.close()
        except BaseException:
            self.abort()
            raise
        paths = {LABELS_NAME: labels, self.objects_name: vectors, MASKS_NAME: records}
        if classes is not None:
            paths[CLASSES_NAME] = classes
        return paths

    def abort(self) -> None:
        if self.class_raster is not None:
            self.class_raster.abort()
        self.labels.abort()
        self.vectors.abort()
        self.records.abort()
