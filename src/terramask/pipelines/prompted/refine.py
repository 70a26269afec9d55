"""``--refine DIR``: read back an earlier predict folder, checking that it holds together.

:func:`load_previous` reads ``result.json`` and ``logits.npy`` and validates them before
anything reaches a model: JSON fields and their types, prompts (finite, labels 0/1,
non-degenerate boxes), a window inside the scene, logits ``(1, h, h)`` finite float32
whose SHA-256 matches the one ``result.json`` recorded (a ``logits.npy`` from another run
is refused). Every problem is one :class:`InputError` line naming the folder.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terramask.core.errors import InputError, TerramaskError
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.io.scene import Scene
from terramask.pipelines.prompted.outputs import METHOD_SCENE, METHOD_TILED, METHOD_WINDOW

#: Largest low-res logits side accepted (SAM-family models use 256).
MAX_LOGITS_SIDE = 4096


@dataclass(frozen=True)
class PreviousResult:
    """What ``--refine`` needs from an earlier run: its prompts in scene pixels, and for a
    single-window run the window its embedding covered and its best mask's low-res
    logits ``(1, h, w)`` float32. A tiled run (prompts over several windows) has neither:
    refinement then predicts again from all prompts, without a prior mask."""

    prompts: Prompts
    window: Window | None
    logits: np.ndarray | None
    method: str


class _Bad(Exception):
    """A problem with the earlier folder (turned into one InputError line)."""


def _int(value, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Bad(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _window(doc, scene: Scene) -> Window:
    if not isinstance(doc, dict) or set(doc) != {"col_off", "row_off", "width", "height"}:
        raise _Bad(f"window must be {{col_off, row_off, width, height}}, got {doc!r}")
    window = Window(*(_int(doc[k], f"window {k}") for k in ("col_off", "row_off", "width", "height")))
    x0, y0, x1, y1 = window.bounds
    if window.area == 0 or x1 > scene.width or y1 > scene.height:
        raise _Bad(f"window {window.to_dict()} is not inside the {scene.width}x{scene.height} scene")
    return window


def _prompts(doc) -> Prompts:
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("points", "labels", "boxes")):
        raise _Bad("prompts must hold lists 'points', 'labels' and 'boxes'")
    try:
        points = np.asarray(doc["points"], dtype=np.float64).reshape(-1, 2)
        boxes = np.asarray(doc["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(doc["labels"])
        if labels.size and labels.dtype.kind not in "iu":
            raise _Bad(f"prompt labels must be 0 or 1, got {doc['labels'][:5]!r}")
        prompts = Prompts(points=points, labels=labels, boxes=boxes, frame="scene")
    except (ValueError, TypeError) as exc:
        raise _Bad(f"prompts are malformed ({exc})") from None
    except TerramaskError as exc:
        raise _Bad(str(exc)) from None
    if len(prompts.points) == 0 and len(prompts.boxes) == 0:
        raise _Bad("it holds no prompts")
    return prompts


def _logits(path: Path, expected_sha256) -> np.ndarray:
    data = path.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise _Bad("logits.npy does not belong to result.json (its checksum differs); rerun predict into a new folder")
    try:
        logits = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _Bad(f"logits.npy is not a numpy array ({exc})") from None
    if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f":
        raise _Bad(f"logits.npy must hold floats, got {getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.ndim != 3 or logits.shape[0] != 1 or logits.shape[1] != logits.shape[2] \
            or not 0 < logits.shape[1] <= MAX_LOGITS_SIDE:
        raise _Bad(f"logits.npy must be (1, h, h) low-res logits, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise _Bad("logits.npy holds NaN or infinite values")
    return logits.astype(np.float32)


def load_previous(refine_dir, scene: Scene) -> PreviousResult:
    """Read and check ``result.json`` and ``logits.npy`` of an earlier ``predict`` run on ``scene``."""
    folder = Path(refine_dir)
    result_path, logits_path = folder / "result.json", folder / "logits.npy"
    for p in (result_path, logits_path):
        if not p.is_file():
            raise InputError(f"--refine {folder}: missing {p.name}; give the --out folder of an earlier predict run")
    try:
        try:
            doc = json.loads(result_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Bad(f"result.json is not JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("scene"), dict):
            raise _Bad("result.json has no 'scene' object")
        size = (doc["scene"].get("width"), doc["scene"].get("height"))
        if size != (scene.width, scene.height):
            raise InputError(
                f"--refine {folder}: that result is for a {size[0]}x{size[1]} scene, "
                f"{scene.path} is {scene.width}x{scene.height}"
            )
        method = doc.get("method", METHOD_WINDOW)
        if method not in (METHOD_SCENE, METHOD_WINDOW, METHOD_TILED):
            raise _Bad(f"unknown method {method!r} in result.json")
        prompts = _prompts(doc.get("prompts"))
        sha = doc.get("logits_sha256")
        if sha is not None and not isinstance(sha, str):
            raise _Bad("logits_sha256 in result.json must be a string")
        if method == METHOD_TILED:
            if sha is not None and hashlib.sha256(logits_path.read_bytes()).hexdigest() != sha:
                raise _Bad("logits.npy does not belong to result.json (its checksum differs)")
            return PreviousResult(prompts, None, None, method)
        window = _window(doc.get("window"), scene)
        logits = _logits(logits_path, sha)
    except _Bad as exc:
        raise InputError(f"--refine {folder}: {exc}") from None
    except OSError as exc:
        raise InputError(f"--refine {folder}: cannot read the earlier result ({exc.strerror or exc})") from None
    return PreviousResult(prompts, window, logits, method)


def merge_pixel_prompts(new: list[Prompts], previous: PreviousResult | None = None) -> Prompts:
    """One scene-pixel prompt set: earlier points first (labels kept), then new ones;
    the earlier best logits (if any) as prior mask."""
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
