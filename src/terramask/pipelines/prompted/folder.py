"""Output folders of ``terramask predict`` written as a unit.

The files of one run are written into a temporary sibling folder (``.NAME.tmp-XXXX``
next to ``NAME``) and swapped in when all are complete: an earlier run's folder is
renamed aside, the new one renamed into place, then the old one removed. A run that
fails at any point leaves the earlier folder as it was, never a mix of old and new
files. Only a folder that is empty or holds nothing but predict outputs (and the
sidecars GIS software adds to them) is replaced, so ``--out`` pointed at a folder with
other files is refused instead of wiped.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from terramask.core.errors import OutputError
from terramask.io.atomic import ensure_output_dir

log = logging.getLogger(__name__)

#: Every file a predict run (or a browser export) may write into its folder.
OUTPUT_FILES = frozenset({
    "mask.tif", "candidates.tif", "mask.gpkg", "mask.geojson", "overlay.png", "candidates.png",
    "logits.npy", "result.json",
})


#: Files GIS software leaves next to an output (e.g. QGIS statistics in ``mask.tif.aux.xml``).
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", "-journal", "-wal", "-shm")


def _ours(name: str) -> bool:
    """True for a predict output, its sidecar, or a hidden temporary."""
    if name in OUTPUT_FILES or name.startswith("."):
        return True
    return any(name.endswith(s) and name[: -len(s)] in OUTPUT_FILES for s in SIDECAR_SUFFIXES)


def _foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that neither a predict run nor GIS software opening its files wrote."""
    return sorted(p.name for p in folder.iterdir() if not _ours(p.name))


def check_replaceable(folder: Path) -> None:
    """Raise :class:`OutputError` unless ``folder`` is absent, empty or holds only predict outputs."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputError(f"cannot use {folder} as output directory: it is a file")
    foreign = _foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise OutputError(
            f"output folder {folder} holds files predict did not write ({shown}); give an empty or new folder"
        )


def _swap_in(staging: Path, folder: Path) -> None:
    """Put ``staging`` in place of ``folder`` (which may exist)."""
    old = None
    if folder.exists():
        check_replaceable(folder)  # again: something may have appeared while we worked
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except OSError:
        if old is not None:
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_siblings(folder: Path) -> list[Path]:
    """Clean up after a run of this module that was killed: remove its ``.NAME.tmp-*``
    staging folders, and its ``.NAME.old-*`` folders (restoring the newest one when the
    kill came between moving the earlier run aside and moving the new one in). Returns
    the removed paths. Do not run two predicts into the same folder at once."""
    parent, pattern = folder.parent, glob.escape(f".{folder.name}")
    removed = sorted(parent.glob(f"{pattern}.tmp-*"))
    olds = sorted(parent.glob(f"{pattern}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not folder.exists():
        os.replace(olds.pop(), folder)
        log.warning("restored %s from an interrupted run", folder)
    for path in [*removed, *olds]:
        shutil.rmtree(path, ignore_errors=True)
    return [*removed, *olds]


@contextmanager
def output_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``folder`` as a whole.

    On an exception the temporary folder is removed and ``folder`` is untouched. Raises
    :class:`OutputError` when ``folder`` holds other files or its parent is not writable.
    """
    folder = Path(os.path.abspath(folder))
    if folder.parent.is_dir():
        remove_stale_siblings(folder)
    check_replaceable(folder)
    ensure_output_dir(folder.parent)
    staging = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        staging.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create output directory {folder}: {exc.strerror or exc}") from exc
    try:
        yield staging
        try:
            _swap_in(staging, folder)
        except OSError as exc:
            raise OutputError(f"cannot move the finished outputs into {folder}: {exc.strerror or exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.debug("outputs in %s", folder)
