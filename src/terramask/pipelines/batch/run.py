"""Automatic segmentation of many scenes, resumable after any interruption.

:func:`run_batch` expands files, folders and glob patterns into a list of scenes and runs
:func:`terramask.pipelines.scene.run.run_scene` on each (any size) with the same
:class:`~terramask.pipelines.scene.config.SceneRunConfig`, into one folder per scene under
``out_dir``:

- ``<name>/labels.tif``, ``objects.gpkg``, ``masks.json``, ``overlay.png``, ``summary.json``
  (the files of ``terramask auto``, same schema);
- ``gallery.png``: a contact sheet of the overlays (``gallery_cols`` per row, at most
  ``gallery_max`` of them, in input order);
- ``index.csv`` and ``index.json``: one row per scene (status, objects, tiles, size,
  seconds, model, parameters, output folder, error); ``index.json`` also holds the batch
  settings;
- ``journal.jsonl``: the durable record of finished scenes (:mod:`terramask.pipelines.batch.journal`).

Resuming: every finished scene is journaled (fsync'ed) after its outputs were renamed
into place. Started again with the same command, the batch skips scenes whose journal
entry says ``done`` (and whose ``summary.json`` exists), redoes the rest, and rebuilds the
gallery and index from the journal, so the final files are those of an uninterrupted run
(the ``seconds`` of a scene redone after the interruption are its new timing). A scene's
key covers its path, size, modification time and the settings, so a changed file or
different parameters are computed again. Temporaries left by a killed run are removed.

Failures: a scene that cannot be read or segmented (corrupt, unsupported, missing) is
recorded as ``failed`` with a one-line error and the batch goes on; :class:`BatchResult`
counts failures (the CLI exits non-zero). Configuration errors (unknown model, bad
parameters) stop the batch before it starts.

Engines: ``local`` runs scenes one after the other in this process (each scene's tiles
in turn); ``ray`` sends scenes to Ray actors, each loading the model once.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from terramask.core.errors import InputError, MissingDependencyError
from terramask.io.atomic import ensure_output_dir, remove_stale_temporaries, write_json, write_text
from terramask.io.gallery import make_gallery
from terramask.io.overlay import save_png
from terramask.io.remote import display_name, is_remote
from terramask.io.stac import scene_source
from terramask.pipelines.batch.journal import Journal
from terramask.pipelines.scene.config import EngineConfig, SceneRunConfig
from terramask.pipelines.scene.engines import make_engine
from terramask.pipelines.scene.run import OVERLAY_NAME, SUMMARY_NAME, SegmenterFactory, run_scene
from terramask.pipelines.scene.segmenters import SegmentTile, describe_segmenter

log = logging.getLogger(__name__)

#: Suffixes picked up when a folder is given (files and globs are taken as they are).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
JOURNAL_NAME = "journal.jsonl"
GALLERY_NAME = "gallery.png"
INDEX_CSV = "index.csv"
INDEX_JSON = "index.json"
INDEX_COLUMNS = ("name", "input", "status", "objects", "tiles", "skipped_tiles", "width", "height", "crs",
                 "seconds", "model", "params", "output", "error")


# -- inputs ---------------------------------------------------------------------------------
def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path | str]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns (``**``
    recurses) -> scene paths in the order given, without duplicates. URLs and GDAL
    ``/vsi`` paths (:func:`terramask.io.remote.is_remote`) pass through unchanged, as
    ``str`` (never globbed, listed or made absolute).

    A path that does not exist is kept (it is reported as a failed scene); a pattern or
    folder without images only logs a warning. Raises :class:`InputError` when nothing
    at all is found.
    """
    found: list[Path | str] = []
    for spec in inputs:
        text = os.fspath(spec)
        if is_remote(text):
            found.append(text)
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            files = [path]
        elif _is_pattern(text):
            files = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True) if Path(m).is_file())
        else:
            files = [path]
        if not files:
            log.warning("%s: no image files found", text)
        found.extend(files)
    seen: set[str] = set()
    out = []
    for p in found:
        key = p if isinstance(p, str) else os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    if not out:
        shown = ", ".join(os.fspath(i) for i in list(inputs)[:3]) or "(none)"
        raise InputError(f"no input images found in {shown}; give image files, folders or glob patterns")
    return out


