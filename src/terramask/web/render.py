"""Pictures and JSON the browser needs: previews, window tiles, candidate masks, coordinates.

Everything here turns pipeline objects into bytes or JSON-able dicts; nothing segments.
Pixel coordinates are scene pixels ``(x=col, y=row)``, ``(0, 0)`` at the upper-left
corner of the upper-left pixel; windows are ``col_off, row_off, width, height``.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import shapely

from terramask.core.errors import InputError
from terramask.core.frames import pixel_size, pixel_to_world
from terramask.core.geometry import Window
from terramask.io.crs import LONLAT, transform_bounds, transform_xy
from terramask.io.overlay import MASK_COLOR
from terramask.io.overlay import png_bytes as png_bytes  # previews and tiles (app); masks: mask_png
from terramask.io.scene import Scene
from terramask.io.vectors import masks_to_features
from terramask.pipelines.prompted.session import Prediction
from terramask.web.mask_png import bilevel_png, boundary
from terramask.web.measures import PixelArea

#: Largest side (pixels) of a native-resolution window the browser may ask for.
MAX_WINDOW_SIDE = 4096
#: Largest side of the whole-scene preview.
MAX_PREVIEW_SIDE = 8192
#: Control points per side of the pixel -> lon/lat grid sent for the coordinate readout.
LONLAT_GRID = 9


def _rgba(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """RGB + validity -> RGBA with nodata transparent."""
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    return np.concatenate([rgb, alpha[:, :, None]], axis=2)


def preview_shape(scene: Scene, max_size: int) -> tuple[int, int]:
    """``(rows, cols)`` of the whole-scene preview: the scene itself if its long side
    is at most ``max_size``, else scaled down (never up) to that long side."""
    if max_size < 16 or max_size > MAX_PREVIEW_SIDE:
        raise InputError(f"max_size must be between 16 and {MAX_PREVIEW_SIDE} px, got {max_size}")
    long_side = max(scene.width, scene.height)
    if long_side <= max_size:
        return scene.shape
    scale = max_size / long_side
    return (max(1, round(scene.height * scale)), max(1, round(scene.width * scale)))


def scene_preview(scene: Scene, max_size: int) -> np.ndarray:
    """``(rows, cols, 4)`` uint8 RGBA quicklook of the display bands with the scene-wide
    stretch (so it matches what the model sees); nodata transparent. Large scenes are
    read decimated (GDAL uses overviews when the file has them)."""
    shape = preview_shape(scene, max_size)
    if shape == scene.shape:
        return window_picture(scene, scene.window)
    image = scene.read(out_shape=shape, resampling="average")
    return _rgba(image.to_rgb8(), image.valid_mask)


def parse_window(scene: Scene, col_off: int, row_off: int, width: int, height: int) -> Window:
    """A window the browser asked for, checked: inside the scene, at most :data:`MAX_WINDOW_SIDE`."""
    if width > MAX_WINDOW_SIDE or height > MAX_WINDOW_SIDE:
        raise InputError(
            f"window {width}x{height} px is too large; ask for at most {MAX_WINDOW_SIDE}x{MAX_WINDOW_SIDE} px "
            "(use /scene/image.png for an overview)"
        )
    if width <= 0 or height <= 0 or col_off < 0 or row_off < 0:
        raise InputError(f"window ({col_off}, {row_off}, {width}, {height}) must have non-negative offsets and a positive size")
    return scene.check_window(Window(col_off, row_off, width, height))


def window_picture(scene: Scene, window: Window) -> np.ndarray:
    """``(h, w, 4)`` uint8 RGBA of ``window`` at native resolution, nodata transparent."""
    return _rgba(scene.read_rgb8(window), scene.valid_mask(window))


def lonlat_grid(scene: Scene, n: int = LONLAT_GRID) -> dict | None:
    """Lon/lat at an ``n`` x ``n`` grid of scene pixel positions (edges included), for a
    readout in the browser by bilinear interpolation (no PROJ in JavaScript).

    Returns ``{"xs": [n], "ys": [n], "lon": [n][n], "lat": [n][n]}`` (``lon[j][i]`` at
    ``(xs[i], ys[j])``), or ``None`` for a scene without CRS.
    """
    if scene.crs is None:
        return None
    xs = np.linspace(0.0, float(scene.width), n)
    ys = np.linspace(0.0, float(scene.height), n)
    gx, gy = np.meshgrid(xs, ys)
    world = pixel_to_world(scene.transform, np.column_stack([gx.ravel(), gy.ravel()]))
    try:
        lonlat = transform_xy(world, scene.crs, LONLAT)
    except InputError:
        return None
    return {
        "xs": xs.tolist(),
        "ys": ys.tolist(),
        "lon": lonlat[:, 0].reshape(n, n).tolist(),
        "lat": lonlat[:, 1].reshape(n, n).tolist(),
    }


def crs_units(crs: str | None) -> str | None:
    """Unit name of the first axis of ``crs`` (``"metre"``, ``"degree"``, ``"US survey foot"`` …)."""
    if crs is None:
        return None
    import pyproj

    try:
        axes = pyproj.CRS.from_user_input(crs).axis_info
    except pyproj.exceptions.CRSError:
        return None
    return axes[0].unit_name if axes else None


def scene_info(scene: Scene) -> dict:
    """JSON description of ``scene``: size, CRS, bounds (scene CRS and lon/lat), bands."""
    bounds_lonlat = None
    if scene.crs is not None:
        left, bottom, right, top = scene.bounds
        try:
            bounds_lonlat = list(transform_bounds((left, bottom, right, top), scene.crs, LONLAT))
        except InputError:
            bounds_lonlat = None
    px_w, px_h = pixel_size(scene.transform)
    return {
        "name": Path(scene.path).name,
        "path": str(scene.path),
        "width": scene.width,
        "height": scene.height,
        "count": scene.count,
        "dtype": str(scene.dtype),
        "crs": scene.crs,
        "transform": [float(v) for v in list(scene.transform)[:6]],
        "pixel_size": [float(px_w), float(px_h)],
        "crs_units": crs_units(scene.crs),
        "bounds": list(scene.bounds),
        "bounds_lonlat": bounds_lonlat,
        "bands": [b + 1 for b in scene.bands],
        "band_names": list(scene.band_names),
        "nodata": None if scene.nodata is None or math.isnan(scene.nodata) else scene.nodata,
        "lonlat_grid": lonlat_grid(scene),
    }


def _feature(geometry, properties: dict) -> dict:
    geom = None if geometry is None else json.loads(shapely.to_geojson(geometry))
    return {"type": "Feature", "geometry": geom, "properties": properties}


def _to_lonlat(geometry, crs: str):
    if geometry is None:
        return None

    def project(xy: np.ndarray) -> np.ndarray:
        return transform_xy(xy, crs, LONLAT)

    return shapely.orient_polygons(shapely.transform(geometry, project), exterior_cw=False)


def _mask_png(mask: np.ndarray, window: Window) -> dict | None:
    """The mask cropped to its bounding box, placed in scene pixels, as two 1-bit PNGs
    transparent off the mask (:func:`terramask.web.mask_png.bilevel_png`): ``data`` the
    mask in :data:`terramask.io.overlay.MASK_COLOR` (the page draws it at its opacity
    setting), ``outline`` its boundary pixels in white
    (:func:`terramask.web.mask_png.boundary`). The page draws both as they are."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = mask[r0:r1, c0:c1]
    return {
        "data": _data_url(bilevel_png(crop, MASK_COLOR)),
        "outline": _data_url(bilevel_png(boundary(crop))),
        "col_off": window.col_off + c0,
        "row_off": window.row_off + r0,
        "width": c1 - c0,
        "height": r1 - r0,
    }


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def candidate_picture(prediction: Prediction, candidate: int, scene: Scene) -> dict | None:
    """The ``png`` of candidate ``candidate`` (0-based) as :func:`candidates_payload` gives
    it (``None`` for an empty mask); :class:`InputError` for a candidate that does not exist."""
    c = prediction.candidates
    if not 0 <= candidate < len(c):
        raise InputError(f"candidate {candidate} does not exist; this prediction has candidates 0..{len(c) - 1}")
    return _mask_png(c.masks[candidate], prediction.window or scene.window)


