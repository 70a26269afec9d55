"""The multi-scene server of ``terramask serve DIR_OR_FILES...``: ``create_server(...)``.

Each *view* (a scene, its display bands, a model) is one single-scene app made by
:func:`terramask.web.app.create_app`, opened when first asked for, and served under

``/scenes/{scene_id}/{bands}/{model}/...``   e.g. ``/scenes/s2_tile/4-3-2/classic/predict``

with ``bands`` the 1-based bands joined by ``-`` (``default``: the scene's default) and
``model`` a name from ``GET /scenes`` (``default``: the model the server started with).
Every path outside ``/scenes`` goes to the default view (first scene, default bands and
model), so the page at ``/`` and every single-scene client keep working. The page uses
relative URLs, so the same page works under each prefix.

Views of one scene share its object layer (one per scene, ``<out>/layers/<scene id>/``);
all views share one model worker (model work one job at a time, whatever the scene). At
most :data:`MAX_VIEWS` views are open; the least recently used idle one is closed to
open another. Models other than the started one (``classic``, and checkpoints already in
the model cache) are loaded when a view first asks for them.

Own routes: ``GET /scenes`` (scenes, models, upload limit) and ``POST /scenes?name=``
(upload, :mod:`terramask.web.uploads`). ``/openapi.json`` documents them with the
default view's routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import RedirectResponse
from starlette.types import Receive, Scope, Send

from terramask import __version__
from terramask.core.errors import BandError, TerramaskError
from terramask.io.scene import open_scene
from terramask.models.base import Backend
from terramask.web.app import DEFAULT_OUT_DIR, create_app
from terramask.web.errors import add_exception_handlers
from terramask.web.limits import REQUEST_BUDGET_S, ModelWorker
from terramask.web.object_routes import layer_folder
from terramask.web.objects import ObjectLayer
from terramask.web.scenes import SCENE_ID_PATTERN, SceneCatalog, SceneNotListed, ViewsBusy
from terramask.web.schemas import error_responses
from terramask.web.uploads import (
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_UPLOAD_QUOTA_MB,
    UploadQuota,
    UploadsDisabled,
    check_raster,
    publish,
    save_upload,
    upload_name,
)

log = logging.getLogger(__name__)

#: Views (scene x bands x model) open at once.
MAX_VIEWS = 8
#: The ``bands`` segment: ``default`` or 1-based band numbers joined by ``-``.
BANDS_PATTERN = r"^(default|[1-9][0-9]{0,4}(-[1-9][0-9]{0,4}){0,2})$"
#: The ``model`` segment: ``default`` or a model name.
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PREFIX = "/scenes/{scene_id}/{bands}/{model}"
_BANDS = re.compile(BANDS_PATTERN)
_MODEL = re.compile(MODEL_PATTERN)
_VIEW_ROOT = re.compile(r"/scenes/[^/]+/[^/]+/[^/]+")


@dataclass(frozen=True)
class ViewKey:
    scene_id: str
    bands: tuple[int, ...] | None  # 1-based; None = the scene's default
    model: str

    @property
    def prefix(self) -> str:
        bands = "default" if self.bands is None else "-".join(map(str, self.bands))
        return f"scenes/{self.scene_id}/{bands}/{self.model}/"


def parse_bands(text: str) -> tuple[int, ...] | None:
    """``"4-3-2"`` -> ``(4, 3, 2)``; ``"default"`` -> ``None``; else :class:`BandError`."""
    if _BANDS.fullmatch(text) is None:
        raise BandError(f"bands {text[:40]!r}: give 1 or 3 band numbers joined by '-', e.g. 4-3-2, or 'default'")
    return None if text == "default" else tuple(int(b) for b in text.split("-"))


class Models:
    """The models a server offers: the one it started with (loaded at start) and, loaded
    when first asked for, ``classic`` and the registry models whose checkpoints are in
    the model cache."""

    def __init__(self, backend: Backend, device: str, runtime: str, extra: Sequence[str] | None = None) -> None:
        self.default = _model_name(backend)
        self.device, self.runtime = device, runtime
        self._loaded: dict[str, Backend] = {self.default: backend}
        self._offered = [self.default] + [n for n in (extra if extra is not None else _local_models()) if n != self.default]
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._offered)

    def get(self, name: str) -> Backend:
        """The backend of ``name`` (``default``: the started one), loading it once."""
        name = self.default if name == "default" else name
        if name not in self._offered:
            raise SceneNotListed(f"model {name[:64]!r} is not offered here; choose one of {', '.join(self._offered)}")
        with self._lock:
            if name not in self._loaded:
                from terramask.models.resolve import load_backend

                self._loaded[name] = load_backend(name, device=self.device, runtime=self.runtime, cache=True)
            return self._loaded[name]

    def canonical(self, name: str) -> str:
        return self.default if name == "default" else name


def _model_name(backend: Backend) -> str:
    name = str(getattr(backend, "name", type(backend).__name__))
    return name if _MODEL.fullmatch(name) else re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._")[:64] or "model"


def _local_models() -> list[str]:
    """``classic`` and the registry models whose checkpoints are cached on this machine."""
    from terramask.models.download import is_cached
    from terramask.models.registry import list_specs

    names = ["classic"]
    for spec in list_specs():
        try:
            if spec.needs_weights and is_cached(spec):
                names.append(spec.name)
        except (OSError, TerramaskError):
            continue
    return names


class Views:
    """Open views by key, least recently used first; layers by scene id."""

    def __init__(self, catalog: SceneCatalog, models: Models, out_dir: Path, worker: ModelWorker,
                 app_options: dict[str, Any], max_views: int = MAX_VIEWS) -> None:
        self.catalog, self.models, self.out_dir, self.worker = catalog, models, out_dir, worker
        self.app_options = app_options
        self.max_views = max_views
        self._apps: OrderedDict[ViewKey, FastAPI] = OrderedDict()
        self._busy: dict[ViewKey, int] = {}
        self._layers: dict[str, ObjectLayer] = {}
        self._lock = threading.Lock()
        self._opening = threading.Lock()  # one view opened at a time (scene + maybe a model)
        self.default_key = ViewKey(catalog.default.id, None, models.default)

    def key(self, scene_id: str, bands: str, model: str) -> ViewKey:
        entry = self.catalog.get(scene_id)
        name = self.models.canonical(model)
        if _MODEL.fullmatch(name) is None or name not in self.models.names:
            raise SceneNotListed(f"model {model[:64]!r} is not offered here; choose one of "
                                 f"{', '.join(self.models.names)}")
        return ViewKey(entry.id, parse_bands(bands), name)

    def open(self, key: ViewKey) -> FastAPI:
        """The app of ``key``, opened when missing (blocking: scene, maybe a model)."""
        with self._lock:
            app = self._apps.get(key)
            if app is not None:
                self._apps.move_to_end(key)
                self._busy[key] = self._busy.get(key, 0) + 1
                return app
        with self._opening:
            with self._lock:
                app = self._apps.get(key)
                if app is None:
                    self._make_room()
            if app is None:
                app = self._create(key)
            with self._lock:
                self._apps[key] = app
                self._apps.move_to_end(key)
                self._busy[key] = self._busy.get(key, 0) + 1
                return app

    def open_if_ready(self, key: ViewKey) -> FastAPI | None:
        """The app of ``key`` when it is open and nothing holds the views' lock, else
        ``None`` (then :meth:`open`, off the event loop): a request to an open view (every
        click) needs no thread hop."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            app = self._apps.get(key)
            if app is not None:
                self._apps.move_to_end(key)
                self._busy[key] = self._busy.get(key, 0) + 1
            return app
        finally:
            self._lock.release()

    @property
    def default_view(self) -> FastAPI:
        """The default view's app (opened at start-up; reopened if it was closed)."""
        app = self.open(self.default_key)
        self.release(self.default_key)
        return app

    def release(self, key: ViewKey) -> None:
        with self._lock:
            self._busy[key] = max(0, self._busy.get(key, 1) - 1)

    def _create(self, key: ViewKey) -> FastAPI:
        entry = self.catalog.get(key.scene_id)
        backend = self.models.get(key.model)
        scene = open_scene(entry.source, bands=key.bands)
        try:
            layer = self._layers.get(key.scene_id)
            if layer is None:
                layer = self._layers[key.scene_id] = ObjectLayer(layer_folder(self.out_dir, key.scene_id), scene.crs)
        except BaseException:
            scene.close()
            raise
        try:
            app = create_app(scene, backend, out_dir=self.out_dir, layer=layer, worker=self.worker, **self.app_options)
        except BaseException:
            scene.close()
            raise
        app.state.terramask.owns_scene = True  # closed with the view
        log.info("opened view %s", key.prefix)
        return app

    def _make_room(self) -> None:
        """Close the least recently used idle view while :data:`max_views` are open."""
        while len(self._apps) >= self.max_views:
            idle = next((k for k in self._apps if self._busy.get(k, 0) == 0), None)
            if idle is None:
                raise ViewsBusy(f"{len(self._apps)} scene views are busy; try again in a moment")
            app = self._apps.pop(idle)
            self._busy.pop(idle, None)
            _close_view(app)
            log.info("closed view %s", idle.prefix)

    def close(self) -> None:
        with self._lock:
            apps = list(self._apps.values())
            self._apps.clear()
        self.worker.stop(wait=0.5)
        for app in apps:
            _close_view(app)


