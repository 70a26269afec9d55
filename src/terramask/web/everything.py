"""Segment everything from the browser: background jobs with progress, cancel and results.

A job runs automatic generation with the app's loaded backend on

- the **window** the page shows (scope ``window``, at most :data:`MAX_WINDOW_SIDE` px a
  side): one read, one generation (:func:`~terramask.pipelines.scene.segmenters.segment_function`),
  then each mask traced; progress reports the stage and, for point-decoding models,
  the point prompts decoded out of the total;
- the **whole scene** (scope ``scene``): :func:`~terramask.pipelines.scene.run.run_scene`
  through a :class:`~terramask.pipelines.scene.segmenters.BackendSegmenter` into
  ``<work>/everything-<job>/`` (labels.tif, objects.gpkg, masks.json, overlay.png,
  summary.json); progress counts tiles;
- objects **similar** to objects of the layer (scope ``similar``) and every instance of
  **phrases** (scope ``text``, on the shown ``window`` or, without one, the whole scene)
  with the server's text model: :mod:`terramask.web.everything_find`.

Jobs run on their own daemon thread. Every call into the backend goes through
:class:`GuardedBackend`: it takes the model lock (the lock clicks take on the model
worker, so a click waits at most one encoder or one batch of points) and first checks
whether the job was cancelled. **Cancel** therefore stops the work between tiles and
between point batches; a scene run then discards its staging folder and the job's
folder is removed, so nothing half-written remains. Results are *candidates*
(:mod:`terramask.web.everything_candidates`) that the page accepts into the object layer
or discards, one by one or in bulk.

One job at a time per browser session; the registry keeps the last :data:`MAX_JOBS`
jobs (an evicted finished job's folder is removed). Errors are short sentences in the
job's ``error`` (failed jobs) or :class:`JobNotFound` (404) / :class:`JobConflict` (409).
"""

from __future__ import annotations

import inspect
import logging
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, cast

from terramask.core.errors import InputError, TerramaskError
from terramask.core.geometry import Window, plan_tiles
from terramask.io.scene import Scene
from terramask.models.base import Backend
from terramask.pipelines.amg.generator import supports_point_decoding
from terramask.pipelines.scene.segmenters import BackendSegmenter, SegmentTile, segment_function
from terramask.web.everything_candidates import Candidate, from_masks, from_scene_run
from terramask.web.store import new_id

log = logging.getLogger(__name__)

SCOPES = ("window", "scene", "similar", "text")
#: Largest side (scene pixels) of a window segmented in one piece; larger: the tiled scene run.
MAX_WINDOW_SIDE = 2048
#: Jobs remembered per app (running ones included).
MAX_JOBS = 8
#: States of a job; the last three are final.
STATES = ("running", "done", "failed", "cancelled")
#: States of a candidate.
OPEN, ACCEPTED, DISCARDED = "open", "accepted", "discarded"


class JobNotFound(TerramaskError, LookupError):
    """No job with that id on this server (never started, or dropped from the registry)."""


class JobConflict(TerramaskError):
    """The session already runs a job, or the job's results are not ready."""


class JobCancelled(TerramaskError):
    """Raised inside a job's thread when it was asked to stop."""


@dataclass(frozen=True)
class JobSpec:
    """What to segment: ``scope`` (``window`` or ``scene``), ``window`` (scene pixels,
    window scope), ``params`` (automatic-generation parameters: ``AmgParams`` fields) and
    ``tile_size`` (scene and similar scopes); scope ``similar``: ``exemplars`` (``(polygon in
    the scene CRS, class name)`` of the objects to find more of) and ``similarity`` (the
    cosine similarity a found object needs, :mod:`terramask.models.concept.similar`);
    scope ``text``: ``phrases`` to find, in ``window`` or (``None``) the whole scene."""

    scope: str
    window: Window | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    tile_size: int = 1024
    exemplars: tuple[tuple[Any, str], ...] = ()
    similarity: float = 0.6
    phrases: tuple[str, ...] = ()

    @property
    def tiled(self) -> bool:
        """True when the job is a tiled whole-scene run (with a folder of outputs)."""
        return self.scope in ("scene", "similar") or (self.scope == "text" and self.window is None)

    def check(self, scene: Scene) -> "JobSpec":
        """This spec, checked against ``scene`` (:class:`InputError` with the reason)."""
        if self.scope not in SCOPES:
            raise InputError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.scope == "similar" and not self.exemplars:
            raise InputError("find similar needs at least one object of the layer as an example")
        if self.scope == "text":
            from terramask.web.everything_find import check_phrases

            check_phrases(self.phrases)
        if self.tiled:
            return self
        if self.window is None:
            raise InputError("a window-scope job needs the window (col_off, row_off, width, height)")
        window = scene.check_window(self.window)
        if max(window.width, window.height) > MAX_WINDOW_SIDE:
            raise InputError(
                f"the window is {window.width}x{window.height} px; segment at most {MAX_WINDOW_SIDE} px a side "
                "at once: zoom in, or segment the whole scene (tiled)"
            )
        return self


