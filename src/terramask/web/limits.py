"""Limits on what one request may cost the web app: body size, prompts, time, the model.

- **Body size**: :class:`BodyLimit` answers ``413`` to a body larger than
  ``max_body_bytes`` (default :data:`MAX_BODY_BYTES`): at once from ``Content-Length``,
  without reading the body, or as soon as a chunked body passes the limit. The body is
  never buffered beyond the limit, so a 50 MB upload costs nothing.
- **Prompts**: at most :data:`MAX_POINTS` points and :data:`MAX_BOXES` boxes per
  request (checked by :mod:`terramask.web.schemas`, ``422``).
- **Time and the model**: model work runs on one daemon thread, :class:`ModelWorker`,
  one job at a time (that thread is the model lock); rendering the answer (polygons,
  PNGs) runs afterwards on its own daemon thread (:func:`off_loop`), outside the lock. Each job has a budget (default
  :data:`REQUEST_BUDGET_S`); a request whose job has not finished within it gets ``503``
  and its job is cancelled, as it is when the client disconnects or the server shuts
  down. A job waiting in the queue is dropped without touching the model; a running job
  stops at its next checkpoint (between reading, encoding, decoding and rendering). The
  encoder of a new window is the one step that cannot be interrupted, so the budget
  should exceed the encoder time of the model on its device. Because the thread is a
  daemon, a busy model never keeps the process alive after the server stops.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Awaitable, Callable, Generic, TypeVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from terramask.core.errors import TerramaskError

log = logging.getLogger(__name__)

#: Largest request body accepted (bytes); 1,000 points as JSON take about 50 kB.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Most point prompts in one request (one object needs a handful).
MAX_POINTS = 1000
#: Most box prompts in one request (each gives one mask).
MAX_BOXES = 100
#: Seconds one request may take, waiting for the model included.
REQUEST_BUDGET_S = 120.0
#: How often a waiting request checks for a disconnected client (seconds).
POLL_S = 0.1
#: Seconds a stopping server (SIGTERM, Ctrl+C) lets requests finish before cancelling them
#: (``uvicorn.run(timeout_graceful_shutdown=...)`` in ``terramask serve``).
SHUTDOWN_GRACE_S = 2.0

T = TypeVar("T")
#: Raises :class:`RequestCancelled` / :class:`RequestTimeout` when the job must stop.
Check = Callable[[], None]


class RequestCancelled(TerramaskError):
    """The client went away (or the server is stopping) before the answer was ready."""


class RequestTimeout(TerramaskError, TimeoutError):
    """The request did not finish within its time budget (the model was busy or slow)."""


def body_too_large(limit: int, size: int | None = None) -> HTTPException:
    """The ``413`` for a body over ``limit`` bytes (``size`` when announced)."""
    what = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return HTTPException(413, f"request body of {what} is larger than the limit of {limit:,} bytes; "
                              "send fewer prompts per request")


class BodyLimit:
    """Pure ASGI middleware: ``413`` for HTTP request bodies over ``max_bytes``.

    A ``Content-Length`` over the limit is answered before any body byte is read; a
    body without one (chunked) is counted as it arrives and refused when it passes the
    limit, so memory never holds more than ``max_bytes`` of it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await _send_413(send, body_too_large(self.max_bytes, announced))
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, exc: HTTPException) -> None:
    from terramask.web.errors import error_response

    response = error_response(413, str(exc.detail), "HTTPException")
    response.headers["Connection"] = "close"
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class Job(Generic[T]):
    """One unit of model work: ``fn(check)`` with a deadline and a cancel flag."""

    def __init__(self, fn: Callable[[Check], T], budget: float, what: str) -> None:
        self.fn = fn
        self.budget = float(budget)
        self.deadline = time.monotonic() + self.budget
        self.what = what
        self.future: Future[T] = Future()
        self._reason: str | None = None

    def cancel(self, reason: str) -> None:
        """Ask the job to stop at its next checkpoint (or never start)."""
        if self._reason is None:
            self._reason = reason

    def check(self) -> None:
        """Raise when the job was cancelled or is past its deadline (called between steps)."""
        if self._reason is not None:
            raise RequestCancelled(f"{self.what} cancelled: {self._reason}")
        if time.monotonic() > self.deadline:
            raise self.timeout()

    def timeout(self) -> RequestTimeout:
        return RequestTimeout(f"{self.what} did not finish within the {self.budget:g} s budget of a request "
                              "(the model is busy or slow); try again in a moment")


