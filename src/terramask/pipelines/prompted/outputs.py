"""Files written by ``terramask predict`` (and the browser's export), one folder per run.

Into one output folder, written as a unit (:mod:`.folder`): ``mask.tif`` (the mask on
the scene grid; only the encoded window is materialised, the rest is 0), ``candidates.tif``
(one band per candidate, multimask only), ``mask.gpkg`` (scene CRS) and ``mask.geojson``
(EPSG:4326) with ``candidate``, ``score`` and area attributes, ``overlay.png`` (the
encoded window with the mask and the prompts), ``candidates.png`` (each candidate with
its score, multimask only), ``logits.npy`` (best candidate's low-res logits, the prior
for refinement) and ``result.json``.

``mask.tif`` holds the best candidate; with several boxes (one mask per box) it holds
their union and ``candidates.tif`` one band per box. Memory is bounded by the encoded
window whatever the scene size. Results of prompts spanning several windows are
written by :mod:`.tiled_outputs` into the same files.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import numpy as np

from terramask import __version__
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.io.atomic import write_bytes, write_json
from terramask.io.mask_rasters import candidates_writer, mask_writer
from terramask.io.overlay import draw_candidates, draw_prompted, save_png
from terramask.io.scene import Scene
from terramask.io.vectors import masks_to_features, write_vector
from terramask.pipelines.prompted.folder import output_folder
from terramask.pipelines.prompted.session import Prediction

#: ``result.json`` ``method`` values: how the prompts were answered.
METHOD_SCENE, METHOD_WINDOW, METHOD_TILED = "whole scene", "window", "tiled"


def write_prediction(prediction: Prediction, scene: Scene, out_dir, rgb8: np.ndarray,
                     numbers: list[int] | None = None) -> dict[str, Path]:
    """Write every output of one single-window prediction; returns ``{file name: path}``.

    ``rgb8`` is the ``(h, w, 3)`` uint8 image the model saw (for the overlay). The files
    appear in ``out_dir`` together, replacing an earlier run's, or not at all.
    ``numbers``: the candidates' 1-based numbers in the files (default 1..N; the browser
    exports "Mask 3" alone as number 3).
    """
    with output_folder(out_dir) as staging:
        names = write_prediction_files(prediction, scene, staging, rgb8, numbers)
    return {name: Path(out_dir) / name for name in names}


def write_prediction_files(prediction: Prediction, scene: Scene, out: Path, rgb8: np.ndarray,
                           numbers: list[int] | None = None) -> list[str]:
    """The files of :func:`write_prediction`, written straight into the existing folder ``out``."""
    window = prediction.window or scene.window
    candidates = prediction.candidates
    numbers = list(numbers) if numbers is not None else list(range(1, len(candidates) + 1))
    several_boxes = len(prediction.prompts.boxes) > 1
    masks = np.asarray(candidates.masks, dtype=bool)
    best = np.asarray(masks.any(axis=0) if several_boxes else masks[0], dtype=bool)
    nodata = ~scene.valid_mask(window)
    names = []
    with mask_writer(out / "mask.tif", scene.width, scene.height, scene.transform, scene.crs, nodata=True) as w:
        w.write_window(window, best[None], nodata)
    names.append("mask.tif")
    if len(candidates) > 1:
        with candidates_writer(out / "candidates.tif", scene.width, scene.height, candidates.scores,
                               scene.transform, scene.crs, nodata=True) as w:
            w.write_window(window, masks, nodata)
        names.append("candidates.tif")
    attributes: dict[str, list] = {"candidate": numbers,
                                   "score": [float(s) for s in candidates.scores]}
    features = masks_to_features(candidates, attributes)
    for name in ("mask.gpkg", "mask.geojson"):
        write_vector(out / name, features, candidates.crs, layer="mask")
        names.append(name)
    p = prediction.prompts
    overlay = draw_prompted(rgb8, best, p.points, p.labels, p.boxes,
                            score_text=None if several_boxes else f"Mask {numbers[0]}, Score: {float(candidates.scores[0]):.3f}")
    save_png(out / "overlay.png", overlay)
    names.append("overlay.png")
    if len(candidates) > 1:
        save_png(out / "candidates.png", draw_candidates(rgb8, candidates, None, p.points, p.labels, p.boxes))
        names.append("candidates.png")
    digest = save_logits(out / "logits.npy", prediction.best_logits)
    names += ["logits.npy", "result.json"]
    method = METHOD_SCENE if window == scene.window else METHOD_WINDOW
    doc = result_document(scene, prediction.model, method, [window], names, digest) | {
        "window": window.to_dict(),
        "mask": "union of one mask per box" if several_boxes else "best candidate",
        "prompts": prompts_document(_scene_prompts(p, window), p.mask_logits is not None),
        "candidates": [
            {"candidate": numbers[i], "score": float(candidates.scores[i]), "area_px": int(candidates.areas[i]),
             "box_xyxy_scene_px": (candidates.boxes[i] + [window.col_off, window.row_off] * 2).tolist()}
            for i in range(len(candidates))
        ],
        "timings": prediction.timings,
    }
    write_json(out / "result.json", doc)
    return names


def save_logits(path: Path, logits: np.ndarray) -> str:
    """Write ``(P, h, w)`` float32 logits as ``.npy``; returns their SHA-256 (hex)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(logits, dtype=np.float32), allow_pickle=False)
    data = buffer.getvalue()
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _scene_prompts(prompts: Prompts, window: Window) -> Prompts:
    """``prompts`` moved from window pixels back to scene pixels."""
    offset = np.array([window.col_off, window.row_off], dtype=np.float64)
    return Prompts(points=prompts.points + offset, labels=prompts.labels, boxes=prompts.boxes + np.tile(offset, 2),
                   frame="scene")


def prompts_document(prompts: Prompts, prior_mask: bool) -> dict:
    """The ``prompts`` entry of ``result.json``: scene-pixel points, labels, boxes and
    whether a prior mask (earlier logits) was used — one key, ``prior_mask``."""
    doc = prompts.to_dict()
    doc.pop("has_prior_mask", None)
    return doc | {"prior_mask": bool(prior_mask)}


def result_document(scene: Scene, model: str, method: str, windows: list[Window], outputs: list[str],
                    logits_sha256: str) -> dict:
    """The fields every ``result.json`` shares: scene, model, how it was done, windows, files."""
    return {
        "terramask_version": __version__,
        "run_id": uuid.uuid4().hex,
        "scene": {"path": str(scene.path), "width": scene.width, "height": scene.height,
                  "crs": scene.crs, "transform": list(scene.transform)[:6], "bands": [b + 1 for b in scene.bands]},
        "model": model,
        "method": method,
        "windows": [w.to_dict() for w in windows],
        "outputs": sorted(outputs),
        "logits_sha256": logits_sha256,
    }