@dataclass(frozen=True)
class BatchItem:
    """One scene of a batch: ``index`` in input order, output folder ``name``, journal ``key``."""

    index: int
    path: str
    name: str
    out_dir: str
    key: str

    @property
    def shown(self) -> str:
        """The input as written to the journal and the index (a URL without its query string)."""
        return display_name(self.path)


def _file_identity(path: Path | str) -> dict:
    """What identifies a scene in the journal key: a file's absolute path, size and mtime;
    a URL without its query string (a re-signed URL resumes the same scene)."""
    if isinstance(path, str):
        return {"path": display_name(path), "size": None, "mtime_ns": None}
    try:
        st = path.stat()
        return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except OSError:
        return {"path": os.path.abspath(path), "size": None, "mtime_ns": None}


def _stem(path: Path | str) -> str:
    """Output folder name of a scene: the file stem (of a URL's last path segment)."""
    if isinstance(path, str):
        path = Path(urlsplit(path).path if "://" in path else path)
    return path.stem or path.name


def plan_items(paths: Sequence[Path | str], out_dir: Path, fingerprint: str) -> list[BatchItem]:
    """Items with unique output folder names (the file stem, ``_2``, ``_3`` … on clashes)."""
    used: set[str] = set()
    items = []
    for i, p in enumerate(paths):
        base = _stem(p) or f"scene{i + 1}"
        name, k = base, 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        ident = json.dumps({**_file_identity(p), "name": name, "settings": fingerprint}, sort_keys=True)
        key = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:24]
        items.append(BatchItem(i, os.fspath(p), name, os.fspath(out_dir / name), key))
    return items


# -- the per-scene worker ---------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedSegmenter:
    """A segmenter factory around a tile function built already (no second model load),
    describing itself as the factory that built it (for each scene's summary)."""

    segment: SegmentTile
    description: dict = field(default_factory=dict)
    device: str = "cpu"

    def __call__(self) -> SegmentTile:
        return self.segment

    def describe(self) -> dict:
        return dict(self.description)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