class Job:
    """One segment-everything run: state, progress, candidates and their states.

    Progress: ``stage`` (words), ``done``/``total`` in ``unit`` (``tiles`` or ``points``;
    ``total`` 0 while unknown). Thread-safe (the job's lock).
    """

    def __init__(self, session_id: str, spec: JobSpec, folder: Path | None) -> None:
        self.id = new_id(9)
        self.session_id = session_id
        self.spec = spec
        self.folder = folder
        self.state = "running"
        self.stage = "waiting for the model"
        self.done = 0
        self.total = 0
        self.unit = "tiles" if spec.tiled else "points"
        self.error: str | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self.candidates: list[Candidate] = []
        self.states: dict[int, str] = {}
        self.lock = threading.RLock()
        self._cancel = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def cancel(self) -> None:
        """Ask the job to stop at its next check (between tiles or point batches)."""
        self._cancel.set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was asked to stop."""
        if self._cancel.is_set():
            raise JobCancelled("segment everything was cancelled")

    def progress(self, stage: str | None = None, done: int | None = None, total: int | None = None) -> None:
        with self.lock:
            if stage is not None:
                self.stage = stage
            if total is not None:
                self.total = int(total)
            if done is not None:
                self.done = int(done)

    def advance(self, n: int = 1) -> None:
        with self.lock:
            self.done += int(n)

    def finish(self, state: str, candidates: list[Candidate] | None = None, error: str | None = None) -> None:
        with self.lock:
            self.state = state
            self.error = error
            self.candidates = list(candidates or [])
            self.states = {c.id: OPEN for c in self.candidates}
            self.finished = time.monotonic()
            if state == "done":
                self.stage = f"{len(self.candidates)} candidate(s)"
                if self.total:
                    self.done = self.total
            else:
                self.stage = state

    def results(self) -> list[Candidate]:
        """The candidates of a finished job (:class:`JobConflict` while it runs or when it did not finish)."""
        with self.lock:
            if self.state != "done":
                raise JobConflict(f"job {self.id} is {self.state}; candidates exist only when it is done"
                                  + (f" ({self.error})" if self.error else ""))
            return list(self.candidates)

    def pick(self, ids: list[int]) -> list[Candidate]:
        """The open candidates among ``ids`` (unknown ids: :class:`InputError`; accepted
        or discarded ones are left out, so a second tab cannot accept one twice)."""
        with self.lock:
            by_id = {c.id: c for c in self.results()}
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise InputError(f"job {self.id} has no candidate {unknown[0]}; it has candidates 1..{len(by_id)}")
            return [by_id[i] for i in dict.fromkeys(ids) if self.states[i] == OPEN]

    def has_open(self) -> bool:
        """True when some candidate is neither accepted nor discarded."""
        with self.lock:
            return OPEN in self.states.values()

    def mark(self, ids: list[int], state: str) -> None:
        with self.lock:
            for i in ids:
                self.states[i] = state

    def snapshot(self) -> dict:
        """The job as JSON for the page."""
        with self.lock:
            counts = {s: 0 for s in (OPEN, ACCEPTED, DISCARDED)}
            for s in self.states.values():
                counts[s] += 1
            end = self.finished if self.finished is not None else time.monotonic()
            return {
                "job_id": self.id, "session_id": self.session_id, "scope": self.spec.scope,
                "window": None if self.spec.window is None else self.spec.window.to_dict(),
                "state": self.state, "stage": self.stage, "done": self.done, "total": self.total, "unit": self.unit,
                "error": self.error, "elapsed_s": round(end - self.started, 3),
                "candidates": len(self.candidates), "counts": counts,
                "folder": None if self.folder is None else str(self.folder),
            }


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


class EverythingJobs:
    """The jobs of one scene: start, look up, cancel; at most :data:`MAX_JOBS` kept.

    ``lock`` is the model lock (shared with the click worker) and guards ``scene`` reads;
    ``work_dir`` holds the folders of scene runs.
    """

    def __init__(self, scene: Scene, backend: Backend, lock: threading.RLock, work_dir: Path,
                 max_jobs: int = MAX_JOBS) -> None:
        self.scene = scene
        self.backend = backend
        #: the server's text model (:class:`~terramask.models.concept.resolve.TextModel`) or None
        self.text: Any = None
        self.lock = lock
        self.work_dir = Path(work_dir)
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._registry = threading.Lock()

    def start(self, session_id: str, spec: JobSpec) -> Job:
        """Start ``spec`` for ``session_id`` on a new thread (:class:`JobConflict` when the
        session's previous job still runs)."""
        spec = spec.check(self.scene)
        if spec.scope == "text" and self.text is None:
            from terramask.web.everything_find import NO_TEXT_MODEL

            raise InputError(NO_TEXT_MODEL)
        if spec.params:
            point_total(spec.params, (1, 1))  # bad parameters: InputError now, not in the thread
        with self._registry:
            busy = next((j for j in self._jobs.values() if j.session_id == session_id and j.running), None)
            if busy is not None:
                raise JobConflict(f"job {busy.id} of this session is still running; cancel it or wait for it")
            job = Job(session_id, spec, None)
            if spec.tiled:
                job.folder = self.work_dir / f"everything-{job.id}"
            self._jobs[job.id] = job
            self._evict()
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"terramask-everything-{job.id}", daemon=True)
        job.thread.start()
        log.info("segment everything %s (%s) started for session %s", job.id, spec.scope, session_id)
        return job

    def get(self, job_id: str) -> Job:
        with self._registry:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no segment-everything job {job_id!r} on this server (it keeps the last "
                              f"{self.max_jobs}); start it again")
        return job

    def latest(self, session_id: str) -> Job | None:
        """The job a reloaded tab of ``session_id`` re-attaches to: its running job, else
        its last finished job that still has open candidates (not yet accepted or
        discarded); None when there is neither (failed and cancelled jobs are not kept)."""
        with self._registry:
            jobs = [j for j in self._jobs.values() if j.session_id == session_id]
        running = next((j for j in reversed(jobs) if j.running), None)
        if running is not None:
            return running
        return next((j for j in reversed(jobs) if j.state == "done" and j.has_open()), None)

    def close(self, wait: float = 1.0) -> None:
        """Cancel every running job and wait up to ``wait`` seconds for their threads."""
        with self._registry:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        deadline = time.monotonic() + wait
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))

    def _evict(self) -> None:
        finished = [j for j in self._jobs.values() if not j.running]
        while len(self._jobs) > self.max_jobs and finished:
            old = finished.pop(0)
            del self._jobs[old.id]
            _remove(old.folder)

    # -- the job's thread ----------------------------------------------------------
    def _run(self, job: Job) -> None:
        try:
            if job.spec.scope == "window":
                candidates = self._run_window(job)
            elif job.spec.scope in ("similar", "text"):
                from terramask.web.everything_find import run_similar, run_text

                candidates = (run_similar if job.spec.scope == "similar" else run_text)(self, job)
            else:
                candidates = self._run_scene(job)
        except JobCancelled:
            _remove(job.folder)
            job.finish("cancelled")
            log.info("segment everything %s cancelled", job.id)
        except TerramaskError as exc:
            _remove(job.folder)
            job.finish("failed", error=_sentence(str(exc)))
            log.warning("segment everything %s failed: %s", job.id, exc)
        except Exception as exc:  # noqa: BLE001 - becomes the job's error line, never a traceback to the page
            _remove(job.folder)
            job.finish("failed", error=_sentence(f"internal error ({type(exc).__name__}): {exc}"))
            log.error("segment everything %s failed unexpectedly", job.id, exc_info=exc)
        else:
            job.finish("done", candidates)
            log.info("segment everything %s: %d candidate(s)", job.id, len(candidates))

    def _run_window(self, job: Job) -> list[Candidate]:
        window = job.spec.window
        assert window is not None  # JobSpec.check
        job.progress("reading the window")
        job.check()
        with self.lock:
            image = self.scene.read(window)
        backend = GuardedBackend(self.backend, self.lock, job.check, job.advance)
        segment = segment_function(backend, dict(job.spec.params) or None)
        points = supports_point_decoding(self.backend)
        job.progress("encoding and decoding points" if points else "segmenting the window", 0,
                     point_total(job.spec.params, (window.height, window.width)) if points else 0)
        masks = segment(image)
        job.check()
        job.progress("tracing the outlines")
        return from_masks(masks, job.check)

    def _run_scene(self, job: Job) -> list[Candidate]:
        from terramask.pipelines.scene.config import SceneRunConfig, default_overlap
        from terramask.pipelines.scene.run import run_scene

        assert job.folder is not None  # set by start() for the scene scope
        scene = self.scene
        config = SceneRunConfig(bands=tuple(b + 1 for b in scene.bands), tile_size=job.spec.tile_size,
                                overlap=default_overlap(job.spec.tile_size), progress=False)
        tiles = plan_tiles(scene.path, scene.width, scene.height, config.tile_size, config.overlap)
        job.progress("segmenting tiles", 0, len(tiles))
        backend = GuardedBackend(self.backend, self.lock, job.check)
        segmenter = CountingSegmenter(BackendSegmenter(cast(Backend, backend), dict(job.spec.params) or None),
                                      partial(_tile_done, job))
        run = run_scene(scene.source, job.folder, segmenter, config)
        job.check()
        job.progress("reading the objects", len(tiles))
        return from_scene_run(run)


def _tile_done(job: Job) -> None:
    job.advance()
    job.check()


def _remove(folder: Path | None) -> None:
    if folder is not None and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def _sentence(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
