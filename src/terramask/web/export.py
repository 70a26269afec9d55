"""Export a chosen candidate from the browser: the same files as ``terramask predict``.

Each export goes into its own folder under the server's output root (``--out``); the
browser gives at most a folder *name*, never a path, so a page can only write there.
The files are written by :func:`terramask.pipelines.prompted.outputs.write_prediction`
(mask.tif, mask.gpkg, mask.geojson, overlay.png, logits.npy, result.json), with the
chosen candidate as the only one, keeping its number (exporting "Mask 3" writes
``candidate: 3`` and "Mask 3" in the overlay, as the page and the GeoJSON download name it), so ``terramask predict --refine FOLDER`` continues
from it on the command line. ``mask.tif`` is on the scene grid but only the prediction's
window is materialised, so an export from a 20,000 px scene costs one window of memory;
the folder appears complete or not at all (an overwrite replaces it as a whole).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from terramask.core.errors import InputError, OutputError
from terramask.io.scene import Scene
from terramask.pipelines.prompted.outputs import write_prediction
from terramask.pipelines.prompted.session import Prediction
from terramask.web.store import with_candidate_first

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


class ExportExistsError(OutputError, FileExistsError):
    """The export folder already exists and overwriting was not asked for."""


def check_name(name: str) -> str:
    """``name`` if it is a plain folder name (letters, digits, ``_ . -``; no path), else InputError."""
    if not NAME_PATTERN.fullmatch(name) or name in (".", "..") or ".." in name:
        raise InputError(
            f"export name {name!r} is not a plain folder name: use 1-80 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def free_name(root: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3`` … whichever does not exist under ``root`` yet."""
    name, k = stem, 1
    while (root / name).exists():
        k += 1
        name = f"{stem}-{k}"
    return name


def export_candidate(
    prediction: Prediction,
    candidate: int,
    scene: Scene,
    rgb8,
    root: Path,
    name: str,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Path]]:
    """Write candidate ``candidate`` (0-based) of ``prediction`` into ``root / name``.

    ``rgb8`` is the ``(h, w, 3)`` uint8 picture of the prediction's window (for the
    overlay). Returns ``(folder, {file name: path})``. Raises :class:`ExportExistsError`
    when the folder exists and ``overwrite`` is false.
    """
    folder = Path(root) / check_name(name)
    if folder.exists() and not overwrite:
        raise ExportExistsError(f"export folder {folder} already exists; choose another name or overwrite it")
    chosen = with_candidate_first(prediction, candidate)
    single = replace(chosen, candidates=chosen.candidates[0:1])
    return folder, write_prediction(single, scene, folder, rgb8=rgb8, numbers=[candidate + 1])
