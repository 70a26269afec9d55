"""Settings of a scene run, checked once: how to tile and filter, and where tiles run.

:class:`SceneRunConfig` (bands, tiling, size filters, merge, outputs, progress, cache) and
:class:`EngineConfig` (local or Ray) are frozen dataclasses validated when built, shared by
:func:`terramask.pipelines.scene.run.run_scene`, :func:`terramask.pipelines.batch.run.run_batch`
and the CLI instead of repeating their fields as keyword arguments. ``to_dict()`` gives
their JSON form for ``summary.json``. The model and its generation parameters are the
segmenter's business (:mod:`terramask.pipelines.scene.segmenters`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from terramask.core.errors import InputError
from terramask.core.geometry import plan_tiles
from terramask.io.vector_formats import VECTOR_FORMATS
from terramask.pipelines.amg.filters import AreaSpec, parse_area
from terramask.pipelines.scene.engines import ENGINES
from terramask.pipelines.scene.merge import MergeParams

DEFAULT_TILE_SIZE = 1024
DEFAULT_OVERLAP = 128
#: Smallest tile side accepted: below it a tile holds too little context for the models.
MIN_TILE_SIZE = 64
QUICKLOOK_SIZE = 2048
OUTPUT_MODES = ("coco_rle", "uncompressed_rle")


def _bands_tuple(bands: str | tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    """1-based band numbers from ``"4,3,2"`` or a sequence; None keeps the scene default."""
    if bands is None:
        return None
    if isinstance(bands, str):
        text = bands.replace(" ", "")
        try:
            values = tuple(int(v) for v in text.split(",") if v)
        except ValueError:
            raise InputError(f"--bands {bands!r}: expected 1-based band numbers such as 4,3,2") from None
    else:
        values = tuple(int(v) for v in bands)
    if len(values) not in (1, 3) or any(v < 1 for v in values):
        raise InputError(f"--bands {bands!r}: give one band (grey) or three bands, numbered from 1")
    return values


def default_overlap(tile_size: int) -> int:
    """:data:`DEFAULT_OVERLAP`, or a quarter of smaller tiles."""
    return min(DEFAULT_OVERLAP, int(tile_size) // 4)


def _area(value: str | float | AreaSpec | None, option: str) -> AreaSpec | None:
    if value is None or isinstance(value, AreaSpec):
        return value
    return parse_area(value, option)


@dataclass(frozen=True)
class SceneRunConfig:
    """How one scene is cut, segmented, merged and written.

    - ``bands``: 1-based display bands (``"4,3,2"`` or a tuple; None: the scene default);
    - ``tile_size``/``overlap``: tile side and shared pixels (scene pixels, native
      resolution); a scene smaller than a tile is one tile; ``tile_size >= MIN_TILE_SIZE``;
    - ``min_area``/``max_area``: size filters of whole (merged) objects, ``"20m2"``,
      ``"5ha"``, ``"150px"`` or a number of pixels (ground units need a CRS);
    - ``merge``: cross-tile merge thresholds (:class:`MergeParams`);
    - ``output_mode``: RLE flavour of ``masks.json`` (``coco_rle`` or ``uncompressed_rle``);
    - ``quicklook_size``: longest side of ``overlay.png``;
    - ``progress``: tqdm bar per tile (None: only when stderr is a terminal);
    - ``cache_mb``: GDAL block cache cap while reading the scene;
    - ``preset``: name of the parameter preset, recorded in the summary;
    - ``vector_format``: file format of the objects, ``gpkg`` (``objects.gpkg``), ``fgb``
      (FlatGeobuf) or ``parquet`` (GeoParquet 1.1); same columns in each
      (:mod:`terramask.io.vector_formats`).
    """

    bands: tuple[int, ...] | None = None
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    min_area: AreaSpec | None = None
    max_area: AreaSpec | None = None
    merge: MergeParams = field(default_factory=MergeParams)
    output_mode: str = "coco_rle"
    quicklook_size: int = QUICKLOOK_SIZE
    progress: bool | None = None
    cache_mb: int = 64
    preset: str | None = None
    vector_format: str = "gpkg"

    @property
    def objects_name(self) -> str:
        """File name of the objects: ``objects.gpkg``, ``objects.fgb`` or ``objects.parquet``."""
        return "objects" + VECTOR_FORMATS[self.vector_format]

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "bands", _bands_tuple(self.bands))
        set_(self, "min_area", _area(self.min_area, "--min-area"))
        set_(self, "max_area", _area(self.max_area, "--max-area"))
        for name in ("tile_size", "overlap", "quicklook_size", "cache_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
                raise InputError(f"{name.replace('_', '-')} must be a whole number of pixels, got {value!r}")
            set_(self, name, int(value))
        if self.tile_size < MIN_TILE_SIZE:
            raise InputError(
                f"--tile-size {self.tile_size} is too small: tiles need at least {MIN_TILE_SIZE} pixels "
                f"on a side to give the model some context (default {DEFAULT_TILE_SIZE})"
            )
        plan_tiles("check", 1, 1, self.tile_size, self.overlap)  # the overlap rule, in one place
        if self.quicklook_size < 16 or self.cache_mb < 1:
            raise InputError("quicklook_size must be >= 16 pixels and cache_mb >= 1")
        if self.output_mode not in OUTPUT_MODES:
            raise InputError(f"--output-mode must be one of {', '.join(OUTPUT_MODES)}, got {self.output_mode!r}")
        if self.vector_format not in VECTOR_FORMATS:
            raise InputError(f"--vector-format must be one of {', '.join(VECTOR_FORMATS)}, got {self.vector_format!r}")
        if not isinstance(self.merge, MergeParams):
            raise InputError(f"merge must be MergeParams, got {type(self.merge).__name__}")
        if self.min_area and self.max_area and self.min_area.unit == self.max_area.unit:
            if self.min_area.value > self.max_area.value:
                raise InputError(f"--min-area {self.min_area.text} is larger than --max-area {self.max_area.text}")

    def with_(self, **changes: Any) -> "SceneRunConfig":
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "bands": None if self.bands is None else list(self.bands),
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "min_area": None if self.min_area is None else self.min_area.text,
            "max_area": None if self.max_area is None else self.max_area.text,
            "merge": self.merge.to_dict(),
            "output_mode": self.output_mode,
            "quicklook_size": self.quicklook_size,
            "preset": self.preset,
            "vector_format": self.vector_format,
        }


@dataclass(frozen=True)
class EngineConfig:
    """Where tiles (or a batch's scenes) run: ``name`` ``local`` (this process) or ``ray``
    (``address`` of a cluster or None for a local Ray, ``workers`` actors, and
    ``ray_options`` for :class:`terramask.pipelines.scene.engines.RayEngine`, e.g.
    ``cpus_per_worker``)."""

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    ray_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise InputError(f"unknown engine {self.name!r}; use one of {', '.join(ENGINES)}")
        if self.name == "local" and self.address:
            raise InputError("--address only applies to --engine ray")
        if self.workers is not None and (isinstance(self.workers, bool) or int(self.workers) < 1):
            raise InputError(f"--workers must be >= 1, got {self.workers}")
        options = self.ray_options
        if isinstance(options, Mapping):
            options = tuple(sorted(options.items()))
        object.__setattr__(self, "ray_options", tuple(options or ()))
        for key, value in self.ray_options:
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"Ray option {key} must be finite, got {value}")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.ray_options)

    def to_dict(self) -> dict:
        return {"name": self.name, "address": self.address, "workers": self.workers, "ray_options": self.options}
