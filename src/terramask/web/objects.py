"""The object layer of a scene: accepted masks as classed polygons, saved as they change.

One layer per scene, shared by every tab on purpose (a second tab or a restart shows the
same objects). An object is a polygon in the scene CRS (world frame of the scene's
transform) with a class from the layer's class list (name + colour), the candidate's
score and its area (pixel count x pixel area, in m² where the CRS has ground units).

**Versions.** Every change gets the layer's next revision number; an object's
``version`` is the revision of its last change. Re-classing or deleting an object names
the version the page last saw: another version (a second tab changed it meanwhile) is
refused with :class:`VersionConflict` (HTTP 409), so a stale tab cannot silently
overwrite; last write wins only for writes made on the current version.

**Undo/redo** restore the layer as it was before/after a change (classes included); the
objects they bring back get new versions. The history is kept in memory (at most
:data:`MAX_HISTORY` steps) and starts empty after a restart.

**Prompts.** An object keeps the prompts that made it (scene pixels: ``points`` ``[[x, y]]``,
``labels``, ``boxes`` xyxy), so it can be re-opened for refinement later; accepting a
refined mask *replaces* the object (:meth:`ObjectLayer.replace`: same id, new version).

**Files.** ``objects.gpkg`` (layer ``objects``, scene CRS; fields ``id``, ``class_id``,
``class_name``, ``color``, ``version``, ``score``, ``area_px``, ``area_m2``, ``prompts``
(JSON text, empty when unknown)) and
``layer.json`` (classes, revision, next id) in the layer folder, each written atomically
(:mod:`terramask.io.atomic`) after every change, the GeoPackage first.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import shapely

from terramask.core.errors import InputError, TerramaskError
from terramask.io.atomic import write_json
from terramask.io.vectors import Feature, write_vector

#: Undo steps kept per layer.
MAX_HISTORY = 200
#: Classes a layer may have.
MAX_CLASSES = 64
COLOR = re.compile(r"#[0-9a-fA-F]{6}")
#: The class list of a new layer.
DEFAULT_CLASSES: tuple[dict[str, Any], ...] = ({"id": 1, "name": "object", "color": "#1e90ff"},)
SCHEMA = {"id": "int", "class_id": "int", "class_name": "str", "color": "str", "version": "int",
          "score": "float", "area_px": "int", "area_m2": "float", "prompts": "str"}


class ObjectNotFound(TerramaskError, LookupError):
    """No object (or class) with that id in the layer."""


class VersionConflict(TerramaskError):
    """The change names an older version of the object (or the layer) than the current one."""


@dataclass(frozen=True)
class LayerObject:
    """One accepted object: ``geometry`` in the scene CRS (shapely polygon/multipolygon)."""

    id: int
    class_id: int
    version: int
    geometry: Any
    score: float
    area_px: int
    area_m2: float | None
    prompts: dict | None = None


@dataclass(frozen=True)
class Snapshot:
    """The layer's content at one revision (for undo/redo)."""

    objects: tuple[LayerObject, ...]
    classes: tuple[dict, ...]


def check_prompts(prompts: dict | None) -> dict | None:
    """``prompts`` as stored with an object: ``{"points": [[x, y]], "labels": [0|1],
    "boxes": [[x0, y0, x1, y1]]}`` in scene pixels (plain floats and ints), optionally
    ``candidate`` (the accepted one, 0-based) and ``multimask``; or ``None``."""
    if prompts is None:
        return None
    try:
        points = [[float(x), float(y)] for x, y in prompts.get("points", [])]
        labels = [int(v) for v in prompts.get("labels", [])]
        boxes = [[float(v) for v in box] for box in prompts.get("boxes", [])]
    except (TypeError, ValueError, AttributeError):
        raise InputError("an object's prompts must be points [[x, y]], labels [0|1] and boxes [[x0, y0, x1, y1]]") from None
    if len(points) != len(labels) or any(len(b) != 4 for b in boxes) or not set(labels) <= {0, 1}:
        raise InputError("an object's prompts need one label (0 or 1) per point and four numbers per box")
    checked: dict = {"points": points, "labels": labels, "boxes": boxes}
    if "candidate" in prompts:  # which of the candidates was accepted, and whether there were several
        checked["candidate"] = min(max(int(prompts["candidate"]), 0), 255)
    if "multimask" in prompts:
        checked["multimask"] = bool(prompts["multimask"])
    return checked


def _prompts_from_text(text) -> dict | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return check_prompts(json.loads(text))
    except (ValueError, InputError):
        return None  # a hand-edited file: the object stays, without prompts


