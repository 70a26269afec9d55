"""Per browser-tab state: which prediction is a tab's current mask (``GET``/``PUT /session``).

Every tab makes its own session id (``sessionStorage``: it survives a reload and a scene
switch in that tab, and a second tab gets another) and sends it with every request
(``session_id`` in bodies and queries). Predictions are stored per session
(:class:`terramask.web.store.PredictionStore`): a tab can refine, accept or export only
its own, so two tabs never see each other's prompts or current mask. The object layer is
the exception on purpose: one per scene, shared, with versions (:mod:`terramask.web.objects`).

The page tells the server what its current mask is after each change (new prediction,
another candidate chosen, undo, clear, accept, re-open); ``GET /session`` gives it back
after a reload, or when the tab comes back to a scene. At most :data:`MAX_SESSIONS`
sessions are remembered per scene view, least recently used dropped first. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from terramask.io.scene import Scene
from terramask.web.render import prediction_payload
from terramask.web.schemas import ID_PATTERN, SessionId, error_responses
from terramask.web.store import PredictionGone, PredictionStore

#: Sessions remembered per scene view.
MAX_SESSIONS = 256


@dataclass(frozen=True)
class Current:
    """A tab's current mask: a stored prediction, the chosen candidate (0-based) and,
    for a re-opened object, ``{id, version, class_id, candidate}``."""

    prediction_id: str
    candidate: int = 0
    reopened: dict | None = None


class Reopened(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[int, Field(ge=1, le=2**31 - 1)]
    version: Annotated[int, Field(ge=0, le=2**62)]
    class_id: Annotated[int, Field(ge=1, le=255)] = 1
    candidate: Annotated[int, Field(ge=0, le=255)] = 0


class SessionUpdate(BaseModel):
    """``PUT /session``: the tab's current mask, or ``prediction_id: null`` for none."""

    model_config = ConfigDict(extra="forbid")

    session_id: SessionId
    prediction_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    candidate: Annotated[int, Field(ge=0, le=255)] = 0
    reopened: Reopened | None = None


class SessionBook:
    """``session_id -> Current`` (least recently used first out)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._items: OrderedDict[str, Current | None] = OrderedDict()
        self._lock = threading.Lock()

    def set(self, session_id: str, current: Current | None) -> None:
        with self._lock:
            self._items[session_id] = current
            self._items.move_to_end(session_id)
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)

    def get(self, session_id: str) -> Current | None:
        with self._lock:
            current = self._items.get(session_id)
            if session_id in self._items:
                self._items.move_to_end(session_id)
            return current


class SessionContext(Protocol):
    scene: Scene
    store: PredictionStore


def add_session_routes(app: FastAPI, state: SessionContext) -> SessionBook:
    """Register ``GET``/``PUT /session`` on ``app``; returns the app's book."""
    book = SessionBook()

    def answer(session_id: str) -> dict:
        current = book.get(session_id)
        if current is None:
            return {"session_id": session_id, "current": None}
        try:
            prediction_id, prediction = state.store.get(session_id, current.prediction_id)
        except PredictionGone:
            return {"session_id": session_id, "current": None}
        candidate = min(current.candidate, len(prediction.candidates) - 1)
        return {"session_id": session_id, "current": {
            "prediction": prediction_payload(prediction, prediction_id, session_id, state.scene),
            "candidate": candidate, "reopened": current.reopened}}

    @app.get("/session", responses=error_responses(422, 500))
    def get_session(session_id: str = Query(..., pattern=ID_PATTERN)) -> dict:
        """This tab's current mask on this scene (``current: null`` when it has none):
        ``{session_id, current: {prediction (as /predict answers), candidate, reopened}}``."""
        return answer(session_id)

    @app.put("/session", responses=error_responses(404, 413, 422, 500))
    def put_session(req: SessionUpdate) -> dict:
        """Set this tab's current mask (a prediction of its own session; 404 otherwise).
        Answers what was set, ``{session_id, current: {prediction_id, candidate, reopened}}``
        (``current: null`` for none), not the prediction: the page sends this after every
        click, while it draws the answer, so re-rendering the candidates here would only
        compete with it for the CPU."""
        if req.prediction_id is None:
            book.set(req.session_id, None)
            return {"session_id": req.session_id, "current": None}
        prediction_id, prediction = state.store.get(req.session_id, req.prediction_id)  # 404 for another tab's id
        reopened = req.reopened.model_dump() if req.reopened is not None else None
        candidate = min(req.candidate, len(prediction.candidates) - 1)
        book.set(req.session_id, Current(prediction_id, candidate, reopened))
        return {"session_id": req.session_id,
                "current": {"prediction_id": prediction_id, "candidate": candidate, "reopened": reopened}}

    return book
