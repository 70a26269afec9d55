"""``terramask auto``: segment every object of a scene of any size, one output schema.

:func:`run_scene` plans tiles (``tile_size`` pixels at native resolution sharing
``overlap`` pixels; a scene smaller than a tile is a one-tile plan), reads one tile
window at a time with the scene-wide stretch, skips empty tiles (:mod:`.tiled`), segments
each tile with a *segmenter* (:mod:`.segmenters`), merges objects across tile edges
(:mod:`.merge`) and writes finished objects as it goes (:mod:`.sink`). Small and large
scenes go through the same steps and give the same files:

- ``labels.tif``: ``uint32`` object IDs (0 = none; where objects overlap the smaller one
  shows), Cloud-Optimized GeoTIFF (tiled, DEFLATE, overviews) on the scene's grid (CRS,
  transform);
- ``objects.gpkg`` (layer ``objects``): one polygon per object in the scene CRS with
  ``id`` (int), ``class`` (str, null: automatic objects have none), ``predicted_iou``,
  ``stability_score`` (float), ``n_tiles`` (int: tiles whose masks make the object) and
  ``area_m2``/``perimeter_m`` (float; ``area_px`` int/``perimeter_px`` float without a CRS);
- ``masks.json``: a JSON list with one record per object, in ID order, as the reference
  generator's ``amg.py`` writes them: ``segmentation`` (COCO RLE over the whole scene
  grid, or uncompressed RLE with ``output_mode="uncompressed_rle"``), ``area`` (pixels),
  ``bbox`` (XYWH of the end-inclusive box), ``predicted_iou``, ``point_coords``
  (``[[x, y]]`` of the prompt, ``[]`` when the segmenter has no prompts),
  ``stability_score`` and ``crop_box`` (XYWH of the image the generator looked at), all in
  scene pixels; streamed to disk object by object;
- ``overlay.png``: the objects in random colours over the scene (longest side at most
  ``quicklook_size``);
- ``summary.json``: ``objects``, ``scene``, ``model``, ``segmenter``, ``mode``, ``preset``,
  ``parameters``, ``filters``, ``counts``, ``tiles``, ``merge``, ``engine``, ``timings_s``,
  ``throughput``, ``peak_rss_mb``, ``outputs`` — the same keys at every size.
  ``timings_s``: ``total``, ``tiles`` (the tile loop, wall), ``segment`` (worker seconds
  per tile, summed), where the time went (``read``, ``encode``, ``decode``,
  ``postprocess``, ``parts``: worker seconds summed over tiles; ``merge``, ``write``:
  this process; ``quicklook``).

A *classed* segmenter (a ``classes`` attribute: ``terramask find``, whose tile masks carry
a ``class`` column) adds, with the same steps: ``classes.tif`` (class index per pixel of
the object ``labels.tif`` shows, ``uint8``/``uint16``, 0 = none), the columns ``class`` and
``score`` (detector/presence/similarity) in the objects file and ``masks.json``,
``summary["classes"]`` (the class table: index -> name) and an overlay coloured by class
with a legend. Only parts of the same class merge across tiles.

IDs are 1..N, deterministic: in the order the merge finalises objects, each finalised
batch largest first (a one-tile scene: the generator's masks sorted by area).

Every file is written into a hidden staging folder and moved into the output folder
only when the run has finished, ``summary.json`` last: a killed run leaves no file under
a final name (its staging folder is removed by the next run into the same folder).

Memory: one tile of pixels and its masks per worker, the parts of objects a later tile
can still touch, and GDAL's capped block cache; never the scene or a scene-sized array.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import shapely

from terramask.core.errors import InputError
from terramask.core.frames import pixel_area
from terramask.core.geometry import plan_tiles
from terramask.core.stretch import Stretch
from terramask.io.atomic import StagingDir, ensure_output_dir, json_default, remove_stale_temporaries, write_json
from terramask.io.overlay import draw_annotations, draw_classes, save_png
from terramask.io.remote import display_name
from terramask.io.scene import Scene, open_scene
from terramask.io.vectors import geometry_measures
from terramask.pipelines.amg.filters import area_to_pixels, check_range
from terramask.pipelines.scene.config import EngineConfig, SceneRunConfig
from terramask.pipelines.scene.engines import make_engine
from terramask.pipelines.scene.grid import TileGrid
from terramask.pipelines.scene.merge import TileMerger
from terramask.pipelines.scene.merge_geometry import to_world
from terramask.pipelines.scene.segmenters import SegmentTile, describe_segmenter
from terramask.pipelines.scene.sink import CLASSES_NAME, LABELS_NAME, MASKS_NAME, OBJECTS_NAME, ObjectSink
from terramask.pipelines.scene.tiled import STAGES, SceneSpec, TileJob, TileWorker, gdal_cache

log = logging.getLogger(__name__)

OVERLAY_NAME = "overlay.png"
SUMMARY_NAME = "summary.json"
#: Every output, in the order they are moved into place (the summary marks a finished run);
#: the objects file is ``config.objects_name`` (:func:`outputs`), ``objects.gpkg`` by default.
OUTPUTS = (LABELS_NAME, OBJECTS_NAME, MASKS_NAME, OVERLAY_NAME, SUMMARY_NAME)


def outputs(config: SceneRunConfig, classed: bool = False) -> tuple[str, ...]:
    """The output file names of a run with ``config`` (:data:`OUTPUTS` with its objects file;
    a ``classed`` run, ``terramask find``, adds ``classes.tif``)."""
    return (LABELS_NAME, *((CLASSES_NAME,) if classed else ()), config.objects_name, MASKS_NAME, OVERLAY_NAME,
            SUMMARY_NAME)

SegmenterFactory = Callable[[], SegmentTile]


def segmenter_classes(segmenter: SegmenterFactory) -> list[str] | None:
    """The class names of a classed segmenter (its ``classes`` attribute: ``terramask find``),
    or None for automatic segmentation."""
    classes = getattr(segmenter, "classes", None)
    return None if classes is None else [str(c) for c in classes]


@dataclass
class SceneRun:
    """What :func:`run_scene` produced: the output folder, ``paths`` by file name
    (:data:`OUTPUTS`), the object and tile counts and the summary written."""

    out_dir: Path
    paths: dict[str, Path]
    objects: int
    tiles: int
    skipped: int
    summary: dict = field(default_factory=dict)


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total <= 1:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tile", leave=False)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def write_quicklook(scene: Scene, labels_path: Path, out_path: Path, max_size: int,
                    classes: tuple[Path, list[str]] | None = None) -> Path:
    """Objects of ``labels_path`` over the scene, longest side at most ``max_size`` pixels;
    with ``classes`` (the class raster and the class names), coloured by class with a legend.

    The rasters are read decimated (the label COG from its overviews, a sparse scene from
    its stored blocks), never whole.
    """
    rows, cols = scene.stats_shape(max_size)
    rgb = scene.read(out_shape=(rows, cols)).to_rgb8()
    with open_scene(labels_path, stretch=Stretch((0.0,), (1.0,))) as lab_scene:
        labels = lab_scene.read(out_shape=(rows, cols)).pixels[0]
    if classes is None:
        return save_png(out_path, draw_annotations(rgb, labels))
    with open_scene(classes[0], stretch=Stretch((0.0,), (1.0,))) as class_scene:
        class_px = class_scene.read(out_shape=(rows, cols)).pixels[0]
    return save_png(out_path, draw_classes(rgb, class_px.astype(np.int64), classes[1], labels))


def _area_limits(scene: Scene, config: SceneRunConfig) -> tuple[float | None, float | None]:
    """``--min-area``/``--max-area`` in pixels of this scene (ground units need a CRS)."""
    shape = (scene.height, scene.width)
    lo, hi = config.min_area, config.max_area
    min_px = area_to_pixels(lo, scene.transform, scene.crs, shape, "--min-area")
    max_px = area_to_pixels(hi, scene.transform, scene.crs, shape, "--max-area")
    check_range(min_px, max_px, lo.text if lo else "", hi.text if hi else "")
    return min_px, max_px


def check_scene(path: str | os.PathLike, config: SceneRunConfig) -> None:
    """Open ``path`` and check what ``config`` says about it (bands, area units), so a
    caller can fail before loading a model."""
    with open_scene(path, bands=config.bands) as scene:
        _area_limits(scene, config)


def run_scene(path: str | os.PathLike, out_dir: str | os.PathLike, segmenter: SegmenterFactory,
              config: SceneRunConfig | None = None, engine: EngineConfig | None = None) -> SceneRun:
    """Segment every object of the scene at ``path`` into ``out_dir`` (see the module
    docstring for the files).

    ``segmenter``: a picklable zero-argument factory returning ``segment_tile(image) ->
    masks`` (:class:`~terramask.pipelines.scene.segmenters.AutoSegmenter` from a model
    name, :class:`~terramask.pipelines.scene.segmenters.BackendSegmenter` around a loaded
    backend (local engine only), or any factory with the same shape). ``config``: tiling,
    filters and outputs; ``engine``: where tiles run. Raises :class:`InputError` for bad
    settings, :class:`~terramask.core.errors.SceneError` for unreadable scenes.
    """
    started = time.perf_counter()
    config = config or SceneRunConfig()
    engine = engine or EngineConfig()
    if engine.name != "local" and not getattr(segmenter, "shippable", True):
        raise InputError("a loaded backend can only run on the local engine; give the model name for Ray")
    validate = getattr(segmenter, "validate", None)
    if callable(validate):
        validate()
    with gdal_cache(config.cache_mb), open_scene(path, bands=config.bands) as scene:
        min_px, max_px = _area_limits(scene, config)
        out = ensure_output_dir(out_dir)
        remove_stale_temporaries(out)
        tiles = plan_tiles(scene.path, scene.width, scene.height, config.tile_size, config.overlap)
        grid = TileGrid(tiles, scene.width, scene.height)
        spec = SceneSpec(scene.source, tuple(b + 1 for b in scene.bands), scene.stretch)
        staging = StagingDir(out)
        try:
            stats = _segment_tiles(scene, spec, grid, segmenter, config, engine, staging, min_px, max_px)
            stats["tiles_s"] = time.perf_counter() - started
            classed = None if stats["classes"] is None else (staging / CLASSES_NAME, stats["classes"])
            write_quicklook(scene, staging / LABELS_NAME, staging / OVERLAY_NAME, config.quicklook_size, classed)
            stats["stages"]["quicklook"] = time.perf_counter() - started - stats["tiles_s"]
            stats["total_s"] = time.perf_counter() - started
            summary = _summary(scene, spec, grid, segmenter, config, engine, stats, min_px, max_px)
            write_json(staging / SUMMARY_NAME, summary)
            paths = staging.commit(outputs(config, classed is not None))
        except BaseException:
            staging.discard()
            raise
    log.info("%s: %d objects from %d tiles (%d empty skipped)", display_name(path), stats["objects"], len(grid), stats["skipped"])
    return SceneRun(out, paths, stats["objects"], len(grid), stats["skipped"], summary)


def _segment_tiles(scene: Scene, spec: SceneSpec, grid: TileGrid, segmenter: SegmenterFactory,
                   config: SceneRunConfig, engine: EngineConfig, staging: StagingDir,
                   min_px: float | None, max_px: float | None) -> dict[str, Any]:
    """Run every tile through the engine, the merge and the sink; returns the counts.

    Tiles that the file's block table shows empty never go to the engine (on Ray, tens of
    thousands of empty tiles of a sparse mosaic would each cost a task); the merge sees
    them as tiles without parts, in grid order.
    """
    merge = config.merge
    empty = [scene.window_is_empty(t.window) for t in grid.tiles]
    jobs = (TileJob(spec, t, seq, grid.interior_edges(seq), merge.edge_margin, config.cache_mb)
            for seq, t in enumerate(grid.tiles) if not empty[seq])
    merger = TileMerger(grid, merge)
    sink = ObjectSink(staging.path, scene.width, scene.height, scene.transform, scene.crs, grid,
                      min_area_px=min_px, max_area_px=max_px, output_mode=config.output_mode,
                      objects_name=config.objects_name, classes=segmenter_classes(segmenter)).open()
    bar = _progress(len(grid), Path(scene.path).name, config.progress)
    stats: dict[str, Any] = {"segmented": 0, "skipped": 0, "masks": 0, "segment_s": 0.0, "workers": 0}
    stages = dict.fromkeys((*STAGES, "merge", "write"), 0.0)
    names: set[str] = set()

    def merge_and_write(seq: int, parts: list) -> None:
        t0 = time.perf_counter()
        finished = merger.add_tile(seq, parts)
        t1 = time.perf_counter()
        sink.add(finished)
        stages["merge"] += t1 - t0
        stages["write"] += time.perf_counter() - t1

    def skip_until(seq: int) -> None:
        while merger.next_seq < seq:
            merge_and_write(merger.next_seq, [])
            stats["skipped"] += 1
            if bar is not None:
                bar.update(1)

    try:
        if not all(empty):
            with make_engine(engine.name, address=engine.address, workers=engine.workers,
                             device=getattr(segmenter, "device", "cpu"), **engine.options) as eng:
                for result in eng.map(partial(TileWorker, segmenter), jobs):
                    skip_until(result.seq)
                    merge_and_write(result.seq, result.parts)
                    for name, seconds in result.stages.items():
                        stages[name] = stages.get(name, 0.0) + seconds
                    stats["skipped"] += result.skipped
                    stats["segmented"] += not result.skipped
                    stats["masks"] += result.masks
                    stats["segment_s"] += result.seconds
                    names.add(result.worker)
                    if bar is not None:
                        bar.update(1)
                stats["workers"] = eng.workers
                stats["startup_s"] = eng.startup_s
        skip_until(len(grid))
        t0 = time.perf_counter()
        finished = merger.finish()
        t1 = time.perf_counter()
        sink.add(finished)
        sink.close()
        stages["merge"] += t1 - t0
        stages["write"] += time.perf_counter() - t1
    except BaseException:
        sink.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    stats.update(objects=sink.count, dropped=sink.dropped, processes=len(names), merge=dict(merger.stats),
                 stages=stages, classes=sink.classes)
    return stats


def _scene_info(scene: Scene, spec: SceneSpec) -> dict:
    area_km2 = None
    if scene.crs is not None:
        world = to_world(shapely.box(0, 0, scene.width, scene.height), scene.transform)
        area_m2 = geometry_measures(world, scene.crs, scene.transform).get("area_m2")
        area_km2 = None if area_m2 is None else area_m2 / 1e6
    return {"path": scene.path, "width": scene.width, "height": scene.height, "bands": list(spec.bands),
            "crs": scene.crs, "transform": list(scene.transform)[:6], "nodata": scene.nodata,
            "pixel_area": pixel_area(scene.transform), "area_km2": area_km2,
            "stretch": None if spec.stretch is None else spec.stretch.to_dict(), "stac": scene.stac}


def _summary(scene: Scene, spec: SceneSpec, grid: TileGrid, segmenter: SegmenterFactory, config: SceneRunConfig,
             engine: EngineConfig, stats: dict[str, Any], min_px: float | None, max_px: float | None) -> dict:
    """``summary.json``: one key set at every scene size (module docstring)."""
    described = describe_segmenter(segmenter)
    info = _scene_info(scene, spec)
    tiles_s = stats["tiles_s"]
    summary = {
        "objects": stats["objects"],
        "scene": info,
        "model": described.get("model"),
        "segmenter": described,
        "mode": described.get("mode"),
        "preset": config.preset,
        "parameters": described.get("params") or {},
        "filters": {"min_area": config.min_area.text if config.min_area else None,
                    "max_area": config.max_area.text if config.max_area else None,
                    "min_area_px": min_px, "max_area_px": max_px},
        "counts": {"masks": stats["masks"], "parts": stats["merge"]["parts"],
                   "dropped_by_area": stats["dropped"], "objects": stats["objects"]},
        "tiles": {"total": len(grid), "segmented": stats["segmented"], "skipped_empty": stats["skipped"],
                  "grid": [grid.nrows, grid.ncols], "tile_size": config.tile_size, "overlap": config.overlap},
        "merge": {**config.merge.to_dict(), **stats["merge"]},
        "engine": {**engine.to_dict(), "workers": stats.get("workers"), "processes_used": stats["processes"],
                   "startup_s": round(stats.get("startup_s", 0.0), 3)},
        "timings_s": {"tiles": round(tiles_s, 3), "segment": round(stats["segment_s"], 3),
                      "total": round(stats["total_s"], 3),
                      **{name: round(seconds, 3) for name, seconds in stats["stages"].items()}},
        "throughput": {"tiles_per_s": round(len(grid) / tiles_s, 4) if tiles_s > 0 else None,
                       "km2_per_h": (round(info["area_km2"] / tiles_s * 3600, 3)
                                     if info["area_km2"] is not None and tiles_s > 0 else None)},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "outputs": list(outputs(config, stats["classes"] is not None)),
    }
    if stats["classes"] is not None:  # a classed run: the class table of classes.tif
        summary["classes"] = {"0": None, **{str(k + 1): name for k, name in enumerate(stats["classes"])}}
    return json.loads(json.dumps(summary, default=json_default))
