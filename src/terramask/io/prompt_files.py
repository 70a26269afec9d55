"""Read prompts from a vector file (GeoJSON, GeoPackage, or anything OGR reads).

- Point / MultiPoint features become points; their ``label`` property gives the label:
  ``1``/``0``, ``true``/``false``, or the words ``object``/``foreground``/``positive`` (1)
  and ``background``/``negative`` (0); a missing or null label means 1 (object).
- Polygon / MultiPolygon features (rectangles or any outline) become boxes: their bounds.
- Features without geometry are skipped; other geometry types are an error.

The prompts keep the file's CRS: frame ``"lonlat"`` for WGS 84 (GeoJSON files without a
``crs`` member are WGS 84 by the spec), else frame ``"world"`` with ``crs`` set. Give
``to_crs`` (e.g. the scene's CRS) to reproject the geometries first, so a polygon's box is
the bounds of the reprojected polygon rather than of its reprojected bounds.
Convert to scene pixels with :func:`terramask.io.prompt_frames.to_scene_pixels`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.errors
import shapely

from terramask.core.errors import InputError, PromptError
from terramask.core.prompts import Prompts
from terramask.io.crs import LONLAT, crs_equal, is_lonlat, normalize_crs, transform_xy

log = logging.getLogger(__name__)

LABEL_FIELD = "label"

_LABEL_WORDS = {
    "1": 1,
    "object": 1,
    "foreground": 1,
    "fg": 1,
    "positive": 1,
    "pos": 1,
    "true": 1,
    "0": 0,
    "background": 0,
    "bg": 0,
    "negative": 0,
    "neg": 0,
    "false": 0,
}


def parse_label(value, where: str = "label") -> int:
    """A label value from a file or the command line -> 1 (object) or 0 (background).

    ``None``/NaN/empty -> 1. Raises :class:`PromptError` naming ``where`` otherwise.
    """
    if value is None:
        return 1
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        if value in (0, 1):
            return int(value)
    elif isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return 1
        if value in (0.0, 1.0):
            return int(value)
    elif isinstance(value, str):
        word = value.strip().lower()
        if word == "":
            return 1
        if word in _LABEL_WORDS:
            return _LABEL_WORDS[word]
        try:
            number = float(word)
        except ValueError:
            number = None
        if number in (0.0, 1.0):
            return int(number)
    raise PromptError(
        f"{where}: label {value!r} is not valid; use 1 or 'object' for object points, 0 or 'background' for background points"
    )


def _layers(path: str, layer: str | int | None) -> list[str | int]:
    if layer is not None:
        return [layer]
    layers = pyogrio.list_layers(path)
    spatial: list[str | int] = [str(name) for name, geom_type in layers if geom_type is not None]
    if not spatial:
        raise PromptError(f"{path}: holds no layer with geometries")
    return spatial


def read_prompt_file(path: str | os.PathLike, layer: str | int | None = None, to_crs: str | None = None) -> Prompts:
    """Points and boxes of a vector file as :class:`Prompts` in the file's CRS.

    ``layer``: one layer name or index (default: every layer with geometries; they must
    share one CRS). ``to_crs``: reproject to this CRS first (``"EPSG:N"``/WKT).

    Returns ``Prompts(frame="lonlat", crs="EPSG:4326")`` or ``Prompts(frame="world",
    crs=...)`` with points ``(N, 2)`` and boxes ``(M, 4)`` xyxy in that CRS (x = easting
    or longitude). Raises :class:`PromptError` naming the file: missing or unreadable
    file, no CRS, no usable feature, unsupported geometry, bad label, or a combination
    Prompts does not allow (several boxes with points).
    """
    name = os.fspath(path)
    if not name.startswith("/vsi") and not Path(name).exists():
        raise PromptError(f"{name}: no such prompt file")
    try:
        layers = _layers(name, layer)
        file_crs: str | None = None
        points: list[tuple[float, float]] = []
        labels: list[int] = []
        boxes: list[tuple[float, float, float, float]] = []
        target = normalize_crs(to_crs) if to_crs is not None else None
        for i, lyr in enumerate(layers):
            meta, _, wkb, field_data = pyogrio.raw.read(name, layer=lyr, force_2d=True)
            where_layer = name if len(layers) == 1 else f"{name} (layer {lyr})"
            crs = meta.get("crs")
            if crs is None:
                raise PromptError(f"{where_layer}: has no CRS; cannot tell where its coordinates are (set a CRS, e.g. EPSG:4326)")
            crs = normalize_crs(crs)
            if i == 0:
                file_crs = crs
            elif not crs_equal(crs, file_crs):
                raise PromptError(f"{name}: layers have different CRSs ({file_crs} and {crs}); give one layer")
            fields = [str(f) for f in meta.get("fields", [])]
            label_values = field_data[fields.index(LABEL_FIELD)] if LABEL_FIELD in fields else None
            geoms = shapely.from_wkb(wkb) if wkb is not None else []
            if target is not None and not crs_equal(crs, target):
                geoms = [
                    None if g is None else shapely.transform(g, lambda xy, s=crs: transform_xy(xy, s, target))
                    for g in geoms
                ]
            for k, geom in enumerate(geoms):
                where = f"{where_layer}, feature {k + 1}"
                if geom is None or geom.is_empty:
                    log.info("%s has no geometry; skipped", where)
                    continue
                kind = geom.geom_type
                if kind in ("Point", "MultiPoint"):
                    label = parse_label(None if label_values is None else label_values[k], where)
                    coords = shapely.get_coordinates(geom)
                    points.extend((float(x), float(y)) for x, y in coords)
                    labels.extend([label] * len(coords))
                elif kind in ("Polygon", "MultiPolygon"):
                    x0, y0, x1, y1 = geom.bounds
                    if not (x1 > x0 and y1 > y0):
                        raise PromptError(f"{where}: polygon has zero width or height; cannot be used as a box")
                    boxes.append((x0, y0, x1, y1))
                else:
                    raise PromptError(f"{where}: unsupported geometry {kind}; use points (with a label) or polygons (boxes)")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
            pyogrio.errors.GeometryError, pyogrio.errors.FeatureError, pyogrio.errors.CRSError) as exc:
        raise PromptError(f"{name}: cannot read prompts: {' '.join(str(exc).split())}") from None
    except InputError as exc:
        if isinstance(exc, PromptError) and str(exc).startswith(name):
            raise
        raise PromptError(f"{name}: {exc}") from None

    if not points and not boxes:
        raise PromptError(f"{name}: no point or polygon features to use as prompts")
    crs_out = target or file_crs
    frame = "lonlat" if is_lonlat(crs_out) else "world"
    try:
        return Prompts(
            points=np.array(points, dtype=np.float64).reshape(-1, 2),
            labels=np.array(labels, dtype=np.int64),
            boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
            frame=frame,
            crs=LONLAT if frame == "lonlat" else crs_out,
        )
    except PromptError as exc:
        raise PromptError(f"{name}: {exc}") from None
