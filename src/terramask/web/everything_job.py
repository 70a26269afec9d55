"""One segment-everything job (:mod:`terramask.web.everything`): what it segments
(:class:`JobSpec`, checked against the scene), its state, progress and cancel flag, and the
candidates it found with each one's decision (open, accepted, discarded) (:class:`Job`);
the errors a job's routes answer with (:class:`JobNotFound` 404, :class:`JobConflict` 409).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from terramask.core.errors import InputError, TerramaskError
from terramask.core.geometry import Window
from terramask.io.scene import Scene
from terramask.web.everything_candidates import Candidate
from terramask.web.store import new_id

SCOPES = ("window", "scene", "similar", "text")
#: Largest side (scene pixels) of a window segmented in one piece; larger: the tiled scene run.
MAX_WINDOW_SIDE = 2048
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
