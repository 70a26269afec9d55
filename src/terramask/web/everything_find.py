"""Concept jobs of segment everything (:mod:`terramask.web.everything`): issue 11's
find-similar and text prompts in the page.

- scope ``similar``: objects like objects of the layer, over the whole scene, tile by
  tile: :func:`terramask.pipelines.find.run.scene_prototypes` learns prototypes from the
  objects' polygons and :class:`~terramask.models.concept.similar.SimilarFinder` finds
  the others (SAM-family models only);
- scope ``text``: every instance of the job's phrases with the server's text model
  (``terramask serve --detector``, a
  :class:`~terramask.models.concept.resolve.TextModel`): a detector whose boxes the
  view's SAM-family model masks, or SAM 3. On the shown window: one ``find``; on the
  whole scene: :func:`~terramask.pipelines.scene.run.run_scene` with a
  :class:`~terramask.pipelines.find.segmenter.FindSegmenter` (cross-tile merge,
  per-class NMS) into the job's folder.

Every model call goes through :class:`~terramask.web.everything_guards.GuardedBackend` (model
lock, cancel check). Candidates carry their class (the phrase, or the example's class),
which the page proposes when accepting them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, cast

from terramask.core.errors import InputError
from terramask.models.base import Backend
from terramask.models.concept.base import ConceptQuery, check_phrase
from terramask.web.everything_candidates import Candidate, from_masks
from terramask.web.everything_guards import GuardedBackend
from terramask.web.everything_runs import run_tiled, tiled_config

if TYPE_CHECKING:
    from terramask.web.everything import EverythingJobs
    from terramask.web.everything_job import Job

#: Why the text box is off, and which option turns it on (shown in the page).
NO_TEXT_MODEL = ("text search needs a text model: start the server with --detector grounding-dino-tiny "
                 "(or owlv2-base, sam3, or a Hugging Face folder of one)")
#: Most phrases in one text job.
MAX_PHRASES = 16


def check_phrases(phrases: Sequence[str]) -> tuple[str, ...]:
    """The phrases, each checked (:func:`~terramask.models.concept.base.check_phrase`:
    :class:`~terramask.core.errors.PromptError` for an empty one or one with ``.``)."""
    if not phrases:
        raise InputError("type what to find, e.g. building (several: building, solar panel)")
    if len(phrases) > MAX_PHRASES:
        raise InputError(f"at most {MAX_PHRASES} phrases at once, got {len(phrases)}")
    return tuple(dict.fromkeys(check_phrase(p) for p in phrases))


def text_status(jobs: EverythingJobs) -> dict:
    """``{available, model, reason}`` of the text box (``reason``: why it is off)."""
    text = jobs.text
    if text is None:
        return {"available": False, "model": None, "reason": NO_TEXT_MODEL[0].upper() + NO_TEXT_MODEL[1:] + "."}
    return {"available": True, "model": text.name, "reason": None}


def run_similar(jobs: EverythingJobs, job: Job) -> list[Candidate]:
    """Find objects like the exemplars (the layer's objects) over the whole scene."""
    from terramask.io.exemplars import ExemplarFeature
    from terramask.models.concept.similar import SimilarFinder
    from terramask.pipelines.find.run import scene_prototypes
    from terramask.pipelines.find.segmenter import FindSegmenter

    config = tiled_config(jobs, job)
    backend = cast(Backend, GuardedBackend(jobs.backend, jobs.lock, job.check))
    job.progress("learning the examples")
    features = [ExemplarFeature(geometry, 1, cls, f"object {k + 1} of the layer")
                for k, (geometry, cls) in enumerate(job.spec.exemplars)]
    protos = scene_prototypes(jobs.scene.source, backend, features, config)
    finder = SimilarFinder(backend, protos, similarity=job.spec.similarity)
    return run_tiled(jobs, job, FindSegmenter(finder, None, protos.names), config, "finding similar objects")


def run_text(jobs: EverythingJobs, job: Job) -> list[Candidate]:
    """Every instance of the job's phrases in its window, or over the whole scene."""
    from terramask.pipelines.find.segmenter import FindSegmenter, per_class_nms

    if jobs.text is None:
        raise InputError(NO_TEXT_MODEL)
    phrases = check_phrases(job.spec.phrases)
    concept = jobs.text.concept_for(jobs.backend, lambda model: GuardedBackend(model, jobs.lock, job.check))
    query = ConceptQuery(phrases=phrases)
    classes = tuple(dict.fromkeys(query.class_of(p) for p in phrases))
    words = ", ".join(phrases)
    if job.spec.window is None:
        segmenter = FindSegmenter(concept, query, classes, route="text")
        return run_tiled(jobs, job, segmenter, tiled_config(jobs, job), f"finding {words}")
    job.progress("reading the window")
    job.check()
    with jobs.lock:
        image = jobs.scene.read(job.spec.window)
    job.progress(f"finding {words} in the window")
    found = per_class_nms(concept.find(image, query), FindSegmenter.nms_thresh)
    job.check()
    job.progress("tracing the outlines")
    return from_masks(found, job.check)
