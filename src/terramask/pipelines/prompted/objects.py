"""Prompts that do not fit one window: several objects, or one object larger than a window.

``ScenePrompter.predict`` encodes one native-resolution window around the prompts. When
the prompts span more (two buildings 3 km apart, a runway longer than a window),
:func:`segment_objects` splits them into objects and hands each to the tiled prompt path
(:func:`terramask.pipelines.prompted.tiles.segment_across_tiles`), which predicts it in as
many native-resolution windows as it needs and merges the pieces:

- several boxes: one object per box (as SAM gives one mask per box); background points
  are not allowed with several boxes (:class:`~terramask.core.prompts.Prompts`);
- otherwise (points, at most one box): one object marked by all of them, as SAM reads
  points; background points join the windows that contain them.

Each part keeps its window's candidates (a few MB), so at most :data:`MAX_WINDOWS`
windows are encoded per request; nothing scene-sized is made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from terramask.core.errors import PromptError
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.pipelines.prompted.predict import ScenePrompter
from terramask.pipelines.prompted.tiles import MergedPrediction, plan_prompt_windows, segment_across_tiles

log = logging.getLogger(__name__)

#: Most windows one request may need (each part holds a window's candidates in memory).
MAX_WINDOWS = 64


@dataclass(frozen=True)
class TiledPrediction:
    """Objects predicted over several windows.

    ``objects``: one :class:`MergedPrediction` per object in prompt order (its parts hold
    window-grid candidates, its geometry is in scene pixels and the scene CRS);
    ``prompts``: all prompts in scene pixels; ``model``: the backend's name.
    """

    objects: list[MergedPrediction]
    prompts: Prompts
    model: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def windows(self) -> list[Window]:
        """Every window encoded, object by object (a window shared by two objects appears twice)."""
        return [w for obj in self.objects for w in obj.windows]

    @property
    def scores(self) -> np.ndarray:
        """``(K,)`` float32, one score per object."""
        return np.array([obj.score for obj in self.objects], dtype=np.float32)


def split_objects(prompts: Prompts) -> list[Prompts]:
    """Scene-pixel ``prompts`` -> one :class:`Prompts` per object (see module docstring)."""
    if prompts.mask_logits is not None:
        raise PromptError("a prior mask belongs to one window; prompts spanning several windows cannot use it")
    if len(prompts.boxes) > 1:
        return [Prompts(boxes=box[None], frame="scene") for box in prompts.boxes]
    return [replace(prompts, frame="scene")]


def segment_objects(prompter: ScenePrompter, pixel_prompts: Prompts, multimask: bool = True) -> TiledPrediction:
    """Predict every object of ``pixel_prompts`` (scene pixels) window by window.

    Raises :class:`PromptError` before any encoding when more than :data:`MAX_WINDOWS`
    windows would be needed.
    """
    split = split_objects(pixel_prompts)
    scene = prompter.scene
    needed = sum(len(plan_prompt_windows(obj, scene.width, scene.height, prompter.window_size)) for obj in split)
    if needed > MAX_WINDOWS:
        raise PromptError(
            f"{scene.path}: these prompts need {needed} windows of {prompter.window_size} px (at most {MAX_WINDOWS}); "
            "use smaller boxes, fewer objects per run, or terramask auto for whole areas"
        )
    objects = [segment_across_tiles(prompter, obj, multimask=multimask) for obj in split]
    timings: dict[str, float] = {}
    for obj in objects:
        for part in obj.parts:
            for key, value in part.timings.items():
                if isinstance(value, (int, float)):
                    timings[key] = timings.get(key, 0.0) + float(value)
    model = objects[0].parts[0].model if objects and objects[0].parts else getattr(prompter.backend, "name", "")
    log.info("%s: %d object(s) over %d window(s)", prompter.scene.path, len(objects),
             sum(len(o.parts) for o in objects))
    return TiledPrediction(objects, replace(pixel_prompts, frame="scene"), model, timings)
