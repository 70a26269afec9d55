"""Files written by ``terramask predict`` and read back by ``--refine``.

Into one output folder: ``mask.tif`` (best mask on the scene grid), ``candidates.tif``
(one band per candidate, multimask only), ``mask.gpkg`` (scene CRS) and
``mask.geojson`` (EPSG:4326) with ``candidate``, ``score`` and area attributes,
``overlay.png`` (the encoded window with the best mask and the prompts),
``candidates.png`` (each candidate with its score, multimask only), ``logits.npy``
(best candidate's low-res logits, the prior for refinement) and ``result.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terramask import __version__
from terramask.core.errors import InputError
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.io.atomic import atomic_output, ensure_output_dir, write_json
from terramask.io.overlay import draw_candidates, draw_prompted, save_png
from terramask.io.rasters import write_candidates, write_mask
from terramask.io.scene import Scene
from terramask.io.vectors import masks_to_features, write_vector
from terramask.pipelines.prompted.session import Prediction


@dataclass(frozen=True)
class PreviousResult:
    """What ``--refine`` needs from an earlier run: its prompts in scene pixels, the
    window its embedding covered, and its best mask's low-res logits ``(1, h, w)``."""

    prompts: Prompts
    window: Window
    logits: np.ndarray


def _on_scene_grid(masks: np.ndarray, window: Window, scene: Scene) -> np.ndarray:
    """``(K, h, w)`` window masks -> ``(K, H, W)`` scene-sized bool arrays."""
    full = np.zeros((masks.shape[0], scene.height, scene.width), dtype=bool)
    full[(slice(None), *window.slices())] = masks
    return full


def _nodata_on_scene_grid(scene: Scene, window: Window) -> np.ndarray:
    """Scene-sized bool, True on nodata inside ``window`` (the only part that was read)."""
    nodata = np.zeros((scene.height, scene.width), dtype=bool)
    nodata[window.slices()] = ~scene.valid_mask(window)
    return nodata


def write_prediction(prediction: Prediction, scene: Scene, out_dir, rgb8: np.ndarray) -> dict[str, Path]:
    """Write every output of one prediction; returns ``{file name: path}``.

    ``rgb8`` is the ``(h, w, 3)`` uint8 image the model saw (for the overlay).
    """
    out = ensure_output_dir(out_dir)
    window = prediction.window or scene.window
    candidates = prediction.candidates
    masks = _on_scene_grid(candidates.masks, window, scene)
    nodata = _nodata_on_scene_grid(scene, window)
    paths: dict[str, Path] = {}
    paths["mask.tif"] = write_mask(out / "mask.tif", masks[0], scene.transform, scene.crs, nodata_mask=nodata)
    if len(candidates) > 1:
        paths["candidates.tif"] = write_candidates(
            out / "candidates.tif", masks, candidates.scores, scene.transform, scene.crs, nodata_mask=nodata
        )
    attributes = {
        "candidate": np.arange(1, len(candidates) + 1),
        "score": candidates.scores.astype(np.float64),
    }
    features = masks_to_features(candidates, attributes)
    for name in ("mask.gpkg", "mask.geojson"):
        paths[name] = write_vector(out / name, features, candidates.crs, layer="mask")
    overlay = draw_prompted(
        rgb8,
        candidates.masks[0],
        prediction.prompts.points,
        prediction.prompts.labels,
        prediction.prompts.boxes,
        score_text=f"Mask 1, Score: {float(candidates.scores[0]):.3f}",
    )
    paths["overlay.png"] = save_png(out / "overlay.png", overlay)
    if len(candidates) > 1:
        panels = draw_candidates(rgb8, candidates, None, prediction.prompts.points, prediction.prompts.labels,
                                 prediction.prompts.boxes)
        paths["candidates.png"] = save_png(out / "candidates.png", panels)
    with atomic_output(out / "logits.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, prediction.best_logits)
    paths["logits.npy"] = out / "logits.npy"
    paths["result.json"] = write_json(out / "result.json", _result_document(prediction, scene, window, paths))
    return paths


def _scene_prompts(prediction: Prediction, window: Window) -> Prompts:
    """The prediction's prompts moved from window pixels back to scene pixels."""
    offset = np.array([window.col_off, window.row_off], dtype=np.float64)
    p = prediction.prompts
    return Prompts(points=p.points + offset, labels=p.labels, boxes=p.boxes + np.tile(offset, 2), frame="scene")


def _result_document(prediction: Prediction, scene: Scene, window: Window, paths: dict[str, Path]) -> dict:
    c = prediction.candidates
    return {
        "terramask_version": __version__,
        "scene": {"path": str(scene.path), "width": scene.width, "height": scene.height,
                  "crs": scene.crs, "transform": list(scene.transform)[:6], "bands": [b + 1 for b in scene.bands]},
        "model": prediction.model,
        "window": window.to_dict(),
        "prompts": _scene_prompts(prediction, window).to_dict() | {"prior_mask": prediction.prompts.mask_logits is not None},
        "candidates": [
            {"candidate": i + 1, "score": float(c.scores[i]), "area_px": int(c.areas[i]),
             "box_xyxy_scene_px": (c.boxes[i] + [window.col_off, window.row_off] * 2).tolist()}
            for i in range(len(c))
        ],
        "timings": prediction.timings,
        "outputs": sorted(list(paths) + ["result.json"]),
    }


def load_previous(refine_dir, scene: Scene) -> PreviousResult:
    """Read ``result.json`` and ``logits.npy`` of an earlier ``predict`` run on ``scene``."""
    folder = Path(refine_dir)
    result_path, logits_path = folder / "result.json", folder / "logits.npy"
    for p in (result_path, logits_path):
        if not p.is_file():
            raise InputError(f"--refine {folder}: missing {p.name}; give the --out folder of an earlier predict run")
    try:
        doc = json.loads(result_path.read_text())
        prompts = doc["prompts"]
        window = Window(**doc["window"])
        size = (doc["scene"]["width"], doc["scene"]["height"])
        logits = np.load(logits_path, allow_pickle=False)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError(f"--refine {folder}: unreadable earlier result ({exc})") from None
    if size != (scene.width, scene.height):
        raise InputError(
            f"--refine {folder}: that result is for a {size[0]}x{size[1]} scene, {scene.path} is {scene.width}x{scene.height}"
        )
    return PreviousResult(
        Prompts(points=prompts["points"], labels=prompts["labels"], boxes=prompts["boxes"], frame="scene"),
        window,
        logits.astype(np.float32),
    )


def merge_pixel_prompts(new: list[Prompts], previous: PreviousResult | None = None) -> Prompts:
    """One scene-pixel prompt set: earlier points first (labels kept), then new ones;
    the earlier best logits as prior mask."""
    parts = ([previous.prompts] if previous is not None else []) + list(new)
    if not parts:
        raise InputError("no prompts: give --point, --box or --prompts")
    return Prompts(
        points=np.concatenate([p.points for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]),
        mask_logits=previous.logits if previous is not None else None,
        frame="scene",
    )