def _close_view(app: FastAPI) -> None:
    """Cancel a view's segment-everything jobs and close its files (model work still
    running on them, if any, fails with a closed-scene error). The shared model worker
    stays: :meth:`WebState.close` would stop it for every view."""
    state = app.state.terramask
    jobs = getattr(state, "everything", None)
    if jobs is not None:
        jobs.close(wait=0.5)
    state.everything.close(wait=0.5)  # segment-everything jobs of the view stop (nothing kept)
    if state.display is not state.scene and not state.display.closed:
        state.display.close()
    if not state.scene.closed:
        state.scene.close()


class ViewApp:
    """ASGI app mounted at :data:`PREFIX`: hands the request to its view's app."""

    def __init__(self, views: Views) -> None:
        self.views = views

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        key = self.views.key(params["scene_id"], params["bands"], params["model"])
        app = self.views.open_if_ready(key)
        if app is None:
            app = await asyncio.to_thread(self.views.open, key)
        try:
            await app(scope, receive, send)
        finally:
            self.views.release(key)


class DefaultView(ViewApp):
    """ASGI app for every other path: the default view (and a redirect from a view's
    prefix without its closing ``/``, so the page's relative URLs resolve under it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and _VIEW_ROOT.fullmatch(path):
            await RedirectResponse(path + "/", status_code=307)(scope, receive, send)
            return
        key = self.views.default_key
        app = self.views.open_if_ready(key)
        if app is None:
            app = await asyncio.to_thread(self.views.open, key)
        try:
            await app(scope, receive, send)
        finally:
            self.views.release(key)


def create_server(
    sources: Sequence[str | os.PathLike],
    backend: Backend | None = None,
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    runtime: str = "torch",
    bands: str | None = None,
    out_dir: str | os.PathLike | None = None,
    allowed_hosts: Sequence[str] | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    upload_quota_mb: float = DEFAULT_UPLOAD_QUOTA_MB,
    models: Sequence[str] | None = None,
    max_views: int = MAX_VIEWS,
    request_budget: float = REQUEST_BUDGET_S,
    **app_options: Any,
) -> FastAPI:
    """The app of ``terramask serve``: scenes from ``sources`` (files, directories of
    GeoTIFF/PNG/JPEG files, or anything :func:`open_scene` opens), one view per scene,
    bands and model (module docstring).

    ``backend`` (or ``model``/``checkpoint``/``device``/``runtime``, loaded here) is the
    default model; ``models``: other model names to offer (default: ``classic`` and the
    cached registry models). ``bands``: display bands of the default view. Uploads go to
    ``<out>/uploads/`` up to ``max_upload_mb`` MB each (0: no uploads) and
    ``upload_quota_mb`` MB in all (0: no total limit). The default view
    is opened here, so a bad first scene or model fails at start-up with one line.
    Other ``app_options`` go to :func:`create_app` (``window_size``, ``max_body_bytes`` …).
    """
    out = Path(out_dir) if out_dir is not None else Path.cwd() / DEFAULT_OUT_DIR
    catalog = SceneCatalog(sources, upload_dir=out / "uploads")
    if backend is None:
        from terramask.models.resolve import load_backend

        backend = load_backend(model, checkpoint=checkpoint, device=device, runtime=runtime, cache=True)
    offered = Models(backend, device, runtime, models)
    worker = ModelWorker(budget=request_budget)
    options = dict(app_options, request_budget=request_budget, allowed_hosts=allowed_hosts)
    views = Views(catalog, offered, out, worker, options, max_views)
    default_bands = parse_bands(bands.replace(",", "-").replace(" ", "")) if bands else None
    views.default_key = ViewKey(catalog.default.id, default_bands, offered.default)
    try:
        views.open(views.default_key)
        views.release(views.default_key)
    except BaseException:
        views.close()
        raise
    max_upload_bytes = int(max_upload_mb * 1_000_000)
    quota = UploadQuota(catalog.upload_dir or out / "uploads", int(upload_quota_mb * 1_000_000))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        views.close()

    app = FastAPI(title="terramask", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="Interactive segmentation of remote-sensing scenes with the Segment Anything family.")
    app.state.views = views
    app.state.terramask = views.default_view.state.terramask  # the first scene's state, as a one-scene app has
    add_exception_handlers(app)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.get("/scenes", responses=error_responses(500))
    def list_scenes() -> dict:
        """The scenes (``id``, ``name``, ``uploaded``) and models this server offers, the
        default view, the upload limit (``max_upload_mb``, 0 = no uploads) and the room
        left in the upload folder's quota (``upload_room_mb``, ``null`` without a quota)."""
        room = quota.room()
        return {
            "scenes": [e.to_dict() for e in catalog.entries()],
            "models": offered.names,
            "default": {"scene": catalog.default.id, "model": offered.default,
                        "bands": "default" if default_bands is None else "-".join(map(str, default_bands))},
            "max_upload_mb": max_upload_mb,
            "upload_room_mb": None if room is None else room / 1_000_000,
        }

    @app.post("/scenes", status_code=201, responses=error_responses(400, 403, 413, 422, 500), openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}})
    async def upload_scene(request: Request, name: str = Query(..., min_length=1, max_length=255)) -> dict:
        """Upload a GeoTIFF/PNG/JPEG (the request body is the file) into the server's
        upload folder; returns the new scene and the relative ``url`` of its page."""
        if max_upload_bytes <= 0:
            raise UploadsDisabled("uploads are switched off on this server (terramask serve --max-upload-mb 0)")
        final_name = upload_name(name)
        announced = request.headers.get("content-length")
        tmp = await save_upload(request.stream(), catalog.upload_dir or out / "uploads", final_name,
                                max_upload_bytes, int(announced) if announced and announced.isdigit() else None,
                                quota=quota)
        size, published = tmp.stat().st_size, False
        try:
            await asyncio.to_thread(check_raster, tmp, final_name)
            path = publish(tmp, tmp.parent, final_name)
            published = True
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            quota.end(size, published)
        entry = catalog.add_upload(path)
        return {"scene": entry.to_dict(), "url": ViewKey(entry.id, None, offered.default).prefix}

    view_app = ViewApp(views)
    app.mount(PREFIX, view_app)
    app.mount("/", DefaultView(views))
    app.openapi = lambda: _openapi(app, views)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, views: Views) -> dict:
    """The server's own routes and the default view's, whose routes are also served
    under :data:`PREFIX` for every scene, bands and model (documented once, here)."""
    if app.openapi_schema:
        return app.openapi_schema
    own = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    default = views.open(views.default_key)
    try:
        child = default.openapi()
    finally:
        views.release(views.default_key)
    schema = dict(child)
    schema["paths"] = {**child["paths"], **own["paths"]}
    schema["components"] = {"schemas": {**child.get("components", {}).get("schemas", {}),
                                        **own.get("components", {}).get("schemas", {})}}
    schema["info"] = dict(child["info"], description=(
        f"Every route below except /scenes is also served under {PREFIX}/... for any scene (id pattern "
        f"{SCENE_ID_PATTERN}), bands ({BANDS_PATTERN}) and model ({MODEL_PATTERN}) that GET /scenes lists."))
    app.openapi_schema = schema
    return schema
