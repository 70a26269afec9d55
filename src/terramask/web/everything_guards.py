"""How a segment-everything job (:mod:`terramask.web.everything`) calls the model: every
call under the model lock (the lock clicks take on the model worker, so a click waits at
most one encoder or one batch of points) and behind the job's cancel check
(:class:`GuardedBackend`); a scene run's segmenter that counts tiles and checks for a
cancel after each (:class:`CountingSegmenter`); how many point prompts automatic
generation decodes, for the progress bar (:func:`point_total`).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from terramask.models.base import Backend
from terramask.pipelines.scene.segmenters import SegmentTile

if TYPE_CHECKING:
    from terramask.web.everything_job import Job


class GuardedBackend:
    """The app's backend as a job sees it: each method call first checks the job's cancel
    flag, then runs under the model ``lock``; point-decoding calls report how many point
    prompts they decoded to ``on_points``. Other attributes pass through."""

    def __init__(self, backend: Backend, lock: threading.RLock, check: Callable[[], None],
                 on_points: Callable[[int], None] | None = None) -> None:
        self._backend = backend
        self._lock = lock
        self._check = check
        self._on_points = on_points

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)
        if not inspect.ismethod(value):
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._check()
            with self._lock:
                result = value(*args, **kwargs)
            if self._on_points is not None and name in ("decode_points", "decode_selected") and len(args) > 1:
                self._on_points(len(args[1]))
            return result

        return guarded


@dataclass(frozen=True)
class CountingSegmenter:
    """A scene run's segmenter factory around another (:class:`BackendSegmenter`,
    :class:`~terramask.pipelines.find.segmenter.FindSegmenter`) that calls ``after_tile()``
    when a tile is segmented (the job's progress and cancel check); a classed inner
    segmenter keeps the run classed."""

    shippable: ClassVar[bool] = False

    inner: Any
    after_tile: Callable[[], None]

    def __call__(self) -> SegmentTile:
        return partial(_segment_and_count, self.inner(), self.after_tile)

    @property
    def classes(self) -> tuple[str, ...] | None:
        return getattr(self.inner, "classes", None)

    def describe(self) -> dict:
        return self.inner.describe()


def _segment_and_count(segment: SegmentTile, after_tile: Callable[[], None], image: Any) -> Any:
    masks = segment(image)
    after_tile()
    return masks


def point_total(params: Mapping[str, Any], shape: tuple[int, int]) -> int:
    """Point prompts automatic generation decodes on an image of ``shape`` (rows, cols)."""
    from terramask.pipelines.amg.params import AmgParams, generate_crop_boxes

    amg = AmgParams.from_mapping(dict(params))
    _, layers = generate_crop_boxes(shape, amg.crop_n_layers, amg.crop_overlap_ratio)
    grids = amg.layer_grids()
    return sum(len(grids[layer]) for layer in layers)


def tile_done(job: Job) -> None:
    """One tile segmented: the job's progress moves, then its cancel check."""
    job.advance()
    job.check()

