"""Routes of segment everything (:mod:`terramask.web.everything`), added by ``create_app``.

====================================  ==============================================================
``POST /everything``                  start a job on the shown window or the whole scene, find
                                      objects similar to objects of the layer, or every instance
                                      of phrases (202; 409 while the session's last job runs)
``GET /everything?session_id=``       the session's running job, or its finished one with open
                                      candidates (a reloaded tab re-attaches to it); ``null``
``GET /everything/text``              whether the text box works here (the server's text model)
``GET /everything/{job_id}``          state, stage, progress (``done``/``total`` ``unit``), error
``POST /everything/{job_id}/cancel``  stop it between tiles / point batches (nothing is kept)
``GET /everything/{job_id}/candidates``  the candidates with outlines (409 until done)
``GET /everything/{job_id}/duplicates``  which open candidates duplicate a layer object now
``POST /everything/{job_id}/accept``  accept candidates into the object layer with a class, or
                                      each with its proposed class (one undo step for the
                                      objects); answers with the layer
``POST /everything/{job_id}/discard`` discard candidates
====================================  ==============================================================
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from terramask.core.geometry import Window
from terramask.io.scene import Scene
from terramask.web.everything import EverythingJobs
from terramask.web.everything_candidates import Candidate, candidate_payload
from terramask.web.everything_duplicates import duplicate_of
from terramask.web.everything_find import MAX_PHRASES, text_status
from terramask.web.everything_job import ACCEPTED, DISCARDED, OPEN, Job, JobSpec
from terramask.web.object_files import layer_payload
from terramask.web.objects import ObjectLayer
from terramask.web.schemas import ID_PATTERN, ClassId, SessionId, error_responses
from terramask.web.store import new_id

#: Most candidate ids in one accept/discard request.
MAX_IDS = 10_000
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="Segment-everything job id.")]


class WindowBody(BaseModel):
    """A window of scene pixels."""

    model_config = ConfigDict(extra="forbid")

    col_off: Annotated[int, Field(ge=0, le=2**31 - 1)]
    row_off: Annotated[int, Field(ge=0, le=2**31 - 1)]
    width: Annotated[int, Field(ge=1, le=2**31 - 1)]
    height: Annotated[int, Field(ge=1, le=2**31 - 1)]


class EverythingRequest(BaseModel):
    """``POST /everything``: segment everything in ``window`` (scope ``window``, the part
    of the scene the page shows) or the whole scene in tiles of ``tile_size`` px (scope
    ``scene``). ``points_per_side``, ``pred_iou_thresh``, ``stability_score_thresh``:
    automatic-generation parameters (default: the reference generator's). Scope
    ``similar``: find objects like the layer's objects ``object_ids`` (each an example of
    its class) over the whole scene, keeping those at least ``similarity`` alike (cosine).
    Scope ``text``: every instance of ``phrases`` (each a class) in ``window``, or in
    the whole scene when no window is given (needs the server's text model)."""

    model_config = ConfigDict(extra="forbid")

    session_id: SessionId | None = None
    scope: Literal["window", "scene", "similar", "text"] = "window"
    window: WindowBody | None = None
    tile_size: Annotated[int, Field(ge=64, le=4096)] = 1024
    points_per_side: Annotated[int, Field(ge=1, le=64)] | None = None
    pred_iou_thresh: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    stability_score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    object_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(default_factory=list, max_length=100)
    similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.6
    phrases: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=MAX_PHRASES)


