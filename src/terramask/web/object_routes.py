"""Routes of the object layer (:mod:`terramask.web.objects`), added by ``create_app``.

====================================  ==============================================================
``GET /objects``                      the layer: ``{revision, can_undo, can_redo, classes, objects}``
``POST /objects``                     accept a candidate as an object (201; 404 unknown prediction
                                      or class)
``PATCH /objects/{id}``               re-class (409 when ``version`` is not the current one)
``DELETE /objects/{id}?version=``     delete (409 likewise)
``POST /objects/undo`` / ``redo``     undo/redo the last change of the layer (409: nothing to undo)
``POST /classes``                     add a class ``{name, color}`` (201; 409 name exists)
``GET /objects.gpkg``                 download: GeoPackage in the scene CRS
``GET /objects.geojson``              download: GeoJSON in EPSG:4326
``GET /labels.tif``                   download: class ids on the scene grid (uint8, 0 = none)
====================================  ==============================================================

Changing routes answer with the whole layer (a few kB per hundred objects), so every
tab redraws from one answer. Polygons are made here, when a mask is accepted, never per click.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import Response

from terramask.io.scene import Scene
from terramask.web.object_files import candidate_polygon, geojson_bytes, gpkg_bytes, labels_tif_bytes, layer_payload
from terramask.web.objects import ObjectLayer
from terramask.web.schemas import AcceptRequest, ClassRequest, ReclassRequest, error_responses
from terramask.web.store import PredictionStore


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(content=data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


def add_object_routes(app: FastAPI, layer: ObjectLayer, scene: Scene, store: PredictionStore, stem: str) -> None:
    """Register the layer's routes on ``app``; ``stem`` names the downloads."""

    @app.get("/objects", responses=error_responses(500))
    def get_objects() -> dict:
        """The object layer: classes, objects (outlines in scene pixels), revision."""
        return layer_payload(layer, scene)

    @app.post("/objects", status_code=201, responses=error_responses(400, 404, 413, 422, 500))
    def accept_object(req: AcceptRequest) -> dict:
        """Accept a candidate as an object of class ``class_id``; returns the layer and
        the new object's ``id``."""
        _, prediction = store.get(req.session_id, req.prediction_id)
        geometry, count, area_m2 = candidate_polygon(prediction, req.candidate)
        obj = layer.add(geometry, req.class_id, float(prediction.candidates.scores[req.candidate]), count, area_m2)
        return layer_payload(layer, scene) | {"id": obj.id}

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

    @app.get("/objects.gpkg", response_class=Response, responses=error_responses(500))
    def objects_gpkg() -> Response:
        """The objects as a GeoPackage (layer ``objects``, scene CRS)."""
        return _download(gpkg_bytes(layer), "application/geopackage+sqlite3", f"{stem}-objects.gpkg")

    @app.get("/objects.geojson", response_class=Response, responses=error_responses(500))
    def objects_geojson() -> Response:
        """The objects as GeoJSON (EPSG:4326)."""
        return _download(geojson_bytes(layer), "application/geo+json", f"{stem}-objects.geojson")

    @app.get("/labels.tif", response_class=Response, responses=error_responses(500))
    def labels_tif() -> Response:
        """The class raster on the scene grid (uint8 class ids, 0 = no object)."""
        return _download(labels_tif_bytes(layer, scene), "image/tiff", f"{stem}-labels.tif")


def layer_folder(out_dir: Path, stem: str) -> Path:
    """Where the layer of scene ``stem`` lives: ``<out>/layers/<stem>/``."""
    return Path(out_dir) / "layers" / stem
