"""Segment everything from the browser: the registry of background jobs
(:class:`EverythingJobs`: start, look up, re-attach, cancel) and each job's thread.

A job (:mod:`terramask.web.everything_job`) runs automatic generation with the app's
loaded backend on

- the **window** the page shows (scope ``window``, at most
  :data:`~terramask.web.everything_job.MAX_WINDOW_SIDE` px a side): one read, one
  generation (:func:`~terramask.pipelines.scene.segmenters.segment_function`), then each
  mask traced; progress reports the stage and, for point-decoding models, the point
  prompts decoded out of the total (:mod:`terramask.web.everything_runs`);
- the **whole scene** (scope ``scene``): :func:`~terramask.pipelines.scene.run.run_scene`
  through a :class:`~terramask.pipelines.scene.segmenters.BackendSegmenter` into
  ``<work>/everything-<job>/`` (labels.tif, objects.gpkg, masks.json, overlay.png,
  summary.json); progress counts tiles (:mod:`terramask.web.everything_runs`);
- objects **similar** to objects of the layer (scope ``similar``) and every instance of
  **phrases** (scope ``text``, on the shown ``window`` or, without one, the whole scene)
  with the server's text model: :mod:`terramask.web.everything_find`.

Jobs run on their own daemon thread. Every call into the backend goes through
:class:`~terramask.web.everything_guards.GuardedBackend`: it takes the model lock (the
lock clicks take on the model worker, so a click waits at most one encoder or one batch
of points) and first checks whether the job was cancelled. **Cancel** therefore stops
the work between tiles and between point batches; a scene run then discards its staging
folder and the job's folder is removed, so nothing half-written remains. Results are
*candidates* (:mod:`terramask.web.everything_candidates`) that the page accepts into the
object layer or discards, one by one or in bulk.

One job at a time per browser session; the registry keeps the last :data:`MAX_JOBS`
jobs (an evicted finished job's folder is removed), and a reloaded tab gets its
session's running job, or its finished one with open candidates, back
(:meth:`EverythingJobs.latest`). Errors are short sentences in the job's ``error``
(failed jobs) or :class:`JobNotFound` (404) / :class:`JobConflict` (409).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from terramask.core.errors import InputError, TerramaskError
from terramask.io.scene import Scene
from terramask.models.base import Backend
from terramask.web.everything_guards import point_total
from terramask.web.everything_job import Job, JobCancelled, JobConflict, JobNotFound, JobSpec
from terramask.web.everything_runs import run_whole_scene, run_window

log = logging.getLogger(__name__)

#: Jobs remembered per app (running ones included).
MAX_JOBS = 8


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
                candidates = run_window(self, job)
            elif job.spec.scope in ("similar", "text"):
                from terramask.web.everything_find import run_similar, run_text

                candidates = (run_similar if job.spec.scope == "similar" else run_text)(self, job)
            else:
                candidates = run_whole_scene(self, job)
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


def _remove(folder: Path | None) -> None:
    if folder is not None and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def _sentence(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