class CandidateIds(BaseModel):
    """``POST /everything/{job_id}/accept`` / ``discard``: candidate ids (1-based) and,
    to accept, the class they get: ``class_id``, or with ``proposed`` each candidate's
    proposed class (the phrase or the example's class: the layer's class of that name,
    created when the layer has none) and ``class_id`` for candidates without one.
    Candidates that duplicate an object of the layer are not accepted unless
    ``duplicates`` is true (one the user picked by hand)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(..., min_length=1, max_length=MAX_IDS)
    class_id: ClassId = 1
    proposed: bool = False
    duplicates: bool = False


def add_everything_routes(app: FastAPI, jobs: EverythingJobs, layer: ObjectLayer, scene: Scene) -> None:
    """Register the segment-everything routes on ``app``."""

    @app.post("/everything", status_code=202, responses=error_responses(400, 404, 409, 413, 422, 500))
    def start_everything(req: EverythingRequest) -> dict:
        """Start segment everything; returns the job (poll ``GET /everything/{job_id}``)."""
        params = {k: v for k, v in (("points_per_side", req.points_per_side), ("pred_iou_thresh", req.pred_iou_thresh),
                                    ("stability_score_thresh", req.stability_score_thresh)) if v is not None}
        window = None if req.window is None else Window(req.window.col_off, req.window.row_off,
                                                        req.window.width, req.window.height)
        exemplars = tuple(_example(layer, object_id) for object_id in dict.fromkeys(req.object_ids))
        spec = JobSpec(req.scope, window, params, req.tile_size, exemplars, req.similarity, tuple(req.phrases))
        return jobs.start(req.session_id or new_id(), spec).snapshot()

    @app.get("/everything", responses=error_responses(422, 500))
    def session_everything(session_id: Annotated[str, Query(pattern=ID_PATTERN)]) -> dict:
        """``{job}``: the job of browser session ``session_id`` that its page shows, so a
        reloaded tab gets it back: the running one, else the last finished one with open
        candidates; ``null`` when there is none. Another tab (another session) never sees it."""
        job = jobs.latest(session_id)
        return {"job": None if job is None else job.snapshot()}

    @app.get("/everything/text", responses=error_responses(500))
    def everything_text() -> dict:
        """The text box: ``available`` (the server has a text model), ``model`` (its name)
        and ``reason`` (why it is off, naming the option that turns it on)."""
        return text_status(jobs)

    @app.get("/everything/{job_id}", responses=error_responses(404, 422, 500))
    def everything_status(job_id: JobId) -> dict:
        """The job: ``state`` (running, done, failed, cancelled), ``stage``, ``done``/``total``
        in ``unit`` (tiles or points), ``error`` (a sentence), candidate counts."""
        return jobs.get(job_id).snapshot()

    @app.post("/everything/{job_id}/cancel", responses=error_responses(404, 422, 500))
    def cancel_everything(job_id: JobId) -> dict:
        """Ask the job to stop (between tiles or point batches); a finished job is unchanged."""
        job = jobs.get(job_id)
        job.cancel()
        return job.snapshot()

    @app.get("/everything/{job_id}/candidates", responses=error_responses(404, 409, 422, 500))
    def everything_candidates(job_id: JobId) -> dict:
        """``{job, candidates: [{id, state, score, stability, area_px, area_m2, bbox_px,
        outline_px, class, class_id, duplicate_of}]}`` (scene pixels), best score first;
        ``class``: the proposed class (text and find-similar jobs), ``class_id``: the
        layer's class of that name, if any; ``duplicate_of``: the layer object an open
        candidate duplicates (IoU >= 0.5, or 80 % of it inside the object), else null."""
        job = jobs.get(job_id)
        candidates = job.results()
        with job.lock:
            states = dict(job.states)
        ids = _class_ids(layer)
        dup = _open_duplicates(job, layer)
        return {"job": job.snapshot(),
                "candidates": [candidate_payload(c, states[c.id], scene.transform, ids, dup.get(c.id))
                               for c in candidates]}

    @app.get("/everything/{job_id}/duplicates", responses=error_responses(404, 409, 422, 500))
    def everything_duplicates(job_id: JobId) -> dict:
        """``{duplicate_of: {candidate id: layer object id}, revision}``: the open candidates
        that duplicate an object of the layer at ``revision`` (the page asks again when
        its layer changes: an object clicked, deleted, undone); 409 until the job is done."""
        job = jobs.get(job_id)
        candidates = _open_candidates(job)
        with layer.lock:  # never inside the job's lock: accept takes the job's, then the layer's
            revision = layer.revision
            objects = _geometries(layer)
        found = duplicate_of(candidates, objects)
        return {"duplicate_of": {str(k): v for k, v in found.items()}, "revision": revision}

    @app.post("/everything/{job_id}/accept", responses=error_responses(400, 404, 409, 413, 422, 500))
    def accept_candidates(job_id: JobId, req: CandidateIds) -> dict:
        """Accept the open candidates among ``ids`` as objects of ``class_id`` (one change of
        the layer: one undo step); returns the layer, ``accepted`` (new object ids),
        ``skipped`` (candidate ids already accepted or discarded), ``duplicates`` (open
        ones left open because they duplicate a layer object; none with ``duplicates``)
        and ``duplicate_of`` (``{candidate id: object id}`` of the open candidates now)."""
        job = jobs.get(job_id)
        with job.lock, layer.lock:
            picked = job.pick(req.ids)
            layer.class_of(req.class_id)  # an unknown class: 404 before any class is created
            dup = {} if req.duplicates else duplicate_of(picked, _geometries(layer))
            picked = [c for c in picked if c.id not in dup]
            classes = _proposed_classes(layer, picked) if req.proposed else {}
            objects = layer.add_many([(c.geometry, classes.get(c.cls or "", req.class_id), c.score, c.area_px,
                                       c.area_m2) for c in picked]) if picked else []
            job.mark([c.id for c in picked], ACCEPTED)
            remaining = _open_duplicates(job, layer)
        chosen = {c.id for c in picked}
        return layer_payload(layer, scene) | {
            "accepted": [o.id for o in objects], "skipped": [i for i in req.ids if i not in chosen and i not in dup],
            "duplicates": sorted(dup), "duplicate_of": {str(k): v for k, v in remaining.items()},
            "job": job.snapshot()}

    @app.post("/everything/{job_id}/discard", responses=error_responses(400, 404, 409, 413, 422, 500))
    def discard_candidates(job_id: JobId, req: CandidateIds) -> dict:
        """Discard the open candidates among ``ids``; returns the job and ``discarded``."""
        job = jobs.get(job_id)
        with job.lock:
            picked = job.pick(req.ids)
            job.mark([c.id for c in picked], DISCARDED)
        return {"job": job.snapshot(), "discarded": [c.id for c in picked]}


def _example(layer: ObjectLayer, object_id: int) -> tuple[object, str]:
    """``(polygon in the scene CRS, class name)`` of object ``object_id`` (404 when gone)."""
    with layer.lock:
        obj = layer.get(object_id)
        return obj.geometry, str(layer.class_of(obj.class_id)["name"])


def _geometries(layer: ObjectLayer) -> dict[int, object]:
    """Object id -> polygon (scene CRS) of the layer's objects now."""
    with layer.lock:
        return {obj.id: obj.geometry for obj in layer.objects.values()}