def check_class(name: str, color: str) -> tuple[str, str]:
    """``(name, color)`` checked: a name of 1-40 printable characters, a ``#rrggbb`` colour."""
    name = " ".join(str(name).split())
    if not 1 <= len(name) <= 40:
        raise InputError(f"a class name must have 1-40 characters, got {len(name)}")
    if COLOR.fullmatch(color) is None:
        raise InputError(f"a class colour must be #rrggbb, got {color[:20]!r}")
    return name, color.lower()


def _check_geometry(geometry) -> None:
    if geometry is None or geometry.is_empty:
        raise InputError("the chosen mask is empty; there is nothing to accept")


class ObjectLayer:
    """The objects and classes of one scene, saved in ``folder`` (created on first save).

    Thread-safe: every method holds the layer's lock.
    """

    def __init__(self, folder: Path, crs: str | None) -> None:
        self.folder = Path(folder)
        self.crs = crs
        self._lock = threading.RLock()
        self.revision = 0
        self._next_id = 1
        self.objects: dict[int, LayerObject] = {}
        self.classes: dict[int, dict] = {int(c["id"]): dict(c) for c in DEFAULT_CLASSES}
        self._undo: list[Snapshot] = []
        self._redo: list[Snapshot] = []
        self._load()

    # -- reading -----------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        """Held while reading several attributes at once (the layer changes from other threads)."""
        return self._lock

    @property
    def gpkg(self) -> Path:
        return self.folder / "objects.gpkg"

    @property
    def meta(self) -> Path:
        return self.folder / "layer.json"

    def _load(self) -> None:
        if not self.meta.is_file():
            return
        doc = json.loads(self.meta.read_text(encoding="utf-8"))
        self.revision = int(doc["revision"])
        self._next_id = int(doc["next_id"])
        self.classes = {int(c["id"]): {"id": int(c["id"]), "name": c["name"], "color": c["color"]}
                        for c in doc["classes"]}
        if self.gpkg.is_file():
            import pyogrio.raw

            meta, _, wkbs, fields = pyogrio.raw.read(self.gpkg, layer="objects")
            columns = dict(zip((str(n) for n in meta["fields"]), fields, strict=True))
            for k, wkb in enumerate(wkbs):
                obj = LayerObject(
                    id=int(columns["id"][k]), class_id=int(columns["class_id"][k]),
                    version=int(columns["version"][k]), geometry=shapely.from_wkb(wkb),
                    score=float(columns["score"][k]), area_px=int(columns["area_px"][k]),
                    area_m2=None if columns["area_m2"][k] != columns["area_m2"][k] else float(columns["area_m2"][k]),
                    prompts=_prompts_from_text(columns["prompts"][k]) if "prompts" in columns else None,
                )
                self.objects[obj.id] = obj

    def class_of(self, class_id: int) -> dict:
        if class_id not in self.classes:
            raise ObjectNotFound(f"class {class_id} does not exist; the layer has classes "
                                 f"{', '.join(str(c) for c in sorted(self.classes))}")
        return self.classes[class_id]

    def get(self, object_id: int) -> LayerObject:
        with self._lock:
            if object_id not in self.objects:
                raise ObjectNotFound(f"object {object_id} does not exist (deleted, or undone in another tab)")
            return self.objects[object_id]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # -- changing ----------------------------------------------------------------
    def add(self, geometry, class_id: int, score: float, area_px: int, area_m2: float | None,
            prompts: dict | None = None) -> LayerObject:
        """Accept a polygon (scene CRS) as a new object of class ``class_id``; ``prompts``
        (scene pixels, :func:`check_prompts`) are kept for re-opening it."""
        prompts = check_prompts(prompts)
        with self._lock:
            self.class_of(class_id)
            _check_geometry(geometry)
            self._checkpoint()
            obj = LayerObject(self._next_id, class_id, self.revision, geometry, float(score), int(area_px), area_m2,
                              prompts)
            self._next_id += 1
            self.objects[obj.id] = obj
            self._save()
            return obj

    def replace(self, object_id: int, version: int, geometry, class_id: int, score: float, area_px: int,
                area_m2: float | None, prompts: dict | None = None) -> LayerObject:
        """Object ``object_id`` (at ``version``, its current one) re-made from a refined
        mask: same id, the new geometry, class and prompts, a new version. Undo brings
        the earlier object back."""
        prompts = check_prompts(prompts)
        with self._lock:
            self._current(object_id, version)
            self.class_of(class_id)
            _check_geometry(geometry)
            self._checkpoint()
            obj = LayerObject(object_id, class_id, self.revision, geometry, float(score), int(area_px), area_m2,
                              prompts)
            self.objects[obj.id] = obj
            self._save()
            return obj

    def add_many(self, items: list[tuple[Any, int, float, int, float | None]]) -> list[LayerObject]:
        """Accept several ``(geometry, class_id, score, area_px, area_m2)`` at once (segment
        everything's bulk accept): one change, so one undo step and one save."""
        with self._lock:
            for geometry, class_id, *_ in items:
                self.class_of(class_id)
                if geometry is None or geometry.is_empty:
                    raise InputError("a chosen mask is empty; there is nothing to accept")
            if not items:
                raise InputError("no objects to accept")
            self._checkpoint()
            added = []
            for geometry, class_id, score, area_px, area_m2 in items:
                obj = LayerObject(self._next_id, class_id, self.revision, geometry, float(score), int(area_px), area_m2)
                self._next_id += 1
                self.objects[obj.id] = obj
                added.append(obj)
            self._save()
            return added

    def reclass(self, object_id: int, class_id: int, version: int) -> LayerObject:
        """Give object ``object_id`` the class ``class_id``; ``version`` must be its current one."""
        with self._lock:
            obj = self._current(object_id, version)
            self.class_of(class_id)
            self._checkpoint()
            obj = replace(obj, class_id=class_id, version=self.revision)
            self.objects[obj.id] = obj
            self._save()
            return obj

    def delete(self, object_id: int, version: int) -> None:
        """Remove object ``object_id``; ``version`` must be its current one."""
        with self._lock:
            self._current(object_id, version)
            self._checkpoint()
            del self.objects[object_id]
            self._save()

    def add_class(self, name: str, color: str) -> dict:
        """A new class (name unique, case-insensitive); returns ``{id, name, color}``."""
        name, color = check_class(name, color)
        with self._lock:
            if any(c["name"].lower() == name.lower() for c in self.classes.values()):
                raise VersionConflict(f"a class named {name!r} exists already")
            if len(self.classes) >= MAX_CLASSES:
                raise InputError(f"a layer has at most {MAX_CLASSES} classes")
            self._checkpoint()
            class_id = max(self.classes, default=0) + 1
            new = {"id": class_id, "name": name, "color": color}
            self.classes[class_id] = new
            self._save()
            return dict(new)

    def undo(self) -> None:
        with self._lock:
            if not self._undo:
                raise VersionConflict("nothing to undo in this layer")
            self._redo.append(self._snapshot())
            self._restore(self._undo.pop())

    def redo(self) -> None:
        with self._lock:
            if not self._redo:
                raise VersionConflict("nothing to redo in this layer")
            self._undo.append(self._snapshot())
            self._restore(self._redo.pop())

    def current(self, object_id: int, version: int) -> LayerObject:
        """Object ``object_id`` if ``version`` is its current version, else
        :class:`VersionConflict` (:class:`ObjectNotFound` when it is gone)."""
        with self._lock:
            return self._current(object_id, version)

    # -- internals ---------------------------------------------------------------
    def _current(self, object_id: int, version: int) -> LayerObject:
        obj = self.get(object_id)
        if obj.version != version:
            raise VersionConflict(
                f"object {object_id} changed since this page saw it (version {version}, now {obj.version}); "
                "reload the layer and try again"
            )
        return obj

    def _snapshot(self) -> Snapshot:
        return Snapshot(tuple(self.objects.values()), tuple(dict(c) for c in self.classes.values()))

    def _checkpoint(self) -> None:
        """Remember the layer before a change and give the change the next revision."""
        self._undo.append(self._snapshot())
        del self._undo[:-MAX_HISTORY]
        self._redo.clear()
        self.revision += 1

    def _restore(self, snap: Snapshot) -> None:
        self.revision += 1
        before = self.objects
        self.objects = {}
        for obj in snap.objects:
            same = before.get(obj.id) == obj
            self.objects[obj.id] = obj if same else replace(obj, version=self.revision)
        self.classes = {c["id"]: dict(c) for c in snap.classes}
        self._save()

    def features(self) -> list[Feature]:
        """The objects as features in the scene CRS, with the :data:`SCHEMA` fields."""
        with self._lock:
            out = []
            for obj in sorted(self.objects.values(), key=lambda o: o.id):
                cls = self.classes.get(obj.class_id, {"name": "?", "color": "#808080"})
                out.append(Feature(obj.geometry, {
                    "id": obj.id, "class_id": obj.class_id, "class_name": cls["name"], "color": cls["color"],
                    "version": obj.version, "score": obj.score, "area_px": obj.area_px,
                    "area_m2": obj.area_m2,
                    "prompts": "" if obj.prompts is None else json.dumps(obj.prompts, separators=(",", ":"))}))
            return out

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_vector(self.gpkg, self.features(), self.crs, layer="objects", schema=SCHEMA)
        write_json(self.meta, {"revision": self.revision, "next_id": self._next_id,
                               "classes": [self.classes[k] for k in sorted(self.classes)]})
