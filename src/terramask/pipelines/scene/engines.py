"""Where tiles and files run: in this process (default) or on a Ray cluster.

An engine maps a *worker* over items and yields the results **in item order**:

>>> with make_engine("local") as engine:
...     for result in engine.map(make_worker, items):
...         ...

``make_worker`` is a picklable zero-argument callable returning the worker, a callable
``worker(item) -> result``. Each engine process builds its worker once and reuses it for
every item it gets, so a model is loaded once per worker, not once per tile or file.

- :class:`LocalEngine` builds one worker in this process; no Ray needed.
- :class:`RayEngine` starts ``workers`` Ray actors (one CPU each by default), each
  building its worker in its constructor, and feeds them items as they become free,
  keeping at most ``workers * queue_per_worker`` items submitted but not yet yielded,
  so memory stays bounded whatever the number of items. Without ``address`` it starts a
  local Ray instance (and shuts it down on close); with ``address`` (``"auto"``,
  ``"ray://host:10001"`` or ``"host:6379"``) it joins an existing cluster. It waits
  until every actor has built its worker before sending items, and records that time
  (connecting, starting actors, loading models) as ``startup_s``, so throughput can be
  measured without it.

Ray is imported lazily; a missing installation raises
:class:`~terramask.core.errors.MissingDependencyError` naming ``pip install 'terramask[ray]'``.
Workers import terramask themselves: on a cluster, terramask (with the same version and
the model weights) must be installed on every node.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Mapping

from terramask.core.errors import InputError, ModelError
from terramask.core.lazy import require

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def worker_name() -> str:
    """``host:pid`` of the calling process (reported with results to count workers)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LocalEngine:
    """Run every item in this process, one after the other."""

    name = "local"

    def __init__(self) -> None:
        self.workers = 1
        self.startup_s = 0.0

    def map(self, make_worker: Callable[[], Callable[[Any], Any]], items: Iterable[Any], *,
            ordered: bool = True) -> Iterator[Any]:
        """``worker(item)`` for each item, in order (``ordered`` changes nothing here)."""
        worker = make_worker()
        try:
            for item in items:
                yield worker(item)
        finally:
            close = getattr(worker, "close", None)
            if callable(close):
                close()

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ActorBody:
    """What runs inside one Ray actor: a worker built once, called per item."""

    def __init__(self, make_worker: Callable[[], Callable[[Any], Any]]) -> None:
        self._worker = make_worker()

    def run(self, item: Any) -> Any:
        return self._worker(item)

    def name(self) -> str:
        return worker_name()