def _open_candidates(job: Job) -> list[Candidate]:
    """The job's open candidates (:class:`JobConflict` until it is done)."""
    with job.lock:
        return [c for c in job.results() if job.states[c.id] == OPEN]


def _open_duplicates(job: Job, layer: ObjectLayer) -> dict[int, int]:
    """``{candidate id: layer object id}`` of the job's open candidates that duplicate an object."""
    return duplicate_of(_open_candidates(job), _geometries(layer))


def _class_ids(layer: ObjectLayer) -> dict[str, int]:
    """Lower-case class name -> class id of the layer."""
    with layer.lock:
        return {str(c["name"]).lower(): int(c["id"]) for c in layer.classes.values()}


#: Colours of classes created for accepted proposals (the layer's default palette continues).
PROPOSAL_COLOURS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
                    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#808000")


def _proposed_classes(layer: ObjectLayer, picked: list[Candidate]) -> dict[str, int]:
    """``{proposed name: class id}`` for the picked candidates: the layer's class of that
    name (case-insensitive), created (with a colour not yet used) when it has none."""
    ids = _class_ids(layer)
    found: dict[str, int] = {}
    for name in dict.fromkeys(c.cls for c in picked if c.cls):
        assert name is not None
        if name.lower() not in ids:
            used = {str(c["color"]).lower() for c in layer.classes.values()}
            colour = next((c for c in PROPOSAL_COLOURS if c not in used), PROPOSAL_COLOURS[len(ids) % 16])
            ids[name.lower()] = int(layer.add_class(name, colour)["id"])
        found[name] = ids[name.lower()]
    return found