async def off_loop(fn: Callable[[], T], what: str, budget: float) -> T:
    """``fn()`` on a daemon thread (CPU work that needs no model: rendering polygons and
    PNGs), awaited at most ``budget`` seconds, else :class:`RequestTimeout`; the thread
    then finishes on its own and never delays the process exit."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            future.set_exception(exc)

    threading.Thread(target=target, name="terramask-render", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.0, budget))
    except TimeoutError:
        raise RequestTimeout(f"{what} did not finish within the budget of a request; "
                             "try fewer boxes or a smaller object") from None


class ModelWorker:
    """A daemon thread that runs model jobs one at a time, under ``lock``.

    ``lock`` is also taken by other code that touches the scene or the model, so the
    worker is the model lock's only long holder. Use :meth:`run` from a route.
    """

    def __init__(self, lock: threading.RLock | None = None, budget: float = REQUEST_BUDGET_S) -> None:
        self.lock = lock or threading.RLock()
        self.budget = float(budget)
        self._queue: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._current: Job[Any] | None = None
        self._pending: set[Job[Any]] = set()
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="terramask-model", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        return self._current is not None

    def submit(self, fn: Callable[[Check], T], what: str, budget: float | None = None) -> Job[T]:
        """Queue ``fn(check)``; its result or error arrives in ``job.future``."""
        job: Job[T] = Job(fn, self.budget if budget is None else budget, what)
        with self._pending_lock:
            self._pending.add(job)
        self._queue.put(job)
        return job

    async def run(self, fn: Callable[[Check], T], what: str, disconnected: Callable[[], Awaitable[bool]],
                  budget: float | None = None) -> T:
        """Run ``fn(check)`` on the worker and wait for it, at most the budget.

        ``disconnected`` (e.g. ``request.is_disconnected``) is polled; a gone client
        cancels the job. Raises :class:`RequestTimeout` past the budget and
        :class:`RequestCancelled` for a gone client; a cancelled route (server shutdown)
        cancels the job too.
        """
        job = self.submit(fn, what, budget)
        waiter = asyncio.wrap_future(job.future)
        try:
            while True:
                remaining = job.deadline - time.monotonic()
                done, _ = await asyncio.wait({waiter}, timeout=max(0.0, min(POLL_S, remaining)))
                if done:
                    return waiter.result()
                if remaining <= 0:
                    job.cancel("over budget")
                    raise job.timeout()
                if await disconnected():
                    job.cancel("the client disconnected")
                    raise RequestCancelled(f"{what} cancelled: the client disconnected")
        except asyncio.CancelledError:
            job.cancel("the server is stopping")
            raise
        finally:
            if not waiter.done():
                waiter.cancel()

    def stop(self, wait: float = 2.0) -> bool:
        """Cancel every queued and running job, end the thread; ``True`` when it ended
        within ``wait`` seconds (else a job is still inside an uninterruptible step)."""
        with self._pending_lock:
            for job in self._pending:
                job.cancel("the server is stopping")
        self._queue.put(None)
        self._thread.join(wait)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._execute(job)

    def _execute(self, job: Job[Any]) -> None:
        try:
            if not job.future.set_running_or_notify_cancel():
                return
            try:
                job.check()  # cancelled or expired while queued: never touch the model
                with self.lock:
                    self._current = job
                    result = job.fn(job.check)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
        finally:
            self._current = None
            with self._pending_lock:
                self._pending.discard(job)
