"""One click (``POST /predict``) on the model worker: new object or refinement.

:func:`answer_click` runs on :class:`terramask.web.limits.ModelWorker` (under the model
lock) and returns the stored prediction with two facts the page shows:

- ``refined``: the new points were added to an earlier prediction (``refine_from``).
  A refinement whose new object points lie outside the earlier prediction's encoded
  window (a click far away on a large scene) cannot reuse that embedding: it starts a
  new object around the new points instead and says so in ``note``. Background points
  alone outside the window are refused with a sentence (they cannot start an object).
- ``timings["embedding"]``: ``"computed"`` when this request ran the encoder (or read
  the persistent cache: ``embedding_cache`` says which), ``"reused"`` when an embedding
  already in memory answered; then ``encoder_s`` is 0 and ``embedding_cache`` is
  ``"memory"``, so the page does not repeat an encoder time that was not spent again.

Prompts arrive in the request's frame; windows and points are checked in scene pixels.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import numpy as np

from terramask.core.errors import PromptError
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.pipelines.prompted.predict import ScenePrompter
from terramask.pipelines.prompted.session import Prediction, PromptSession
from terramask.web.limits import Check
from terramask.web.server_timing import Laps
from terramask.web.store import PredictionStore, with_candidate_first


@dataclass(frozen=True)
class Click:
    """What one ``/predict`` asks, in scene-independent form: ``points`` ``(N, 2)`` float64
    and ``labels`` ``(N,)`` int64 in ``frame``/``crs``, ``boxes`` ``(M, 4)`` xyxy."""

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    frame: str
    crs: str | None
    multimask: bool
    refine_from: str | None = None
    refine_candidate: int = 0


@dataclass(frozen=True)
class Answer:
    """A stored prediction and what the page is told about it."""

    prediction_id: str
    prediction: Prediction
    refined: bool
    note: str | None = None


class EmbeddingLedger:
    """Remembers which window embeddings were already reported to a page, so a reused
    one is reported as ``"reused"`` (weak references: dropped sessions are forgotten)."""

    def __init__(self) -> None:
        self._seen: weakref.WeakSet[PromptSession] = weakref.WeakSet()

    def session(self, prompter: ScenePrompter, window: Window) -> tuple[PromptSession, bool]:
        """``(session, fresh)``: the prompter's session for ``window`` (encoding it when
        missing) and whether this call is the first to use it."""
        session = prompter.session(window)
        fresh = session not in self._seen
        self._seen.add(session)
        return session, fresh


def window_text(window: Window) -> str:
    """``"columns 100-1123, rows 0-1023"`` (inclusive, scene pixels): a window in words."""
    x0, y0, x1, y1 = window.bounds
    return f"columns {x0}-{x1 - 1}, rows {y0}-{y1 - 1}"


def inside(window: Window, points: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: which scene-pixel points ``(N, 2)`` lie in ``window``."""
    x0, y0, x1, y1 = window.bounds
    return (points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)


def with_embedding_timings(prediction: Prediction, fresh: bool) -> Prediction:
    """``prediction`` whose timings say whether this request computed the embedding."""
    timings: dict = dict(prediction.timings)
    if fresh:
        timings["embedding"] = "computed"
    else:
        timings.update(embedding="reused", encoder_s=0.0, set_image_s=0.0, embedding_cache="memory")
    return replace(prediction, timings=timings)


