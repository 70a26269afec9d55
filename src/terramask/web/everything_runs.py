"""The segment-everything jobs of scopes ``window`` and ``scene``
(:mod:`terramask.web.everything`): automatic generation with the app's backend

- on the shown **window** (:func:`run_window`): one read, one generation
  (:func:`~terramask.pipelines.scene.segmenters.segment_function`), each mask traced;
  progress in point prompts for point-decoding models, stages otherwise;
- on the **whole scene** (:func:`run_whole_scene`):
  :func:`~terramask.pipelines.scene.run.run_scene` with a
  :class:`~terramask.pipelines.scene.segmenters.BackendSegmenter` into the job's folder,
  progress in tiles (:func:`run_tiled`, shared with the tiled concept jobs of
  :mod:`terramask.web.everything_find`).

Every model call goes through :class:`~terramask.web.everything_guards.GuardedBackend`
(model lock, cancel check).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, cast

from terramask.core.geometry import plan_tiles
from terramask.models.base import Backend
from terramask.pipelines.amg.generator import supports_point_decoding
from terramask.pipelines.scene.segmenters import BackendSegmenter, segment_function
from terramask.web.everything_candidates import Candidate, from_masks, from_scene_run
from terramask.web.everything_guards import CountingSegmenter, GuardedBackend, point_total, tile_done

if TYPE_CHECKING:
    from terramask.web.everything import EverythingJobs
    from terramask.web.everything_job import Job


def run_window(jobs: EverythingJobs, job: Job) -> list[Candidate]:
    """Segment everything in the job's window (scene pixels, checked by ``JobSpec.check``)."""
    window = job.spec.window
    assert window is not None  # JobSpec.check
    job.progress("reading the window")
    job.check()
    with jobs.lock:
        image = jobs.scene.read(window)
    backend = GuardedBackend(jobs.backend, jobs.lock, job.check, job.advance)
    segment = segment_function(backend, dict(job.spec.params) or None)
    points = supports_point_decoding(jobs.backend)
    job.progress("encoding and decoding points" if points else "segmenting the window", 0,
                 point_total(job.spec.params, (window.height, window.width)) if points else 0)
    masks = segment(image)
    job.check()
    job.progress("tracing the outlines")
    return from_masks(masks, job.check)


def run_whole_scene(jobs: EverythingJobs, job: Job) -> list[Candidate]:
    """Segment everything in the whole scene, tile by tile, into the job's folder."""
    backend = cast(Backend, GuardedBackend(jobs.backend, jobs.lock, job.check))
    segmenter = BackendSegmenter(backend, dict(job.spec.params) or None)
    return run_tiled(jobs, job, segmenter, tiled_config(jobs, job), "segmenting tiles")


def tiled_config(jobs: EverythingJobs, job: Job) -> Any:
    """The scene-run configuration of a tiled job on ``jobs``' scene."""
    from terramask.pipelines.scene.config import SceneRunConfig, default_overlap

    return SceneRunConfig(bands=tuple(b + 1 for b in jobs.scene.bands), tile_size=job.spec.tile_size,
                          overlap=default_overlap(job.spec.tile_size), progress=False)


def run_tiled(jobs: EverythingJobs, job: Job, segmenter: Any, config: Any, stage: str) -> list[Candidate]:
    """Run ``segmenter`` over the scene in tiles into the job's folder (progress per tile,
    cancel checked after each) and read the candidates."""
    from terramask.pipelines.scene.run import run_scene

    assert job.folder is not None  # set by EverythingJobs.start for tiled jobs
    scene = jobs.scene
    tiles = plan_tiles(scene.path, scene.width, scene.height, config.tile_size, config.overlap)
    job.progress(stage, 0, len(tiles))
    run = run_scene(scene.source, job.folder, CountingSegmenter(segmenter, partial(tile_done, job)), config)
    job.check()
    job.progress("reading the objects", len(tiles))
    return from_scene_run(run)
