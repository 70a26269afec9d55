"""Predictions the server remembers, per browser session, for refinement and export.

The browser refines a mask by sending new points plus ``refine_from`` (a prediction id
of its session, or ``"last"``); the server takes that prediction's prompts and the
chosen candidate's low-res logits from here (:meth:`ScenePrompter.refine`). Undo in the
browser simply refines from an older prediction id, so the server keeps a short history.

Memory is bounded: at most ``max_predictions`` predictions over all sessions (each holds
its candidate masks, a few MB for a 1024 px window), the least recently used dropped first.
Thread-safe.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np

from terramask.core.errors import InputError, TerramaskError
from terramask.pipelines.prompted.session import Prediction

#: Predictions kept over all sessions.
MAX_PREDICTIONS = 64


class PredictionGone(TerramaskError, LookupError):
    """The prediction id is unknown to this server (never made, or dropped from the history)."""


def new_id(nbytes: int = 6) -> str:
    """A short random URL-safe id."""
    return secrets.token_urlsafe(nbytes)


def with_candidate_first(prediction: Prediction, candidate: int) -> Prediction:
    """``prediction`` with candidate ``candidate`` (0-based) moved to the front, so that
    ``best`` / ``best_logits`` are the chosen one's (the others keep their order)."""
    n = len(prediction.candidates)
    if not 0 <= candidate < n:
        raise InputError(f"candidate {candidate} does not exist; this prediction has candidates 0..{n - 1}")
    if candidate == 0:
        return prediction
    order = np.array([candidate] + [i for i in range(n) if i != candidate])
    return replace(prediction, candidates=prediction.candidates[order])


class PredictionStore:
    """Least-recently-used map ``(session_id, prediction_id) -> Prediction``."""

    def __init__(self, max_predictions: int = MAX_PREDICTIONS) -> None:
        if max_predictions < 1:
            raise InputError(f"max_predictions must be at least 1, got {max_predictions}")
        self.max_predictions = max_predictions
        self._items: OrderedDict[tuple[str, str], Prediction] = OrderedDict()
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, session_id: str, prediction: Prediction) -> str:
        """Remember ``prediction`` for ``session_id``; returns its new id."""
        prediction_id = new_id()
        with self._lock:
            self._items[(session_id, prediction_id)] = prediction
            self._last[session_id] = prediction_id
            while len(self._items) > self.max_predictions:
                (sid, pid), _ = self._items.popitem(last=False)
                if self._last.get(sid) == pid:
                    del self._last[sid]
        return prediction_id

    def get(self, session_id: str, prediction_id: str = "last") -> tuple[str, Prediction]:
        """``(id, prediction)`` for ``prediction_id`` (or the session's latest for ``"last"``).

        Raises :class:`PredictionGone` when the session has no such prediction.
        """
        with self._lock:
            pid = self._last.get(session_id) if prediction_id == "last" else prediction_id
            if pid is None or (session_id, pid) not in self._items:
                what = "no earlier prediction" if prediction_id == "last" else f"no prediction {prediction_id!r}"
                raise PredictionGone(
                    f"session {session_id!r} has {what} on this server (it keeps the last "
                    f"{self.max_predictions}); predict again with all points"
                )
            self._items.move_to_end((session_id, pid))
            return pid, self._items[(session_id, pid)]
