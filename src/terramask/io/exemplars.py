"""Exemplars for ``terramask find --exemplars``: example objects from a vector file.

A GeoJSON / GeoPackage (anything OGR reads) of polygons or points:

- Polygon / MultiPolygon: the outline of an example object (its pixels are the polygon's);
- Point / MultiPoint: a click on an example object (the model's mask for it is used);
- ``label`` property (optional): 1 = example (default), 0 = counter-example (also the
  words of :func:`terramask.io.prompt_files.parse_label`: ``object``/``background`` …);
- ``class`` property (optional): the class name given to the objects it finds (default
  ``"object"``); counter-examples need none.

:func:`read_exemplars` reprojects every geometry to the scene CRS (a file without a CRS
on a scene without one is read as scene pixels, ``x = column``, ``y = row``) and
:func:`to_scene_pixels` brings them onto the scene's pixel grid; :func:`rasterize` burns
one into a window. Errors name the file and the feature (``exemplar 3 of ex.gpkg``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.errors
import shapely
import shapely.affinity
from affine import Affine

from terramask.core.errors import InputError, PromptError
from terramask.core.geometry import Window
from terramask.io.crs import crs_equal, normalize_crs, transform_xy
from terramask.io.prompt_files import LABEL_FIELD, parse_label

CLASS_FIELD = "class"
DEFAULT_CLASS = "object"


@dataclass(frozen=True)
class ExemplarFeature:
    """One exemplar: ``geometry`` (shapely, scene CRS or scene pixels, see
    :func:`to_scene_pixels`), ``label`` (1 example, 0 counter-example), ``cls`` (class
    name) and ``where`` (its name in messages)."""

    geometry: shapely.Geometry
    label: int
    cls: str
    where: str

    @property
    def is_point(self) -> bool:
        return self.geometry.geom_type == "Point"


def _class_name(value, where: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return DEFAULT_CLASS
    text = " ".join(str(value).split())
    if not text:
        return DEFAULT_CLASS
    if any(ord(ch) < 32 for ch in str(value)):
        raise PromptError(f"{where}: class {value!r} holds control characters")
    return text


def read_exemplars(path: str | os.PathLike, scene_crs: str | None) -> list[ExemplarFeature]:
    """Every exemplar of the file at ``path``, in the scene CRS ``scene_crs`` (see the module
    docstring); a multi-point or multi-polygon gives one exemplar per part.

    Raises :class:`PromptError` naming the file (and feature): missing or unreadable file,
    a CRS on one side only, an unsupported geometry, a bad label or class, no feature.
    """
    name = os.fspath(path)
    short = Path(name).name
    if not name.startswith("/vsi") and not Path(name).is_file():
        raise PromptError(f"--exemplars {name}: no such file")
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(name, force_2d=True)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
            pyogrio.errors.GeometryError, pyogrio.errors.FeatureError, pyogrio.errors.CRSError) as exc:
        raise PromptError(f"--exemplars {name}: cannot read it: {' '.join(str(exc).split())}") from None
    file_crs = None if meta.get("crs") is None else normalize_crs(meta["crs"])
    if (file_crs is None) != (scene_crs is None):
        raise PromptError(f"--exemplars {name}: " + ("has no CRS but the scene has one; set the file's CRS"
                                                      if file_crs is None else
                                                      "has a CRS but the scene has none; give coordinates in "
                                                      "scene pixels without a CRS"))
    fields = [str(f) for f in meta.get("fields", [])]
    labels = field_data[fields.index(LABEL_FIELD)] if LABEL_FIELD in fields else None
    classes = field_data[fields.index(CLASS_FIELD)] if CLASS_FIELD in fields else None
    geoms = shapely.from_wkb(wkb) if wkb is not None else []
    out: list[ExemplarFeature] = []
    for k, geom in enumerate(geoms):
        where = f"exemplar {k + 1} of {short}"
        if geom is None or geom.is_empty:
            continue
        if file_crs is not None and scene_crs is not None and not crs_equal(file_crs, scene_crs):
            geom = shapely.transform(geom, lambda xy, s=file_crs: transform_xy(xy, s, scene_crs))
        label = parse_label(None if labels is None else labels[k], where)
        cls = _class_name(None if classes is None else classes[k], where)
        kind = geom.geom_type
        if kind not in ("Point", "MultiPoint", "Polygon", "MultiPolygon"):
            raise PromptError(f"{where}: unsupported geometry {kind}; use polygons (outlines) or points (clicks)")
        if kind == "Polygon" and geom.area <= 0:
            raise PromptError(f"{where}: polygon has no area")
        parts = shapely.get_parts(geom) if kind == "MultiPoint" else [geom]
        out.extend(ExemplarFeature(p, label, cls, where) for p in parts)
    if not out:
        raise PromptError(f"--exemplars {name}: holds no point or polygon feature")
    return out


def to_scene_pixels(exemplar: ExemplarFeature, transform: Affine | None) -> ExemplarFeature:
    """The exemplar with its geometry in scene pixels (``~transform`` applied; ``None``:
    already pixels)."""
    if transform is None:
        return exemplar
    inverse = ~transform
    a, b, c, d, e, f = inverse.a, inverse.b, inverse.c, inverse.d, inverse.e, inverse.f
    geom = shapely.affinity.affine_transform(exemplar.geometry, [a, b, d, e, c, f])
    return ExemplarFeature(geom, exemplar.label, exemplar.cls, exemplar.where)


def check_inside(exemplar: ExemplarFeature, width: int, height: int, scene: str) -> None:
    """Raise :class:`InputError` when a scene-pixel exemplar does not lie in the ``width`` x
    ``height`` scene (a point outside it, a polygon not meeting it)."""
    if exemplar.is_point:
        inside = 0 <= exemplar.geometry.x < width and 0 <= exemplar.geometry.y < height
    else:
        inside = shapely.box(0, 0, width, height).intersects(exemplar.geometry)
    if not inside:
        x0, y0, x1, y1 = exemplar.geometry.bounds
        raise InputError(f"{exemplar.where} lies outside the scene {scene} (pixels x {x0:.0f}..{x1:.0f}, "
                         f"y {y0:.0f}..{y1:.0f}; the scene is {width} x {height})")


def rasterize(exemplar: ExemplarFeature, window: Window) -> np.ndarray:
    """``(window.height, window.width)`` bool: the scene-pixel polygon burnt into ``window``
    (pixel centres inside; a polygon smaller than a pixel takes the pixels it touches)."""
    from rasterio.features import rasterize as burn

    if exemplar.is_point:
        raise InputError(f"{exemplar.where} is a point; only polygons are rasterised")
    shifted = shapely.affinity.translate(exemplar.geometry, -window.col_off, -window.row_off)
    shape = (window.height, window.width)
    mask = burn([(shifted, 1)], out_shape=shape, fill=0, dtype="uint8").astype(bool)
    if not mask.any():
        mask = burn([(shifted, 1)], out_shape=shape, fill=0, dtype="uint8", all_touched=True).astype(bool)
    return mask