def answer_click(prompter: ScenePrompter, store: PredictionStore, ledger: EmbeddingLedger,
                 session_id: str, click: Click, check: Check, laps: Laps | None = None) -> Answer:
    """Predict for ``click`` (new object, or refinement of ``click.refine_from``), store
    the prediction under ``session_id`` and return it. ``check`` raises when the request
    must stop (between reading, encoding and decoding). ``laps`` receives ``frame``
    (prompt conversion), ``embedding`` (finding or computing it), ``decode`` (the
    backend's own decoder time) and ``predict`` (the rest of the prediction)."""
    laps = laps if laps is not None else Laps()
    if click.refine_from is not None:
        _, previous = store.get(session_id, click.refine_from)
        previous = with_candidate_first(previous, click.refine_candidate)
        new = prompter.to_pixels(Prompts(points=click.points, labels=click.labels, frame=click.frame, crs=click.crs))
        window = previous.window or prompter.scene.window
        laps.lap("frame")
        if inside(window, new.points).all():
            _, fresh = ledger.session(prompter, window)
            check()
            laps.lap("embedding")
            prediction = prompter.refine(previous, new.points, new.labels, frame="scene", multimask=click.multimask)
            check()
            _decoded(laps, prediction)
            prediction = with_embedding_timings(prediction, fresh)
            return Answer(store.add(session_id, prediction), prediction, True)
        if not (new.labels == 1).any():
            raise PromptError(
                f"a background point must lie inside the current object's encoded window ({window_text(window)}); "
                "click inside the dashed frame, or start a new object with an object point"
            )
        note = (f"the click is outside the current object's encoded window ({window_text(window)}), "
                "so it starts a new object there")
        answer = _new_object(prompter, store, ledger, session_id, new, click.multimask, check, laps)
        return replace(answer, note=note)
    prompts = Prompts(points=click.points, labels=click.labels, boxes=click.boxes, frame=click.frame, crs=click.crs)
    pixel_prompts = prompter.to_pixels(prompts)
    laps.lap("frame")
    return _new_object(prompter, store, ledger, session_id, pixel_prompts, click.multimask, check, laps)


def reopen_prompts(prompts: dict | None, bbox_px: tuple[float, float, float, float]) -> Prompts:
    """Scene-pixel prompts that re-make an accepted object: its stored ``prompts``
    (:func:`terramask.web.objects.check_prompts`), or, for an object stored without
    (accepted by segment-everything, or from an older layer file), its bounding box."""
    if prompts and (prompts["points"] or prompts["boxes"]):
        return Prompts(points=np.array(prompts["points"], dtype=np.float64).reshape(-1, 2),
                       labels=np.array(prompts["labels"], dtype=np.int64),
                       boxes=np.array(prompts["boxes"], dtype=np.float64).reshape(-1, 4), frame="scene")
    return Prompts(boxes=np.array([bbox_px], dtype=np.float64), frame="scene")


def reopen_object(prompter: ScenePrompter, store: PredictionStore, ledger: EmbeddingLedger, session_id: str,
                  pixel_prompts: Prompts, multimask: bool, check: Check) -> Answer:
    """Predict again from an accepted object's prompts (scene pixels), as a new object of
    ``session_id``: later clicks refine it like any prediction."""
    if len(pixel_prompts.boxes) > 1:
        pixel_prompts = replace(pixel_prompts, boxes=pixel_prompts.boxes[:1])
    return _new_object(prompter, store, ledger, session_id, pixel_prompts, multimask, check)


def _new_object(prompter: ScenePrompter, store: PredictionStore, ledger: EmbeddingLedger, session_id: str,
                pixel_prompts: Prompts, multimask: bool, check: Check, laps: Laps | None = None) -> Answer:
    laps = laps if laps is not None else Laps()
    window = prompter.window_for(pixel_prompts)
    check()
    _, fresh = ledger.session(prompter, window)  # the encoder, once per window: the step that cannot stop midway
    check()
    laps.lap("embedding")
    prediction = prompter.predict(pixel_prompts, multimask=multimask, window=window)
    check()
    _decoded(laps, prediction)
    prediction = with_embedding_timings(prediction, fresh)
    return Answer(store.add(session_id, prediction), prediction, False)


def _decoded(laps: Laps, prediction: Prediction) -> None:
    """The lap since the embedding, split into the backend's own ``decode`` time and the
    rest of the prediction (``predict``: prompt checks, candidate sorting)."""
    laps.lap("predict")
    laps.split("predict", "decode", float(prediction.timings.get("decoder_s", 0.0)), "predict")
