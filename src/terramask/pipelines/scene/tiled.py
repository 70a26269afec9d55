"""Automatic segmentation of a scene of any size, tile by tile, in bounded memory.

:func:`run_tiled_auto` plans tiles (``tile_size`` pixels at native resolution, sharing
``overlap`` pixels), reads one tile window at a time with the scene-wide stretch, skips
tiles holding only nodata, segments each tile with a *segmenter*, merges objects across
tile edges (:mod:`terramask.pipelines.scene.merge`) and writes finished objects as it goes:

- ``labels.tif``: ``uint32`` object IDs (0 = none; where objects overlap the smaller one
  shows), tiled, DEFLATE, Cloud-Optimized GeoTIFF with overviews, same CRS/transform as
  the scene;
- ``objects.gpkg``: one polygon per object in the scene CRS with ``id``, ``score``,
  ``stability``, ``tile`` (tile of origin, ``r<row>_c<col>``), ``n_tiles`` (tiles whose
  masks make it) and ``area_m2``/``perimeter_m`` (``area_px``/``perimeter_px`` without
  CRS);
- ``overlay.png``: a quicklook of the objects over the scene (longest side at most
  ``quicklook_size``);
- ``summary.json``: counts, parameters, timings, throughput.

Memory: one tile of pixels and its masks per worker, the parts of objects that a later
tile can still touch (bit-packed, about one row of tile overlaps), and GDAL's capped block
cache. The scene, a scene-sized label array or mask stack are never held.

A *segmenter* is a picklable zero-argument callable returning ``segment_tile(image:
GeoImage) -> MaskSet`` (masks on the image grid, with ``scores`` and optionally a
``stability_score`` column). :class:`AutoSegmenter` builds one from a model name and
automatic-generation parameters; it runs where the tile runs, so each worker loads the
model once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import shapely
import shapely.affinity
from affine import Affine

from terramask.core.errors import InputError
from terramask.core.frames import pixel_area
from terramask.core.geometry import Tile, Window, plan_tiles
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.stretch import Stretch
from terramask.io.atomic import ensure_output_dir, json_default, remove_stale_temporaries, write_json
from terramask.io.overlay import draw_annotations, save_png
from terramask.io.rasters import LabelRasterWriter
from terramask.io.scene import Scene, open_scene
from terramask.io.vectors import Feature, VectorWriter, geometry_measures
from terramask.pipelines.scene.engines import make_engine, worker_name
from terramask.pipelines.scene.segmenters import (  # noqa: F401  (re-exported for callers of this module)
    AutoSegmenter,
    BackendSegmenter,
    SegmentTile,
    _params_dict,
    check_params,
    describe_segmenter,
    segment_function,
)
from terramask.pipelines.scene.merge import (
    MergedObject,
    MergeParams,
    Part,
    TileGrid,
    TileMerger,
    parts_from_maskset,
    parts_from_windows,
)

log = logging.getLogger(__name__)


DEFAULT_TILE_SIZE = 1024
DEFAULT_OVERLAP = 128
QUICKLOOK_SIZE = 2048
LABELS_NAME = "labels.tif"
OBJECTS_NAME = "objects.gpkg"
OVERLAY_NAME = "overlay.png"
SUMMARY_NAME = "summary.json"


# -- tile work (runs in the engine's workers) --------------------------------------------------
@dataclass(frozen=True)
class SceneSpec:
    """How a worker opens the scene: path, 1-based display bands, scene-wide stretch."""

    path: str
    bands: tuple[int, ...]
    stretch: Stretch | None

    def open(self) -> Scene:
        return open_scene(self.path, bands=self.bands, stretch=self.stretch)


@dataclass(frozen=True)
class TileJob:
    """One tile to segment: cheap to pickle."""

    scene: SceneSpec
    tile: Tile
    seq: int
    interior_edges: int
    edge_margin: int
    cache_mb: int = 64


@dataclass
class TileResult:
    """What a worker sends back for one tile: compact parts, not masks."""

    seq: int
    parts: list[Part]
    masks: int
    skipped: bool
    seconds: float
    worker: str


@contextmanager
def gdal_cache(cache_mb: int) -> Iterator[None]:
    """Cap GDAL's block cache (default: 5 % of RAM) while reading, so reading a large scene
    block by block does not grow memory with the scene (rasterio takes the cap in bytes)."""
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=max(8, int(cache_mb)) * 1024 * 1024):
        yield


def tile_valid_mask(scene: Scene, image: GeoImage) -> np.ndarray:
    """``(rows, cols)`` bool: pixels of the tile ``image`` holding data (no second read
    unless the scene marks nodata with a mask band)."""
    if scene.nodata is None and scene.dtype.kind != "f":
        return scene.valid_mask(image.window)
    return image.valid_mask


class TileWorker:
    """Builds the segmenter once; segments tiles of any scene (keeps the last one open)."""

    def __init__(self, segmenter: Callable[[], SegmentTile]) -> None:
        self._segment = segmenter()
        self._scene: Scene | None = None
        self._spec: SceneSpec | None = None

    def _open(self, spec: SceneSpec) -> Scene:
        if self._spec != spec:
            self.close()
            self._scene, self._spec = spec.open(), spec
        return self._scene

    def __call__(self, job: TileJob) -> TileResult:
        started = time.perf_counter()
        with gdal_cache(job.cache_mb):
            scene = self._open(job.scene)
            window = job.tile.window
            image = scene.read(window)
            valid = tile_valid_mask(scene, image)
        if not valid.any():
            return TileResult(job.seq, [], 0, True, time.perf_counter() - started, worker_name())
        masks = self._segment(image)
        parts = tile_parts(masks, job, None if valid.all() else valid)
        return TileResult(job.seq, parts, len(masks), False, time.perf_counter() - started, worker_name())

    def close(self) -> None:
        if self._scene is not None:
            self._scene.close()
        self._scene, self._spec = None, None


def tile_parts(masks: Any, job: TileJob, valid: np.ndarray | None) -> list[Part]:
    """Parts from what a tile segmenter returned: a :class:`MaskSet`, or a compact result
    (``masks.window(i) -> ((x0, y0), bool window)``, ``scores``, ``stability``, ``shape``,
    like automatic generation's ``AmgResult``)."""
    window = job.tile.window
    shape = getattr(masks, "shape", None)
    if tuple(shape or ()) != window.shape:
        raise InputError(f"the tile segmenter returned masks of shape {shape} for a {window.shape} tile")
    if isinstance(masks, MaskSet):
        return parts_from_maskset(masks, job.seq, window, job.interior_edges, job.edge_margin, valid=valid)
    compact = getattr(masks, "masks", None)
    if compact is None or not callable(getattr(compact, "window", None)) or not hasattr(masks, "scores"):
        raise InputError(f"the tile segmenter returned {type(masks).__name__}, expected a MaskSet or compact masks")
    stability = getattr(masks, "stability", None)
    if stability is None:
        stability = np.full(len(masks.scores), np.nan)
    items = ((*compact.window(i), float(masks.scores[i]), float(stability[i])) for i in range(len(compact)))
    return parts_from_windows(items, job.seq, window, job.interior_edges, job.edge_margin, valid=valid)


# -- writing objects ---------------------------------------------------------------------------
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
    out = [shapely.Polygon(m.exterior, [*m.interiors, *h]) if h else m for m, h in zip(merged, holes)]
    geom = out[0] if len(out) == 1 else shapely.MultiPolygon(out)
    return geom if geom.is_valid else None


def _to_world(geom, transform: Affine):
    return shapely.affinity.affine_transform(geom, [transform.a, transform.b, transform.d, transform.e,
                                                    transform.c, transform.f])


class ObjectSink:
    """Paints finished objects into the label raster and streams their polygons.

    IDs are given in the order objects arrive (1, 2, …). Painting keeps the smaller object
    visible where objects overlap (ties: the lower ID), whatever the arrival order. Objects
    are painted piece by piece (at most a tile each), so a huge object never needs a mask
    of its whole extent; polygons are buffered up to ``flush_features`` objects or
    ``flush_vertices`` coordinates between GeoPackage appends.
    """

    def __init__(self, out_dir: Path, width: int, height: int, transform: Affine, crs: str | None,
                 grid: TileGrid, *, cache_mb: int = 128, min_area_px: float | None = None,
                 max_area_px: float | None = None) -> None:
        self.min_area_px, self.max_area_px = min_area_px, max_area_px
        self.dropped = 0
        self.out_dir = Path(out_dir)
        self.width, self.height = width, height
        self.transform, self.crs = transform, crs
        self.grid = grid
        self.labels = LabelRasterWriter(self.out_dir / LABELS_NAME, width, height, transform, crs, cache_mb=cache_mb)
        measures = geometry_measures(None, crs, transform)
        self._measure_names = list(measures)
        schema = {"id": "int", "score": "float", "stability": "float", "tile": "str", "n_tiles": "int",
                  **{name: "float" for name in measures}}
        self.vectors = VectorWriter(self.out_dir / OBJECTS_NAME, crs, schema)
        self._areas = np.full(4096, np.iinfo(np.int64).max, dtype=np.int64)  # id -> area; 0 never wins
        self._batch_px = 4 * grid.tile_w * grid.tile_h
        self.count = 0
        # Polygons wait in a small buffer: one GeoPackage append per few thousand objects.
        self.flush_features, self.flush_vertices = 2000, 2_000_000
        self._feats: list[Feature] = []
        self._vertices = 0

    def open(self) -> "ObjectSink":
        self.labels.open()
        try:
            self.vectors.open()
        except BaseException:
            self.labels.abort()
            raise
        return self

    def add(self, objects: list[MergedObject]) -> None:
        if not objects:
            return
        paint = []
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
            self.count += 1
            oid = self.count
            if oid >= len(self._areas):
                grown = np.full(max(2 * len(self._areas), oid + 1), np.iinfo(np.int64).max, dtype=np.int64)
                grown[: len(self._areas)] = self._areas
                self._areas = grown
            self._areas[oid] = area
            paint.extend((box, crop, oid, area) for box, crop in obj.pieces())
            world = _to_world(geom_px, self.transform)
            props = {"id": oid, "score": _finite(obj.score), "stability": _finite(obj.stability),
                     "tile": self.grid.tile_id(obj.tile), "n_tiles": len(obj.tiles)}
            props.update(geometry_measures(world, self.crs, self.transform))
            self._feats.append(Feature(world, props))
            self._vertices += int(shapely.get_num_coordinates(world))
        if paint:
            self._paint(paint)
        if len(self._feats) >= self.flush_features or self._vertices >= self.flush_vertices:
            self._flush()

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

    def close(self) -> dict[str, Path]:
        try:
            self._flush()
            vectors = self.vectors.close()
        except BaseException:
            self.labels.abort()
            raise
        return {"labels": self.labels.close(), "objects": vectors}

    def abort(self) -> None:
        self.labels.abort()
        self.vectors.abort()


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def write_quicklook(scene: Scene, labels_path: Path, out_path: Path, max_size: int = QUICKLOOK_SIZE) -> Path:
    """Objects of ``labels_path`` over the scene, longest side at most ``max_size`` pixels.

    Both rasters are read decimated (the label COG from its overviews), never whole.
    """
    rows, cols = scene.stats_shape(max_size)
    rgb = scene.read(out_shape=(rows, cols)).to_rgb8()
    with open_scene(labels_path, stretch=Stretch((0.0,), (1.0,))) as lab_scene:
        labels = lab_scene.read(out_shape=(rows, cols)).pixels[0]
    return save_png(out_path, draw_annotations(rgb, labels))


# -- the run ---------------------------------------------------------------------------------
@dataclass
class TiledResult:
    """Outputs and counts of one tiled run."""

    out_dir: Path
    paths: dict[str, Path]
    objects: int
    tiles: int
    skipped: int
    summary: dict = field(default_factory=dict)


def _progress(total: int, desc: str, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tile", leave=False)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def run_tiled_auto(
    scene_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    segmenter: Callable[[], SegmentTile] | None = None,
    *,
    model: str | None = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    params: Mapping[str, Any] | Any | None = None,
    mode: str = "fast",
    backend: Any = None,
    bands: str | tuple[int, ...] | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    merge: MergeParams | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    ray_options: Mapping[str, Any] | None = None,
    quicklook_size: int = QUICKLOOK_SIZE,
    progress: bool | None = None,
    cache_mb: int = 64,
    min_area_px: float | None = None,
    max_area_px: float | None = None,
    extra_summary: Mapping[str, Any] | None = None,
) -> TiledResult:
    """Segment every object of ``scene_path`` tile by tile; write outputs into ``out_dir``.

    The tile segmenter is, in order of precedence: ``segmenter`` (a picklable factory,
    see the module docstring), ``backend`` (an already loaded backend with ``params``
    and ``mode``; local engine only), else :class:`AutoSegmenter` from ``model``,
    ``checkpoint``, ``device``, ``params``, ``mode``.

    ``tile_size``/``overlap`` in scene pixels (a scene smaller than a tile is one tile);
    objects must fit in ``overlap`` to be seen whole by some tile when they cross an
    edge, larger ones are assembled from parts. ``merge`` tunes the cross-tile merge.
    ``engine``: ``local`` (in process) or ``ray`` (``address``, ``workers``,
    ``ray_options`` as :class:`terramask.pipelines.scene.engines.RayEngine`). ``progress``:
    tqdm bar (default: only when stderr is a terminal). ``cache_mb`` caps GDAL's block cache
    for reading the scene (the label writer has its own cap). ``min_area_px``/``max_area_px``
    drop merged objects outside that size (pixels of the whole object, after merging, so an
    object cut by tile edges is judged by its full size). Returns a :class:`TiledResult`.
    """
    started = time.perf_counter()
    merge = merge or MergeParams()
    if segmenter is None:
        if backend is not None:
            if engine != "local":
                raise InputError("a loaded backend can only run on the local engine; give the model name for Ray")
            segmenter = BackendSegmenter(backend, params, mode)
        else:
            segmenter = AutoSegmenter(model, None if checkpoint is None else str(checkpoint), device,
                                      None if params is None else dict(_params_dict(params)), mode)
    validate = getattr(segmenter, "validate", None)
    if callable(validate):
        validate()
    with gdal_cache(cache_mb), open_scene(scene_path, bands=bands) as scene:
        out = ensure_output_dir(out_dir)
        remove_stale_temporaries(out)
        stretch = scene.stretch
        size = int(tile_size)
        tiles = plan_tiles(scene.path, scene.width, scene.height, size, int(overlap))
        grid = TileGrid(tiles, scene.width, scene.height)
        spec = SceneSpec(scene.path, tuple(b + 1 for b in scene.bands), stretch)
        jobs = (TileJob(spec, t, seq, grid.interior_edges(seq), merge.edge_margin, cache_mb)
                for seq, t in enumerate(tiles))
        merger = TileMerger(grid, merge)
        sink = ObjectSink(out, scene.width, scene.height, scene.transform, scene.crs, grid,
                          min_area_px=min_area_px, max_area_px=max_area_px).open()
        bar = _progress(len(tiles), Path(scene.path).name, progress)
        segmented = skipped = masks = 0
        seg_seconds = 0.0
        worker_names: set[str] = set()
        try:
            with make_engine(engine, address=address, workers=workers, device=getattr(segmenter, "device", "cpu"),
                             **dict(ray_options or {})) as eng:
                for result in eng.map(partial(TileWorker, segmenter), jobs):
                    sink.add(merger.add_tile(result.seq, result.parts))
                    skipped += result.skipped
                    segmented += not result.skipped
                    masks += result.masks
                    seg_seconds += result.seconds
                    worker_names.add(result.worker)
                    if bar is not None:
                        bar.update(1)
                engine_workers = eng.workers
            sink.add(merger.finish())
            paths = sink.close()
        except BaseException:
            sink.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        tiles_done = time.perf_counter()
        paths["overlay"] = write_quicklook(scene, paths["labels"], out / OVERLAY_NAME, quicklook_size)
        summary = _summary(scene, spec, grid, size, int(overlap), merge, merger, segmenter, engine, engine_workers,
                           worker_names, segmented, skipped, masks, sink.count, seg_seconds,
                           tiles_done - started, time.perf_counter() - started, paths, sink.dropped,
                           min_area_px, max_area_px)
    summary.update(dict(extra_summary or {}))
    paths["summary"] = write_json(out / SUMMARY_NAME, summary)
    log.info("%s: %d objects from %d tiles (%d nodata-only skipped)", scene_path, sink.count, len(tiles), skipped)
    return TiledResult(out, paths, sink.count, len(tiles), skipped, summary)


def _summary(scene: Scene, spec: SceneSpec, grid: TileGrid, tile_size: int, overlap: int, merge: MergeParams,
             merger: TileMerger, segmenter: Any, engine: str, engine_workers: int, worker_names: set[str],
             segmented: int, skipped: int, masks: int, objects: int, seg_seconds: float, tiles_seconds: float,
             total_seconds: float, paths: dict[str, Path], dropped: int = 0, min_area_px: float | None = None,
             max_area_px: float | None = None) -> dict:
    area_km2 = None
    if scene.crs is not None:
        world = _to_world(shapely.box(0, 0, scene.width, scene.height), scene.transform)
        area_m2 = geometry_measures(world, scene.crs, scene.transform).get("area_m2")
        area_km2 = None if area_m2 is None else area_m2 / 1e6
    n_tiles = len(grid)
    summary = {
        "scene": scene.path,
        "width": scene.width,
        "height": scene.height,
        "crs": scene.crs,
        "pixel_area": pixel_area(scene.transform),
        "bands": list(spec.bands),
        "stretch": None if spec.stretch is None else spec.stretch.to_dict(),
        "tile_size": tile_size,
        "overlap": overlap,
        "tiles": {"total": n_tiles, "segmented": segmented, "skipped_nodata": skipped,
                  "grid": [grid.nrows, grid.ncols]},
        "masks": masks,
        "objects": objects,
        "dropped_by_area": dropped,
        "area_filter_px": [min_area_px, max_area_px],
        "merge": {**merge.to_dict(), **merger.stats},
        "segmenter": describe_segmenter(segmenter),
        "engine": {"name": engine, "workers": engine_workers, "processes_used": len(worker_names)},
        "timings": {"tiles_s": round(tiles_seconds, 3), "segment_s": round(seg_seconds, 3),
                    "total_s": round(total_seconds, 3)},
        "throughput": {"tiles_per_s": round(n_tiles / tiles_seconds, 4) if tiles_seconds > 0 else None,
                       "km2_per_h": (round(area_km2 / tiles_seconds * 3600, 3)
                                     if area_km2 is not None and tiles_seconds > 0 else None)},
        "area_km2": area_km2,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "outputs": {k: Path(v).name for k, v in paths.items()},
    }
    return json.loads(json.dumps(summary, default=json_default))
