"""Routes of the object layer (:mod:`terramask.web.objects`), added by ``create_app``.

====================================  ==============================================================
``GET /objects``                      the layer: ``{revision, can_undo, can_redo, classes, objects}``
``POST /objects``                     accept a candidate as an object (201; 404 unknown prediction
                                      or class); with ``object_id`` + ``version``: replace that
                                      object (a re-opened one, refined: same id, new version)
``POST /objects/{id}/reopen``         re-open an object for refinement: its stored prompts are
                                      predicted again in the caller's session (the answer of
                                      ``/predict`` plus ``reopened``)
``PATCH /objects/{id}``               re-class (409 when ``version`` is not the current one)
``DELETE /objects/{id}?version=``     delete (409 likewise)
``POST /objects/undo`` / ``redo``     undo/redo the last change of the layer (409: nothing to undo)
``POST /classes``                     add a class ``{name, color}`` (201; 409 name exists)
``GET /objects.gpkg``                 download: GeoPackage in the scene CRS
``GET /objects.geojson``              download: GeoJSON in EPSG:4326
``GET /objects.fgb``                  download: FlatGeobuf in the scene CRS
``GET /labels.tif``                   download: class ids on the scene grid (uint8, 0 = none)
====================================  ==============================================================

Changing routes answer with the whole layer (a few kB per hundred objects), so every
tab redraws from one answer. Polygons are made here, when a mask is accepted, never per click.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from terramask.core.errors import InputError
from terramask.io.scene import Scene
from terramask.pipelines.prompted.predict import ScenePrompter
from terramask.pipelines.prompted.session import Prediction
from terramask.web.clicks import EmbeddingLedger, reopen_object, reopen_prompts
from terramask.web.limits import Check, ModelWorker
from terramask.web.object_files import (
    candidate_polygon,
    fgb_bytes,
    geojson_bytes,
    gpkg_bytes,
    labels_tif_bytes,
    layer_payload,
    object_bbox_px,
)
from terramask.web.objects import ObjectLayer
from terramask.web.render import prediction_payload, scene_prompts
from terramask.web.schemas import AcceptRequest, ClassRequest, ReclassRequest, ReopenRequest, error_responses
from terramask.web.store import PredictionStore


class LayerContext(Protocol):
    """What the layer's routes use of the app's state (:class:`terramask.web.app.WebState`)."""

    layer: ObjectLayer
    scene: Scene
    store: PredictionStore
    prompter: ScenePrompter
    ledger: EmbeddingLedger
    worker: ModelWorker


def _file(status: int, media_type: str) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entry: a file download of ``media_type``."""
    return {status: {"description": "The file, as an attachment", "content": {media_type: {}}}}


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(content=data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


def accepted_prompts(prediction: Prediction, candidate: int, scene: Scene) -> dict:
    """The prompts to keep with an object accepted from ``candidate`` of ``prediction``
    (scene pixels; of several boxes only the candidate's own), with the candidate index
    and whether several candidates were asked for, so a re-open shows the same one."""
    prompts = scene_prompts(prediction, scene)
    boxes = prompts["boxes"]
    if len(boxes) > 1:  # one mask per box: the candidate is its box's
        boxes = [boxes[min(candidate, len(boxes) - 1)]]
        candidate = 0
    multimask = len(prediction.candidates) > 1 and len(boxes) <= 1
    return {"points": prompts["points"], "labels": prompts["labels"], "boxes": boxes,
            "candidate": candidate if multimask else 0, "multimask": multimask}


def add_object_routes(app: FastAPI, state: LayerContext, stem: str) -> None:
    """Register the layer's routes on ``app``; ``stem`` names the downloads."""
    layer, scene, store = state.layer, state.scene, state.store

    @app.get("/objects", responses=error_responses(500))
    def get_objects() -> dict:
        """The object layer: classes, objects (outlines in scene pixels), revision."""
        return layer_payload(layer, scene)

    @app.post("/objects", status_code=201, responses=error_responses(400, 404, 409, 413, 422, 500))
    def accept_object(req: AcceptRequest) -> dict:
        """Accept a candidate as an object of class ``class_id``; returns the layer and
        the object's ``id``. With ``object_id`` and ``version`` the candidate replaces
        that object (same id, new version; 409 when ``version`` is not its current one)."""
        if (req.object_id is None) != (req.version is None):
            raise InputError("object_id and version go together: both name the object a refined mask replaces")
        _, prediction = store.get(req.session_id, req.prediction_id)
        geometry, count, area_m2 = candidate_polygon(prediction, req.candidate)
        score = float(prediction.candidates.scores[req.candidate])
        prompts = accepted_prompts(prediction, req.candidate, scene)
        if req.object_id is not None and req.version is not None:
            obj = layer.replace(req.object_id, req.version, geometry, req.class_id, score, count, area_m2, prompts)
        else:
            obj = layer.add(geometry, req.class_id, score, count, area_m2, prompts)
        return layer_payload(layer, scene) | {"id": obj.id}

    @app.post("/objects/{object_id}/reopen", responses=error_responses(400, 404, 409, 413, 422, 500, 503))
    async def reopen(object_id: int, req: ReopenRequest, request: Request) -> dict:
        """Re-open object ``object_id`` (at ``version``) for refinement: its stored prompts
        (or its bounding box) are predicted again in ``session_id``; answers like
        ``/predict`` plus ``reopened: {id, version, class_id, candidate}``. Accepting with
        ``object_id`` + ``version`` then replaces the object."""
        obj = layer.current(object_id, req.version)
        prompts = reopen_prompts(obj.prompts, object_bbox_px(obj, scene))
        multimask = bool((obj.prompts or {}).get("multimask", True))
        candidate = int((obj.prompts or {}).get("candidate", 0))

        def work(check: Check):
            return reopen_object(state.prompter, store, state.ledger, req.session_id, prompts, multimask, check)

        answer = await state.worker.run(work, "re-opening an object", request.is_disconnected)
        candidate = min(candidate, len(answer.prediction.candidates) - 1)
        payload = prediction_payload(answer.prediction, answer.prediction_id, req.session_id, scene)
        return payload | {"reopened": {"id": obj.id, "version": obj.version, "class_id": obj.class_id,
                                       "candidate": candidate}}

    @app.patch("/objects/{object_id}", responses=error_responses(404, 409, 413, 422, 500))
    def reclass_object(object_id: int, req: ReclassRequest) -> dict:
        """Give an object another class; ``version`` must be the object's current one."""
        layer.reclass(object_id, req.class_id, req.version)
        return layer_payload(layer, scene)

    @app.delete("/objects/{object_id}", responses=error_responses(404, 409, 422, 500))
    def delete_object(object_id: int, version: Annotated[int, Query(ge=0, le=2**62)]) -> dict:
        """Delete an object; ``version`` must be the object's current one."""
        layer.delete(object_id, version)
        return layer_payload(layer, scene)

    @app.post("/objects/undo", responses=error_responses(409, 413, 500))
    def undo_objects() -> dict:
        """Undo the layer's last change (any tab's)."""
        layer.undo()
        return layer_payload(layer, scene)

    @app.post("/objects/redo", responses=error_responses(409, 413, 500))
    def redo_objects() -> dict:
        """Redo the last undone change."""
        layer.redo()
        return layer_payload(layer, scene)

    @app.post("/classes", status_code=201, responses=error_responses(400, 409, 413, 422, 500))
    def add_class(req: ClassRequest) -> dict:
        """Add a class to the layer's class list; returns the layer and the class ``id``."""
        new = layer.add_class(req.name, req.color)
        return layer_payload(layer, scene) | {"id": new["id"]}

    @app.get("/objects.gpkg", response_class=Response, responses=_file(200, "application/geopackage+sqlite3") | error_responses(500))
    def objects_gpkg() -> Response:
        """The objects as a GeoPackage (layer ``objects``, scene CRS)."""
        return _download(gpkg_bytes(layer), "application/geopackage+sqlite3", f"{stem}-objects.gpkg")

    @app.get("/objects.geojson", response_class=Response, responses=_file(200, "application/geo+json") | error_responses(500))
    def objects_geojson() -> Response:
        """The objects as GeoJSON (EPSG:4326)."""
        return _download(geojson_bytes(layer), "application/geo+json", f"{stem}-objects.geojson")

    @app.get("/objects.fgb", response_class=Response, responses=_file(200, "application/vnd.flatgeobuf") | error_responses(500))
    def objects_fgb() -> Response:
        """The objects as FlatGeobuf (scene CRS, with a spatial index)."""
        return _download(fgb_bytes(layer), "application/vnd.flatgeobuf", f"{stem}-objects.fgb")

    @app.get("/labels.tif", response_class=Response, responses=_file(200, "image/tiff") | error_responses(500))
    def labels_tif() -> Response:
        """The class raster on the scene grid (uint8 class ids, 0 = no object)."""
        return _download(labels_tif_bytes(layer, scene), "image/tiff", f"{stem}-labels.tif")


def layer_folder(out_dir: Path, stem: str) -> Path:
    """Where the layer of scene ``stem`` lives: ``<out>/layers/<stem>/``."""
    return Path(out_dir) / "layers" / stem