def candidate_title(number: int, score: float) -> str:
    """``"Mask 3, Score: 0.912"``: the name of candidate ``number`` (1-based) everywhere
    (list, GeoJSON button, exported files)."""
    return f"Mask {number}, Score: {score:.3f}"


def candidates_payload(prediction: Prediction, scene: Scene, include: tuple[str, ...] = ("png",)) -> list[dict]:
    """One dict per candidate (best first): ``index`` (0-based), ``number`` (1-based, as
    in "Mask 3"), ``title``, ``score``, ``area_px`` and ``area_m2`` from the pixel count
    (:mod:`terramask.web.measures`; ``None`` without ground units), ``bbox_px`` (xyxy,
    scene pixels); per ``include`` the cropped PNGs (``png``; ``png_best``: the first
    candidate's only, the key absent from the others) and/or the polygon as GeoJSON
    Features in the scene CRS (``geojson``) and lon/lat (``geojson_lonlat``; ``None``
    without CRS) with the polygon's ``perimeter_m``. Polygons cost most of a response,
    so the page asks for ``png`` only."""
    window = prediction.window or scene.window
    c = prediction.candidates
    n = len(c)
    offset = np.array([window.col_off, window.row_off] * 2, dtype=np.float64)
    measure = PixelArea(c.crs, c.transform)
    masks, boxes, scores = c.masks, c.boxes, c.scores.astype(np.float64)
    areas = np.count_nonzero(masks.reshape(n, -1), axis=1)  # = c.areas, several times faster than its sum
    features = None
    if "geojson" in include:
        features = masks_to_features(c, {"candidate": list(range(1, n + 1)), "score": scores.tolist()})
    out = []
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        item: dict = {
            "index": i,
            "number": i + 1,
            "title": candidate_title(i + 1, float(scores[i])),
            "score": float(scores[i]),
            "area_px": int(areas[i]),
            "area_m2": measure.area_m2(int(areas[i]), (x0 + x1) / 2, (y0 + y1) / 2),
            "bbox_px": (boxes[i] + offset).tolist(),
        }
        if features is not None:
            props = dict(features[i].properties)
            geometry = features[i].geometry
            item["perimeter_m"] = props.get("perimeter_m")
            item["geojson"] = _feature(geometry, props)
            item["geojson_lonlat"] = _feature(_to_lonlat(geometry, c.crs), props) if c.crs is not None else None
        if "png" in include or ("png_best" in include and i == 0):
            item["png"] = _mask_png(masks[i], window)
        out.append(item)
    return out


