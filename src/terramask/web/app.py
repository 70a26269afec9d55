"""The browser app for interactive segmentation of one scene: ``create_app(scene, ...)``.

A thin shell over :class:`terramask.pipelines.prompted.predict.ScenePrompter` (one embedding per
encoded window, reused by every click) and
:func:`terramask.pipelines.prompted.outputs.write_prediction`. Routes:

====================================  ==============================================================
``GET /``                             the single-page UI (static files, no CDN: works offline)
``GET /healthz``                      ``{"status": "ok", "model", "scene", "version"}``
``GET /scene``                        size, CRS, transform, bounds (scene CRS and lon/lat), bands,
                                      a pixel -> lon/lat grid for the coordinate readout
``GET /scene/image.png?max_size=``    stretched RGBA preview of the whole scene (decimated when
                                      larger than ``max_size``; nodata transparent)
``GET /scene/window.png?col_off=&row_off=&width=&height=``  a native-resolution window
``POST /predict``                     candidates (score, areas, polygon GeoJSON, PNG) for points
                                      and boxes in pixel/lonlat/map frame; refinement with
                                      ``session_id`` + ``refine_from`` (see :mod:`.schemas`)
``GET /prediction/candidate?session_id=&prediction_id=&candidate=``  one candidate's pictures
``GET /prediction.geojson?session_id=&prediction_id=&candidate=``  one candidate's polygon
                                      (lon/lat, or ``frame=map`` for the scene CRS) as a download
``POST /export``                      write a chosen candidate like ``terramask predict``
``/objects``, ``/classes``, …         the scene's object layer (:mod:`terramask.web.object_routes`),
                                      saved under ``<out>/layers/<scene>/``
====================================  ==============================================================

Limits (:mod:`terramask.web.limits`): request bodies over ``max_body_bytes`` get 413
without being read; at most 1,000 points and 100 boxes per request (422); model work
runs on one worker thread, one request at a time, each within ``request_budget``
seconds (503 past it) and cancelled when its client disconnects or the server stops.

Errors are JSON ``{"detail", "type"}`` with the status from :mod:`terramask.web.errors`.
The scene is opened and the model loaded when the app is created, so a bad path or
model name fails at start-up with one line, not at the first click. A scene is not
thread-safe, so model calls (and the reads they need) run on the model worker under
one lock, and previews/map tiles under another on a second handle of the file (one
user, one scene: the tool runs on a workstation).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from terramask import __version__
from terramask.core.errors import PromptError, TerramaskError
from terramask.io.crs import prompt_frame
from terramask.io.scene import Scene, open_scene
from terramask.models.base import Backend
from terramask.pipelines.prompted.predict import FULL_SCENE_MAX, WINDOW_SIZE, ScenePrompter
from terramask.web.clicks import Answer, Click, EmbeddingLedger, answer_click
from terramask.web.errors import add_exception_handlers
from terramask.web.everything import EverythingJobs
from terramask.web.everything_routes import add_everything_routes
from terramask.web.export import check_name, export_candidate, free_name
from terramask.web.limits import MAX_BODY_BYTES, REQUEST_BUDGET_S, BodyLimit, Check, ModelWorker, off_loop
from terramask.web.object_routes import add_object_routes, layer_folder
from terramask.web.objects import ObjectLayer
from terramask.web.render import (
    MAX_PREVIEW_SIDE,
    MAX_WINDOW_SIDE,
    candidate_collection,
    candidate_picture,
    candidate_title,
    parse_window,
    png_bytes,
    prediction_payload,
    scene_info,
    scene_preview,
    window_picture,
)
from terramask.web.schemas import ID_PATTERN, ExportRequest, PredictRequest, error_responses
from terramask.web.server_timing import Laps
from terramask.web.sessions import add_session_routes
from terramask.web.store import MAX_PREDICTIONS, PredictionStore, new_id

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Default long side of the whole-scene preview the UI asks for.
PREVIEW_MAX_SIZE = 2048
#: Side of the native-resolution tiles the UI requests when zoomed in.
TILE_SIZE = 512
#: Default output root for exports.
DEFAULT_OUT_DIR = "terramask-exports"
_PREVIEW_CACHE = 4


class WebState:
    """What the routes share: the open scene, the prompter (backend + embeddings), the
    remembered predictions, the export root and the lock around scene/model work."""

    def __init__(self, scene: Scene, backend: Backend, prompter: ScenePrompter, store: PredictionStore,
                 out_dir: Path, owns_scene: bool, display: Scene | None = None,
                 request_budget: float = REQUEST_BUDGET_S, layer: ObjectLayer | None = None,
                 worker: ModelWorker | None = None) -> None:
        self.scene = scene
        self.backend = backend
        self.prompter = prompter
        self.store = store
        self.out_dir = out_dir
        self.owns_scene = owns_scene
        self.lock = worker.lock if worker is not None else threading.RLock()
        # The only long holder of ``lock``: model work, one request at a time, within a budget
        # (one worker for every scene of a multi-scene server: terramask.web.server).
        self.worker = worker or ModelWorker(self.lock, request_budget)
        # Previews and map tiles read through their own handle and lock, so panning stays
        # responsive while the encoder runs (a minute for ViT-H on a CPU).
        self.display = display or scene
        self.display_lock = threading.RLock() if display is not None else self.lock
        self.previews: OrderedDict[int, bytes] = OrderedDict()
        self.ledger = EmbeddingLedger()
        self.layer = layer or ObjectLayer(layer_folder(out_dir, _safe_stem(scene.path)), scene.crs)
        # segment everything: jobs on their own threads, each backend call under ``lock``
        # named like the layer's folder: the scene id on a multi-scene server, where two files
        # may share a stem (a/x.tif, b/x.tif -> x, x-2), else the file's stem
        self.everything = EverythingJobs(scene, backend, self.lock, out_dir / "work" / self.layer.folder.name)

    @property
    def model(self) -> str:
        return getattr(self.backend, "name", type(self.backend).__name__)

    def close(self) -> None:
        """Cancel model work, then close the files; a scene still used by an encoder run
        that does not stop within half a second is left to the process exit."""
        self.everything.close(wait=0.5)
        idle = self.worker.stop(wait=0.5)
        if self.display is not self.scene and not self.display.closed:
            self.display.close()
        if not idle:
            log.warning("the model is still busy; %s is closed when the process exits", self.scene.path)
        elif self.owns_scene and not self.scene.closed:
            self.scene.close()


def _safe_stem(path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem).strip("._-")
    return stem[:60] or "scene"


def _png(data: bytes, cache_seconds: int = 300) -> Response:
    return Response(content=data, media_type="image/png", headers={"Cache-Control": f"private, max-age={cache_seconds}"})


def _display_handle(scene: Scene) -> Scene | None:
    """A second handle on ``scene``'s file with the same bands and stretch, for display
    reads; ``None`` (share the first) when the file cannot be opened twice."""
    try:
        return open_scene(scene.source, bands=tuple(b + 1 for b in scene.bands), percentiles=scene.percentiles,
                          stretch=scene.stretch)
    except TerramaskError as exc:
        log.info("%s: display reads share the model's handle (%s)", scene.path, exc)
        return None


def create_app(
    scene: str | os.PathLike | Scene,
    backend: Backend | None = None,
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    runtime: str = "torch",
    bands: str | Sequence[int] | None = None,
    out_dir: str | os.PathLike | None = None,
    window_size: int = WINDOW_SIZE,
    full_scene_max: int = FULL_SCENE_MAX,
    max_predictions: int = MAX_PREDICTIONS,
    allowed_hosts: Sequence[str] | None = None,
    status_codes: dict | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_budget: float = REQUEST_BUDGET_S,
    layer: ObjectLayer | None = None,
    worker: ModelWorker | None = None,
    text_model: object | None = None,
) -> FastAPI:
    """The web app for interactive segmentation of ``scene``.

    ``scene``: a path (opened here with ``bands``, closed on shutdown) or an open
    :class:`Scene` (the caller closes it). ``backend``: a ready backend, else one is
    loaded with :func:`terramask.models.resolve.load_backend` from ``model``,
    ``checkpoint`` and ``device`` (no name: ``$TERRAMASK_MODEL``, the best cached SAM, else
    the weight-free classic engine). ``out_dir``: root folder of exports (default
    ``./terramask-exports``). ``window_size`` / ``full_scene_max`` are passed to
    :class:`ScenePrompter` (scenes larger than ``full_scene_max`` px are encoded in
    ``window_size`` windows around the clicks). Previews and map tiles are read through a second handle on the file, so
    they do not wait for the encoder. ``allowed_hosts``: accepted ``Host``
    headers (the CLI restricts a loopback server to loopback names, against DNS
    rebinding); ``None`` accepts any. ``status_codes`` extends the error table.
    ``max_body_bytes``: larger request bodies get 413 unread. ``request_budget``: seconds
    one request may take, waiting for the model included (503 past it; see
    :mod:`terramask.web.limits`). ``layer`` / ``worker``: the scene's object layer and
    the model worker when a multi-scene server shares them (:mod:`terramask.web.server`).
    ``text_model``: a :class:`~terramask.models.concept.resolve.TextModel` for the page's
    text box (segment everything's ``text`` jobs; ``None``: the box is off).

    Raises the terramask errors of opening the scene or loading the model
    (:class:`SceneNotFoundError`, :class:`UnknownModelError`, :class:`WeightsNotFoundError` …).
    """
    owns_scene = not isinstance(scene, Scene)
    if isinstance(scene, Scene):
        opened = scene
    else:
        opened = open_scene(scene, bands=bands if bands is None or isinstance(bands, str) else list(bands))
    try:
        if backend is None:
            from terramask.models.resolve import load_backend

            backend = load_backend(model, checkpoint=checkpoint, device=device, runtime=runtime, cache=True)
        prompter = ScenePrompter(opened, backend, window_size=window_size, full_scene_max=full_scene_max)
        display = _display_handle(opened)
    except BaseException:
        if owns_scene:
            opened.close()
        raise
    state = WebState(
        opened, backend, prompter, PredictionStore(max_predictions),
        Path(out_dir) if out_dir is not None else Path.cwd() / DEFAULT_OUT_DIR, owns_scene, display,
        request_budget, layer, worker,
    )
    state.everything.text = text_model

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(
        title="terramask",
        version=__version__,
        summary="Interactive segmentation of remote-sensing scenes with the Segment Anything family.",
        lifespan=lifespan,
        docs_url=None,  # Swagger/ReDoc pages load scripts from a CDN; the app must work offline
        redoc_url=None,
    )
    app.state.terramask = state
    add_exception_handlers(app, status_codes)
    add_object_routes(app, state, _safe_stem(opened.path))
    add_everything_routes(app, state.everything, state.layer, opened)
    add_session_routes(app, state)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # outermost: refuses before anything reads
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", responses=error_responses(500))
    def healthz() -> dict:
        """Liveness: the scene is open and the model loaded."""
        return {"status": "ok", "version": __version__, "model": state.model, "scene": Path(opened.path).name}

    @app.get("/scene", responses=error_responses(500))
    def scene_route() -> dict:
        """The scene (size, CRS, transform, bounds, bands, lon/lat grid) and the app's settings."""
        with state.display_lock:
            info = scene_info(state.display)
        return info | {
            "model": state.model,
            "encoding": {"full_scene_max": prompter.full_scene_max, "window_size": prompter.window_size},
            "preview": {"max_size": PREVIEW_MAX_SIZE, "tile_size": TILE_SIZE, "max_window": MAX_WINDOW_SIDE},
            "out_dir": str(state.out_dir),
        }

    @app.get("/scene/image.png", response_class=Response,
             responses={200: {"description": "RGBA PNG", "content": {"image/png": {}}}, **error_responses(400, 422, 500)})
    def scene_image(max_size: int = Query(PREVIEW_MAX_SIZE, ge=16, le=MAX_PREVIEW_SIDE)) -> Response:
        """RGBA PNG of the whole scene, long side at most ``max_size`` (never upsampled)."""
        with state.display_lock:
            data = state.previews.get(max_size)
            if data is None:
                data = png_bytes(scene_preview(state.display, max_size))
                state.previews[max_size] = data
                while len(state.previews) > _PREVIEW_CACHE:
                    state.previews.popitem(last=False)
            state.previews.move_to_end(max_size)
        return _png(data)

    @app.get("/scene/window.png", response_class=Response,
             responses={200: {"description": "RGBA PNG", "content": {"image/png": {}}}, **error_responses(400, 422, 500)})
    def scene_window(col_off: int = Query(..., ge=0), row_off: int = Query(..., ge=0),
                     width: int = Query(..., ge=1), height: int = Query(..., ge=1)) -> Response:
        """RGBA PNG of a window at native resolution (at most ``MAX_WINDOW_SIDE`` px a side)."""
        with state.display_lock:
            window = parse_window(state.display, col_off, row_off, width, height)
            data = png_bytes(window_picture(state.display, window))
        return _png(data)

    @app.post("/predict", response_model=dict, responses=error_responses(400, 404, 413, 422, 500, 503))
    async def predict(req: PredictRequest, request: Request) -> Response:
        """Candidate masks for the prompts, best first.

        Returns ``{session_id, prediction_id, model, window, refined, note, prompts (scene
        pixels, all of them, earlier ones included), candidates: [{index, number, title,
        score, area_px, area_m2, bbox_px, png}], timings}``; polygons only with
        ``include: ["geojson"]`` (see :mod:`terramask.web.clicks` for ``refined``/``note``
        and the embedding timings). A ``Server-Timing`` header says where the time went
        (:func:`terramask.web.clicks.answer_click` laps, ``render``, ``json``).
        """
        laps = Laps()
        frame, crs = prompt_frame(req.frame, opened.crs)
        click = Click(
            points=np.array([[p.x, p.y] for p in req.points], dtype=np.float64).reshape(-1, 2),
            labels=np.array([p.label for p in req.points], dtype=np.int64),
            boxes=np.array(req.boxes, dtype=np.float64).reshape(-1, 4),
            frame=frame, crs=crs, multimask=req.multimask,
            refine_from=req.refine_from, refine_candidate=req.refine_candidate,
        )
        session_id = req.session_id or new_id()
        started = time.monotonic()
        if req.refine_from is not None:
            if len(click.boxes):
                raise PromptError("refinement adds points only; to change the box, predict again without refine_from")
            if not len(click.points):
                raise PromptError("refine_from needs at least one new point")

        def work(check: Check) -> Answer:
            laps.lap("queue")
            return answer_click(prompter, state.store, state.ledger, session_id, click, check, laps)

        answer = await state.worker.run(work, "prediction", request.is_disconnected)
        laps.lap("wake")

        def render() -> bytes:
            laps.lap("handoff")
            payload = _prediction_payload(answer, session_id, tuple(req.include))
            laps.lap("render")
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
            laps.lap("json")
            return body

        body = await off_loop(render, "rendering the candidates", state.worker.budget - (time.monotonic() - started))
        laps.lap("respond")
        return Response(body, media_type="application/json", headers={"Server-Timing": laps.header()})

    def _prediction_payload(answer: Answer, session_id: str, include: tuple[str, ...]) -> dict:
        prediction, prediction_id = answer.prediction, answer.prediction_id
        log.info("prediction %s/%s: %d candidate(s), best %.3f", session_id, prediction_id,
                 len(prediction.candidates), float(prediction.candidates.scores[0]))
        return prediction_payload(prediction, prediction_id, session_id, opened, refined=answer.refined,
                                  note=answer.note, include=include)

    @app.get("/prediction/candidate", responses=error_responses(400, 404, 422, 500))
    def prediction_candidate(
        session_id: str = Query(..., pattern=ID_PATTERN),
        prediction_id: str = Query("last", pattern=ID_PATTERN),
        candidate: int = Query(0, ge=0),
    ) -> dict:
        """One candidate's pictures, ``{prediction_id, index, png}`` with ``png`` as in a
        ``/predict`` answer (``null`` for an empty mask): a click asked with ``include:
        ["png_best"]`` carries the best candidate's only; the page fetches the others when
        it shows them."""
        prediction_id, prediction = state.store.get(session_id, prediction_id)
        return {"prediction_id": prediction_id, "index": candidate,
                "png": candidate_picture(prediction, candidate, opened)}

    @app.get("/prediction.geojson", response_class=JSONResponse,
             responses={200: {"content": {"application/geo+json": {}}}, **error_responses(400, 404, 422, 500)})
    def prediction_geojson(
        session_id: str = Query(..., pattern=ID_PATTERN),
        prediction_id: str = Query("last", pattern=ID_PATTERN),
        candidate: int = Query(0, ge=0),
        frame: str = Query("lonlat", pattern="^(lonlat|map)$"),
    ) -> JSONResponse:
        """The polygon of one candidate as a GeoJSON FeatureCollection, in lon/lat
        (RFC 7946, default) or the scene CRS (``frame=map``); served as a download."""
        prediction_id, prediction = state.store.get(session_id, prediction_id)  # the store has its own lock
        collection = candidate_collection(prediction, candidate, lonlat=frame == "lonlat")
        filename = f"{_safe_stem(opened.path)}-mask{candidate + 1}.geojson"
        return JSONResponse(collection, media_type="application/geo+json",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.post("/export", responses=error_responses(400, 404, 409, 413, 422, 500, 503))
    async def export(req: ExportRequest, request: Request) -> dict:
        """Write the chosen candidate (mask.tif, mask.gpkg, mask.geojson, overlay.png,
        logits.npy, result.json) into ``<out>/<name>``; returns the folder and the paths."""

        def work(check: Check) -> dict:
            prediction_id, prediction = state.store.get(req.session_id, req.prediction_id)
            name = check_name(req.name) if req.name else free_name(state.out_dir, f"{_safe_stem(opened.path)}-object")
            rgb8 = prompter.session(prediction.window or opened.window).rgb8
            check()
            folder, paths = export_candidate(prediction, req.candidate, opened, rgb8, state.out_dir, name,
                                             overwrite=req.overwrite)
            log.info("exported %s candidate %d to %s", prediction_id, req.candidate, folder)
            return {
                "folder": str(folder),
                "name": folder.name,
                "files": {key: str(path) for key, path in sorted(paths.items())},
                "prediction_id": prediction_id,
                "candidate": req.candidate,
                "number": req.candidate + 1,
                "title": candidate_title(req.candidate + 1, float(prediction.candidates.scores[req.candidate])),
                "score": float(prediction.candidates.scores[req.candidate]),
            }

        return await state.worker.run(work, "export", request.is_disconnected)

    return app