class BatchWorker:
    """Loads the model once, then segments whole scenes (tiles in this process)."""

    def __init__(self, segmenter: SegmenterFactory, config: SceneRunConfig, assets: str | None = None) -> None:
        self._segmenter = LoadedSegmenter(segmenter(), describe_segmenter(segmenter),
                                          getattr(segmenter, "device", "cpu"))
        self._config = config
        self._assets = assets

    def __call__(self, item: BatchItem) -> dict:
        started = time.perf_counter()
        try:
            source = scene_source(item.path, self._assets) if self._assets else item.path
            result = run_scene(source, item.out_dir, self._segmenter, self._config)
        except (MissingDependencyError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one bad scene must not stop the batch
            log.info("%s failed: %s", item.shown, _one_line(exc))
            return {"key": item.key, "index": item.index, "status": "failed", "error": _one_line(exc),
                    "error_type": type(exc).__name__, "seconds": round(time.perf_counter() - started, 3)}
        scene = result.summary["scene"]
        return {"key": item.key, "index": item.index, "status": "done", "objects": result.objects,
                "tiles": result.tiles, "skipped_tiles": result.skipped, "width": scene.get("width"),
                "height": scene.get("height"), "crs": scene.get("crs"),
                "seconds": round(time.perf_counter() - started, 3)}


# -- the batch -------------------------------------------------------------------------------
@dataclass
class BatchResult:
    """What a batch produced: one row per scene (input order) and the shared outputs."""

    out_dir: Path
    rows: list[dict]
    paths: dict[str, Path]
    computed: int = 0
    reused: int = 0
    settings: dict = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(r["status"] == "done" for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(r["status"] != "done" for r in self.rows)


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="batch", unit="scene")


def run_batch(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    segmenter: SegmenterFactory,
    config: SceneRunConfig | None = None,
    engine: EngineConfig | None = None,
    *,
    gallery_cols: int = 5,
    gallery_thumb: int = 256,
    gallery_max: int = 100,
    assets: str | None = None,
) -> BatchResult:
    """Segment every scene of ``inputs`` into ``out_dir``; resumable (module docstring).

    ``segmenter``: a picklable factory (e.g. :class:`~terramask.pipelines.scene.segmenters.AutoSegmenter`
    from a model name); ``config``: tiling, filters and outputs of every scene, as
    :func:`~terramask.pipelines.scene.run.run_scene`; ``engine``: where scenes run (on
    Ray each actor loads the model once and runs whole scenes); ``assets``: the ``--assets``
    of STAC item inputs (:func:`terramask.io.stac.scene_source`; default: each item's
    default assets). Returns a :class:`BatchResult`.
    """
    config = config or SceneRunConfig()
    engine = engine or EngineConfig()
    if gallery_cols < 1 or gallery_max < 0:
        raise InputError(f"gallery_cols must be >= 1 and gallery_max >= 0, got {gallery_cols}, {gallery_max}")
    validate = getattr(segmenter, "validate", None)
    if callable(validate):
        validate()
    description = describe_segmenter(segmenter)
    settings = {"segmenter": description, **config.to_dict(), **({"assets": assets} if assets else {})}
    fingerprint = json.dumps(settings, sort_keys=True, default=str)
    out = ensure_output_dir(out_dir)
    remove_stale_temporaries(out)
    paths = expand_inputs(inputs)
    items = plan_items(paths, out, fingerprint)
    scene_config = config.with_(progress=False if engine.name != "local" else config.progress)
    computed = reused = 0
    with Journal(out / JOURNAL_NAME) as journal:
        todo = [it for it in items if not (journal.done(it.key) and (Path(it.out_dir) / SUMMARY_NAME).exists())]
        reused = len(items) - len(todo)
        if reused:
            log.info("resuming: %d of %d scenes already done", reused, len(items))
        run_id = uuid.uuid4().hex[:12]
        bar = _progress(len(items), config.progress)
        if bar is not None:
            bar.update(reused)
        try:
            if todo:
                with make_engine(engine.name, address=engine.address, workers=engine.workers,
                                 device=getattr(segmenter, "device", "cpu"), **engine.options) as eng:
                    for rec in eng.map(partial(BatchWorker, segmenter, scene_config, assets), todo, ordered=False):
                        item = items[rec["index"]]
                        fields = {k: v for k, v in rec.items() if k not in ("key", "status")}
                        journal.record(item.key, rec["status"], name=item.name, input=item.shown, run=run_id, **fields)
                        computed += 1
                        if bar is not None:
                            bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        rows = [_row(it, journal.get(it.key), description) for it in items]
    result_paths = _write_outputs(out, rows, settings, gallery_cols, gallery_thumb, gallery_max)
    return BatchResult(out, rows, result_paths, computed, reused, settings)


def _row(item: BatchItem, entry: dict | None, description: Mapping[str, Any]) -> dict:
    entry = entry or {"status": "failed", "error": "not processed"}
    return {
        "name": item.name,
        "input": item.shown,
        "status": entry.get("status"),
        "objects": entry.get("objects"),
        "tiles": entry.get("tiles"),
        "skipped_tiles": entry.get("skipped_tiles"),
        "width": entry.get("width"),
        "height": entry.get("height"),
        "crs": entry.get("crs"),
        "seconds": entry.get("seconds"),
        "model": description.get("model"),
        "params": description.get("params") or {},
        "output": item.name if entry.get("status") == "done" else None,
        "error": entry.get("error"),
    }


def _write_outputs(out: Path, rows: list[dict], settings: dict, cols: int, thumb: int, max_items: int) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    overlays = [(r["name"], out / r["name"] / OVERLAY_NAME) for r in rows if r["status"] == "done"]
    overlays = [(n, p) for n, p in overlays if p.exists()][:max_items]
    if overlays:
        sheet = make_gallery([p for _, p in overlays], cols=cols, thumb=thumb, titles=[n for n, _ in overlays])
        paths["gallery"] = save_png(out / GALLERY_NAME, sheet)
    elif (out / GALLERY_NAME).exists():
        (out / GALLERY_NAME).unlink()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (json.dumps(r[k], sort_keys=True) if k == "params" else ("" if r[k] is None else r[k]))
                         for k in INDEX_COLUMNS})
    paths["index_csv"] = write_text(out / INDEX_CSV, buf.getvalue())
    summary = {
        "settings": settings,
        "scenes": len(rows),
        "done": sum(r["status"] == "done" for r in rows),
        "failed": sum(r["status"] != "done" for r in rows),
        "objects": sum(r["objects"] or 0 for r in rows),
        "images": rows,
    }
    paths["index_json"] = write_json(out / INDEX_JSON, summary)
    return paths