def candidate_collection(prediction: Prediction, candidate: int, lonlat: bool = True) -> dict:
    """A GeoJSON FeatureCollection holding candidate ``candidate`` (0-based) of ``prediction``.

    ``lonlat=True``: RFC 7946 (EPSG:4326, counter-clockwise exteriors), for a scene with a
    CRS; otherwise the scene CRS (named in a ``crs`` member) or, without CRS, scene pixels.
    """
    c = prediction.candidates
    if not 0 <= candidate < len(c):
        raise InputError(f"candidate {candidate} does not exist; this prediction has candidates 0..{len(c) - 1}")
    one = c[candidate]
    feature = masks_to_features(one, {"candidate": [candidate + 1], "score": one.scores.astype(np.float64)})[0]
    collection: dict = {"type": "FeatureCollection"}
    if lonlat and c.crs is not None:
        collection["features"] = [_feature(_to_lonlat(feature.geometry, c.crs), feature.properties)]
    else:
        collection["crs"] = c.crs
        collection["features"] = [_feature(feature.geometry, feature.properties)]
    return collection


def scene_prompts(prediction: Prediction, scene: Scene) -> dict:
    """The prediction's prompts moved from its window's pixels back to scene pixels."""
    window = prediction.window or scene.window
    p = prediction.prompts
    offset = np.array([window.col_off, window.row_off], dtype=np.float64)
    return {
        "points": (p.points + offset).tolist(),
        "labels": p.labels.tolist(),
        "boxes": (p.boxes + np.tile(offset, 2)).tolist(),
        "prior_mask": p.mask_logits is not None,
    }


def prediction_payload(prediction: Prediction, prediction_id: str, session_id: str, scene: Scene, *,
                       refined: bool = False, note: str | None = None,
                       include: tuple[str, ...] = ("png",)) -> dict:
    """What ``/predict`` answers for a stored prediction: ``{session_id, prediction_id,
    model, window, refined, note, prompts (scene pixels), candidates, timings}``."""
    window = prediction.window or scene.window
    return {
        "session_id": session_id,
        "prediction_id": prediction_id,
        "model": prediction.model,
        "window": window.to_dict(),
        "refined": refined,
        "note": note,
        "prompts": scene_prompts(prediction, scene),
        "candidates": candidates_payload(prediction, scene, include),
        "timings": json_timings(prediction.timings),
    }


def json_timings(timings: dict) -> dict:
    """Timings with numbers as floats and anything else as text."""
    out: dict[str, float | str | bool | None] = {}
    for key, value in timings.items():
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            out[key] = round(float(value), 4)
        else:
            out[key] = value if isinstance(value, (str, bool)) or value is None else str(value)
    return out
