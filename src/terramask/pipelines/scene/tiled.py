"""Tile work: what one engine worker does with one tile of a scene.

A :class:`TileJob` (scene spec + tile, cheap to pickle) goes to a :class:`TileWorker`,
which builds its segmenter once (:mod:`terramask.pipelines.scene.segmenters`), reads the
tile window with the scene-wide stretch and returns a :class:`TileResult`: the tile's
masks as compact parts (:mod:`terramask.pipelines.scene.parts`), never the pixels.

Empty tiles are skipped without running the model: a tile none of whose blocks is stored
in the file (a sparse GeoTIFF, known from its block table without reading pixels), a
tile holding only nodata, or a constant tile (e.g. all zeros in a file without a nodata
value) — found by the one window read the tile needs anyway.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from terramask.core.errors import InputError
from terramask.core.geometry import Tile
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.stretch import Stretch
from terramask.io.scene import Scene, open_scene
from terramask.pipelines.scene.engines import worker_name
from terramask.pipelines.scene.parts import Part, parts_from_maskset, parts_from_windows
from terramask.pipelines.scene.segmenters import SegmentTile


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
    """What a worker sends back for one tile: compact parts, not masks; ``stages``:
    seconds spent reading, encoding, decoding, post-processing and making parts
    (:data:`STAGES`; encode/decode/postprocess as the segmenter reports them in its
    result's ``timings``, else all of its time under ``decode``)."""

    seq: int
    parts: list[Part]
    masks: int
    skipped: bool
    seconds: float
    worker: str
    stages: dict[str, float] = field(default_factory=dict)


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


def is_empty_tile(pixels: np.ndarray, valid: np.ndarray) -> bool:
    """True when the tile holds no valid pixel, or every valid pixel has the same value
    in each band (``pixels (bands, rows, cols)``, ``valid (rows, cols)`` bool): nothing
    to segment."""
    if not valid.any():
        return True
    if valid.all():
        return bool((pixels == pixels[:, :1, :1]).all())
    values = pixels[:, valid]
    return bool((values == values[:, :1]).all())


class TileWorker:
    """Builds the segmenter once; segments tiles of any scene (keeps the last one open)."""

    def __init__(self, segmenter: Callable[[], SegmentTile]) -> None:
        self._segment = segmenter()
        self._scene: Scene | None = None
        self._spec: SceneSpec | None = None

    def _open(self, spec: SceneSpec) -> Scene:
        if self._scene is None or self._spec != spec:
            self.close()
            self._scene, self._spec = spec.open(), spec
        return self._scene

    def __call__(self, job: TileJob) -> TileResult:
        started = time.perf_counter()
        with gdal_cache(job.cache_mb):
            scene = self._open(job.scene)
            window = job.tile.window
            if scene.window_is_empty(window):
                return self._skipped(job, started)
            image = scene.read(window)
            valid = tile_valid_mask(scene, image)
        if is_empty_tile(image.pixels, valid):
            return self._skipped(job, started)
        read_done = time.perf_counter()
        masks = self._segment(image)
        segment_done = time.perf_counter()
        parts = tile_parts(masks, job, None if valid.all() else valid)
        finished = time.perf_counter()
        stages = {"read": read_done - started, **segment_stages(masks, segment_done - read_done),
                  "parts": finished - segment_done}
        return TileResult(job.seq, parts, len(masks), False, finished - started, worker_name(), stages)

    @staticmethod
    def _skipped(job: TileJob, started: float) -> TileResult:
        seconds = time.perf_counter() - started
        return TileResult(job.seq, [], 0, True, seconds, worker_name(), {"read": seconds})

    def close(self) -> None:
        if self._scene is not None:
            self._scene.close()
        self._scene, self._spec = None, None


#: Per-tile stages a worker times (seconds, summed over tiles in ``summary.json``).
STAGES = ("read", "encode", "decode", "postprocess", "parts")


def segment_stages(masks: Any, seconds: float) -> dict[str, float]:
    """Split a segmenter's ``seconds`` into encode/decode/postprocess with the ``timings``
    its result carries (automatic generation's ``encoder``/``decoder``/``postprocess``);
    what the result does not account for is counted as decode."""
    timings = getattr(masks, "timings", None) or {}
    encode = float(timings.get("encoder", 0.0))
    post = float(timings.get("postprocess", 0.0))
    return {"encode": encode, "decode": max(0.0, seconds - encode - post), "postprocess": post}


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
    n = len(compact)
    stability = getattr(masks, "stability", None)
    if stability is None:
        stability = np.full(n, np.nan)
    points = getattr(masks, "points", None)
    crops = getattr(masks, "crop_boxes", None)
    items = ((*compact.window(i), float(masks.scores[i]), float(stability[i]),
              None if points is None else points[i], None if crops is None else crops[i]) for i in range(n))
    return parts_from_windows(items, job.seq, window, job.interior_edges, job.edge_margin, valid=valid)