class RayEngine:
    """Run items on Ray actors, each holding one worker (see the module docstring).

    ``workers``: number of actors (default: the cluster's CPUs / ``cpus_per_worker``);
    ``cpus_per_worker``, ``gpus_per_worker``: resources each actor reserves;
    ``init_kwargs``: extra arguments for ``ray.init`` when this engine starts Ray (e.g.
    ``object_store_memory``); ``queue_per_worker``: items submitted ahead per actor.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, *, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0, init_kwargs: Mapping[str, Any] | None = None,
                 queue_per_worker: int = 2) -> None:
        if workers is not None and int(workers) < 1:
            raise InputError(f"the number of Ray workers must be >= 1, got {workers}")
        if cpus_per_worker < 0 or gpus_per_worker < 0:
            raise InputError("Ray worker resources must be >= 0")
        if queue_per_worker < 1:
            raise InputError(f"queue_per_worker must be >= 1, got {queue_per_worker}")
        self.address = address
        self.requested_workers = None if workers is None else int(workers)
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.init_kwargs = dict(init_kwargs or {})
        self.queue_per_worker = int(queue_per_worker)
        self.workers = self.requested_workers or 0
        self.startup_s = 0.0
        self._ray: Any = None
        self._started = False

    # -- lifetime ----------------------------------------------------------------------
    def _connect(self):
        if self._ray is not None:
            return self._ray
        ray = require("ray", extra="ray")
        if not ray.is_initialized():
            kwargs = dict(self.init_kwargs)
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs.setdefault("include_dashboard", False)
                if self.requested_workers is not None:
                    kwargs.setdefault("num_cpus", max(1, int(self.requested_workers * max(self.cpus_per_worker, 1))))
            kwargs.setdefault("log_to_driver", False)
            kwargs.setdefault("configure_logging", False)
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ModelError(f"cannot connect to the Ray cluster at {self.address}: {exc}") from exc
            self._started = True
            log.info("started Ray (%s)", self.address or "local")
        self._ray = ray
        if not self.workers:
            cpus = float(ray.cluster_resources().get("CPU", 1))
            self.workers = max(1, int(cpus // self.cpus_per_worker)) if self.cpus_per_worker else max(1, int(cpus))
        return ray

    def close(self) -> None:
        if self._ray is not None and self._started:
            self._ray.shutdown()
        self._ray = None
        self._started = False

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- mapping ------------------------------------------------------------------------
    def map(self, make_worker: Callable[[], Callable[[Any], Any]], items: Iterable[Any], *,
            ordered: bool = True) -> Iterator[Any]:
        """``worker(item)`` for each item on the actors; in item order, or as soon as each
        finishes with ``ordered=False`` (results must then say which item they belong to)."""
        started = time.perf_counter()
        ray = self._connect()
        actor_cls = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker)(_ActorBody)
        factory = ray.put(make_worker)
        actors = [actor_cls.remote(factory) for _ in range(self.workers)]
        idle = deque(actors)
        in_flight: dict[Any, tuple[int, Any]] = {}
        done: dict[int, Any] = {}
        limit = self.workers * self.queue_per_worker
        source = enumerate(items)
        exhausted = False
        next_out = 0
        try:
            for actor in actors:  # every worker built (model loaded) before the first item
                self._get(ray, actor.name.remote(), "start-up")
            self.startup_s = time.perf_counter() - started
            while True:
                while idle and not exhausted and len(in_flight) + len(done) < limit:
                    try:
                        seq, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    actor = idle.popleft()
                    in_flight[actor.run.remote(item)] = (seq, actor)
                if not in_flight and not done:
                    if exhausted:
                        return
                    continue
                if in_flight and (next_out not in done or not ordered):
                    ready, _ = ray.wait(list(in_flight), num_returns=1)
                    for ref in ready:
                        seq, actor = in_flight.pop(ref)
                        idle.append(actor)
                        done[seq] = self._get(ray, ref, f"item {seq}")
                if not ordered:
                    for seq in sorted(done):
                        yield done.pop(seq)
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
        finally:
            for actor in actors:
                try:
                    ray.kill(actor)
                except Exception:  # pragma: no cover - actor already gone
                    pass

    @staticmethod
    def _get(ray, ref, what: str) -> Any:
        """``ray.get(ref)``; a task's own exception re-raised, a dead actor a :class:`ModelError`
        naming ``what`` it was doing (``item 3``, ``start-up``)."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise ModelError(f"Ray task for {what} failed: {exc}") from exc
        except ray.exceptions.RayActorError as exc:
            raise ModelError(f"the Ray worker doing {what} died: {exc}") from exc


def make_engine(name: str = "local", address: str | None = None, workers: int | None = None,
                device: str = "cpu", **ray_options: Any) -> LocalEngine | RayEngine:
    """``"local"`` or ``"ray"`` (``address``, ``workers`` and ``ray_options`` go to
    :class:`RayEngine`; a ``cuda`` ``device`` reserves one GPU per Ray worker unless
    ``gpus_per_worker`` says otherwise)."""
    if name == "local":
        if address:
            raise InputError("--address only applies to --engine ray")
        return LocalEngine()
    if name == "ray":
        if str(device).startswith("cuda"):
            ray_options.setdefault("gpus_per_worker", 1)
        return RayEngine(address=address, workers=workers, **ray_options)
    raise InputError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
