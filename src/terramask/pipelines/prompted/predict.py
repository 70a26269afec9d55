"""Prompted segmentation of a scene file: prompts in any frame in, candidates out.

:class:`ScenePrompter` opens nothing itself; it takes an open
:class:`terramask.io.scene.Scene`, converts prompts from pixel, map or lon/lat
coordinates to scene pixels (in :mod:`terramask.io.prompt_frames`, the one place that
does so), reads only the window the prompts need on large scenes, and keeps one
:class:`PromptSession` (one embedding) per window so further clicks reuse it.

:meth:`ScenePrompter.predict` answers prompts that fit one native-resolution window;
:meth:`ScenePrompter.segment` answers any prompts: those that do not fit (boxes or
points far apart, one object larger than a window) go through the tiled prompt path
(:mod:`terramask.pipelines.prompted.objects`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from terramask.core.errors import PromptError
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.io.prompt_frames import to_scene_pixels, to_tile_pixels
from terramask.io.scene import Scene
from terramask.models.base import Backend
from terramask.pipelines.prompted.session import Prediction, PromptSession, prompt_window

if TYPE_CHECKING:
    from terramask.pipelines.prompted.objects import TiledPrediction

log = logging.getLogger(__name__)

#: Scenes whose longer side is at most this many pixels are encoded whole.
FULL_SCENE_MAX = 2048
#: Side of the window encoded around the prompts on larger scenes (native resolution).
WINDOW_SIZE = 1024
#: Embeddings kept per prompter (least recently used dropped first).
MAX_SESSIONS = 8
#: Pixels kept between prompts and the edge of their window.
MARGIN = 64


class ScenePrompter:
    """Answer prompts on one scene with one backend, reusing embeddings.

    Prompts may be in ``scene`` pixels, ``world`` (any CRS, default the scene's) or
    ``lonlat``. Scenes up to ``full_scene_max`` pixels on the longer side are encoded
    whole; on larger scenes only a ``window_size`` window around the prompts is read and
    encoded at native resolution. At most ``max_sessions`` window embeddings are kept
    in memory, least recently used dropped first.
    """

    def __init__(
        self,
        scene: Scene,
        backend: Backend,
        window_size: int = WINDOW_SIZE,
        full_scene_max: int = FULL_SCENE_MAX,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.scene = scene
        self.backend = backend
        self.window_size = window_size
        self.full_scene_max = full_scene_max
        self.max_sessions = max(1, int(max_sessions))
        self._sessions: OrderedDict[Window, PromptSession] = OrderedDict()

    def to_pixels(self, prompts: Prompts) -> Prompts:
        """Prompts in scene pixels, validated against the scene extent and nodata."""
        return scene_pixel_prompts(self.scene, prompts)

    @property
    def encodes_whole_scene(self) -> bool:
        """True when the scene is small enough to be encoded whole."""
        return max(self.scene.width, self.scene.height) <= self.full_scene_max

    def fits_one_window(self, pixel_prompts: Prompts) -> bool:
        """True when ``pixel_prompts`` (scene pixels) fit one ``window_size`` window with
        :data:`MARGIN` around them (or the scene is encoded whole)."""
        if self.encodes_whole_scene:
            return True
        xs, ys = _prompt_xs_ys(pixel_prompts)
        if xs.size == 0:
            return True
        span = max(float(np.ptp(xs)), float(np.ptp(ys))) + 2 * MARGIN
        return span <= self.window_size or any(_covers(w, pixel_prompts) for w in self._sessions)

    def window_for(self, pixel_prompts: Prompts) -> Window:
        """The window to encode for prompts in scene pixels.

        Raises :class:`PromptError` when they do not fit one window (see :meth:`segment`).
        """
        if self.encodes_whole_scene:
            return self.scene.window
        for window in self._sessions:  # reuse an embedding that already covers the prompts
            if _covers(window, pixel_prompts):
                return window
        if not self.fits_one_window(pixel_prompts):
            raise PromptError(
                f"{self.scene.path}: the prompts span more than one {self.window_size} px window; "
                "prompt one object at a time here, or use terramask predict (ScenePrompter.segment), "
                "which answers them window by window"
            )
        return prompt_window(pixel_prompts, self.scene.width, self.scene.height, self.window_size, MARGIN)

    def session(self, window: Window) -> PromptSession:
        """The (cached) session for ``window``; creating one runs the encoder."""
        if window in self._sessions:
            self._sessions.move_to_end(window)
            return self._sessions[window]
        session = PromptSession(self.backend, self.scene.read(window), window)
        self._sessions[window] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def predict(self, prompts: Prompts, multimask: bool = True, window: Window | None = None) -> Prediction:
        """Candidates for ``prompts`` (any frame), on the grid of the encoded window.

        ``window`` forces the encoded window (e.g. the one a prior mask was predicted
        on); by default it is chosen from the prompts.
        """
        pixel_prompts = self.to_pixels(prompts)
        window = self.scene.check_window(window) if window is not None else self.window_for(pixel_prompts)
        if not _covers(window, pixel_prompts):
            raise PromptError(
                f"{self.scene.path}: the prompts do not fit in the window {window.to_dict()}; "
                "without a given window, ScenePrompter.segment answers prompts of any extent"
            )
        local = to_tile_pixels(pixel_prompts, window)
        local = replace(local, frame="scene")
        return self.session(window).predict(local, multimask=multimask)

    def segment(self, prompts: Prompts, multimask: bool = True,
                window: Window | None = None) -> "Prediction | TiledPrediction":
        """Answer any prompts (any frame): a :class:`Prediction` when they fit one window
        (or ``window`` is given), else a :class:`~terramask.pipelines.prompted.objects.TiledPrediction`
        (one object per box, or one object for the points, each over as many native-resolution
        windows as it needs)."""
        from terramask.pipelines.prompted.objects import segment_objects

        pixel_prompts = self.to_pixels(prompts)
        if window is not None or self.fits_one_window(pixel_prompts):
            return self.predict(pixel_prompts, multimask=multimask, window=window)
        return segment_objects(self, pixel_prompts, multimask=multimask)

    def refine(self, previous: Prediction, points, labels, frame: str = "scene", crs: str | None = None,
               multimask: bool = True) -> Prediction:
        """Add points (in ``frame``) to ``previous`` and predict again with its best logits.

        Points in ``scene`` frame are scene pixels; they are moved into the window of
        ``previous``, which must contain them.
        """
        new = self.to_pixels(Prompts(points=points, labels=labels, frame=frame, crs=crs))
        window = previous.window or self.scene.window
        if not _covers(window, new):
            raise PromptError(f"{self.scene.path}: refinement points must lie inside the encoded window {window.to_dict()}")
        local = replace(to_tile_pixels(new, window), frame="scene")
        return self.session(window).refine(previous, local.points, local.labels, multimask=multimask)


def scene_pixel_prompts(scene: Scene, prompts: Prompts) -> Prompts:
    """``prompts`` (any frame) in pixels of ``scene``, checked against its extent and nodata."""
    return to_scene_pixels(
        prompts, scene.crs, scene.transform, scene.shape, valid_mask=scene.valid_mask, source=scene.path
    )


def _prompt_xs_ys(prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
    xs = np.concatenate([prompts.points[:, 0], prompts.boxes[:, 0], prompts.boxes[:, 2]])
    ys = np.concatenate([prompts.points[:, 1], prompts.boxes[:, 1], prompts.boxes[:, 3]])
    return xs, ys


def _covers(window: Window, pixel_prompts: Prompts) -> bool:
    x0, y0, x1, y1 = window.bounds
    pts = pixel_prompts.points
    boxes = pixel_prompts.boxes
    inside_points = bool(((pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)).all())
    inside_boxes = bool(((boxes[:, 0] >= x0) & (boxes[:, 2] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 3] <= y1)).all())
    return inside_points and inside_boxes
