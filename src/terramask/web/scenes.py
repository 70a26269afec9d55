"""The scenes a server offers: ``terramask serve DIR_OR_FILES...`` -> ids -> files.

Requests name scenes by **id**, never by path: an id is the file's stem made safe
(letters, digits, ``_ . -``; ``-2``, ``-3`` … when two files share a stem) and maps to a
file the server found itself, so no path from a request can reach a file the catalog
did not list. Directories are scanned (not recursively) for GeoTIFF, PNG and JPEG files
each time the list is asked for, so files copied in later appear; a file given by name
(or a URL, a STAC item …) is offered as it is and opened only when asked for.

Ids stay with their file for the server's lifetime; the first scene listed is the
default one (the page at ``/``).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from terramask.core.errors import InputError, TerramaskError

#: Suffixes of the files a directory scan offers (case-insensitive).
SCENE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: Most scenes one server lists (a directory with more is cut, with a log line).
MAX_SCENES = 2000
#: Scene ids: what :func:`scene_id` makes, and what a request may name.
SCENE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
_SCENE_ID = re.compile(SCENE_ID_PATTERN)


class SceneNotListed(TerramaskError, LookupError):
    """A scene id the server does not offer."""


class ViewsBusy(TerramaskError):
    """Every open scene view is serving a request; none can be closed to open another."""


@dataclass(frozen=True)
class SceneEntry:
    """One offered scene: ``id`` (in URLs), ``source`` (what :func:`open_scene` opens),
    ``name`` (shown in the picker), ``uploaded`` (came through the upload route)."""

    id: str
    source: str
    name: str
    uploaded: bool = False

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "uploaded": self.uploaded}


def safe_stem(name: str, limit: int = 60) -> str:
    """``name``'s stem with anything but letters, digits and ``_ . -`` replaced by ``_``,
    trimmed of leading/trailing ``. _ -``; ``"scene"`` when nothing is left."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem).strip("._-")
    return stem[:limit].strip("._-") or "scene"


def is_scene_file(path: Path) -> bool:
    """A regular file with a GeoTIFF/PNG/JPEG suffix (hidden and temporary files excluded)."""
    return path.suffix.lower() in SCENE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def check_scene_id(text: str) -> str:
    """``text`` if it has the shape of a scene id, else :class:`SceneNotListed`."""
    if _SCENE_ID.fullmatch(text) is None or ".." in text:
        raise SceneNotListed(f"{text[:80]!r} is not a scene id; GET /scenes lists the scenes of this server")
    return text


class SceneCatalog:
    """Scene ids -> sources, from directories (scanned on every :meth:`entries`) and
    files. Thread-safe."""

    def __init__(self, sources: Iterable[str | os.PathLike], upload_dir: Path | None = None) -> None:
        self._sources = [str(s) for s in sources]
        if not self._sources:
            raise InputError("give at least one scene file or directory")
        self.upload_dir = Path(upload_dir) if upload_dir is not None else None
        self._lock = threading.Lock()
        self._by_source: dict[str, SceneEntry] = {}
        self._by_id: dict[str, SceneEntry] = {}
        for source in self._sources:
            path = Path(source)
            if path.is_dir() and not any(is_scene_file(p) for p in path.iterdir()):
                raise InputError(f"{source}: no GeoTIFF, PNG or JPEG files in this directory")
        listed = self.entries()
        if not listed:
            raise InputError(f"no scenes in {', '.join(self._sources)}")
        self._default = listed[0]

    def entries(self) -> list[SceneEntry]:
        """Every offered scene, in order: the sources as given (directory contents
        sorted by name), then uploads."""
        with self._lock:
            order: list[SceneEntry] = []
            for source, uploaded in self._scan():
                entry = self._by_source.get(source) or self._register(source, uploaded)
                if entry not in order:
                    order.append(entry)
                if len(order) >= MAX_SCENES:
                    break
            return order

    def get(self, scene_id: str) -> SceneEntry:
        """The entry of ``scene_id``, else :class:`SceneNotListed` (HTTP 404)."""
        check_scene_id(scene_id)
        with self._lock:
            entry = self._by_id.get(scene_id)
        if entry is None:
            self.entries()  # a file copied into a scanned directory since the last listing
            with self._lock:
                entry = self._by_id.get(scene_id)
        if entry is None:
            raise SceneNotListed(f"scene {scene_id!r} is not served here; GET /scenes lists the scenes of this server")
        return entry

    @property
    def default(self) -> SceneEntry:
        """The first scene listed at start-up (the page at ``/``)."""
        return self._default

    def add_upload(self, path: Path) -> SceneEntry:
        """Offer an uploaded file (already in :attr:`upload_dir`)."""
        with self._lock:
            return self._by_source.get(str(path)) or self._register(str(path), True)

    def _scan(self) -> Iterable[tuple[str, bool]]:
        for source in self._sources:
            path = Path(source)
            if path.is_dir():
                for child in sorted(path.iterdir()):
                    if is_scene_file(child):
                        yield str(child), False
            else:
                yield source, False
        if self.upload_dir is not None and self.upload_dir.is_dir():
            for child in sorted(self.upload_dir.iterdir()):
                if is_scene_file(child):
                    yield str(child), True

    def _register(self, source: str, uploaded: bool) -> SceneEntry:
        base = safe_stem(source.split("?", 1)[0].rstrip("/"))
        scene_id, k = base, 1
        while scene_id in self._by_id:
            k += 1
            scene_id = f"{base}-{k}"
        name = Path(source.split("?", 1)[0].rstrip("/")).name or scene_id
        entry = SceneEntry(scene_id, source, name, uploaded)
        self._by_source[source] = entry
        self._by_id[scene_id] = entry
        return entry
