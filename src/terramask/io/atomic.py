"""Atomic outputs: write to a temporary name in the same directory, rename when complete.

An interrupted run (exception, Ctrl-C, ``kill -9``) never leaves a truncated file under
the final name: :func:`atomic_output` yields a temporary path next to the target (same
suffix, so GDAL/OGR drivers that choose a format by extension recognise it) and renames
it over the target only when the ``with`` block finishes without error. The temporary
name starts with a dot and contains ``.tmp-``, so a crashed run's leftovers are easy to
recognise (and :func:`remove_stale_temporaries` removes them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Self

from terramask.core.errors import OutputError

log = logging.getLogger(__name__)

# Files a driver may create next to its main file (GeoPackage journals, GDAL sidecars).
_SIDECAR_SUFFIXES = ("-journal", "-wal", "-shm", ".aux.xml", ".ovr", ".msk")
_TMP_MARK = ".tmp-"


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh, unused temporary path next to ``path`` with the same suffix.

    ``out/mask.tif`` -> ``out/.mask.tmp-3f2a9c1e.tif``. The file is not created.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-1:])
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}{_TMP_MARK}{uuid.uuid4().hex[:12]}{suffix}")


def _remove_quietly(path: Path) -> None:
    for candidate in (path, *(Path(f"{path}{s}") for s in _SIDECAR_SUFFIXES)):
        try:
            candidate.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover - depends on the file system
            log.warning("could not remove temporary file %s: %s", candidate, exc)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: not every platform can open directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class AtomicPath:
    """A temporary path next to ``path`` that is committed (renamed) or discarded.

    For writers that live longer than one ``with`` block (streaming writers):
    write to :attr:`tmp`, then call :meth:`commit` or :meth:`discard` exactly once.
    :func:`atomic_output` is the context-manager form.
    """

    def __init__(self, path: str | os.PathLike, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        parent = self.path.parent
        if not parent.is_dir():
            raise OutputError(f"cannot write {self.path}: directory {parent} does not exist")
        if self.path.is_dir():
            raise OutputError(f"cannot write {self.path}: a directory of that name exists")
        self.tmp = temporary_path(self.path)
        self.done = False

    def commit(self) -> Path:
        """Rename the temporary file over the final path (fsync'ed when ``durable``)."""
        if self.done:
            raise OutputError(f"{self.path} was already committed or discarded")
        try:
            if not self.tmp.exists():
                raise OutputError(f"cannot write {self.path}: the writer produced no file")
            if self.durable:
                _fsync_file(self.tmp)
            try:
                os.replace(self.tmp, self.path)
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            self.discard()
            raise
        self.done = True
        # Sidecars a driver left next to the temporary name (e.g. .aux.xml) are stale now.
        _remove_quietly(self.tmp)
        if self.durable:
            _fsync_dir(self.path.parent)
        log.debug("wrote %s", self.path)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file and its sidecars; the final path is untouched."""
        self.done = True
        _remove_quietly(self.tmp)


class StagedWriter:
    """Base of the writers that build a file under a temporary name: ``open()`` starts
    it, ``close()`` renames the finished file into place (returns its path), ``abort()``
    drops it and leaves the final path untouched. As a context manager it opens, then
    closes on success or aborts on an exception."""

    def open(self) -> Self:
        raise NotImplementedError

    def close(self) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@contextmanager
def atomic_output(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    The body must create the file at the yielded path (any writer, any driver). On an
    exception (including ``KeyboardInterrupt``) the temporary file and driver sidecars
    are removed and the exception propagates; ``path`` is left as it was. With
    ``durable`` the file and the directory entry are fsync'ed, so a finished output
    survives a power cut (resumable batches rely on this).

    Raises :class:`OutputError` if the directory of ``path`` does not exist, or if the
    body finished without creating the file, or if the rename fails.
    """
    target = AtomicPath(path, durable=durable)
    try:
        yield target.tmp
    except BaseException:
        target.discard()
        raise
    target.commit()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_output(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically (numpy scalars/arrays and paths are converted)."""
    return write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars/arrays, paths and sets."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def ensure_output_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` (and parents) if needed and check that files can be written.

    Returns the directory as a :class:`Path`. Raises :class:`OutputError` with one line
    naming the directory and the reason when it cannot be created or written to.
    The check writes and removes a probe file, because permission bits say nothing
    for root or on read-only mounts.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"cannot use {directory} as output directory: it is a file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(f"cannot create output directory {directory}: a file is in the way") from exc
    except OSError as exc:
        raise OutputError(f"cannot create output directory {directory}: {exc.strerror or exc}") from exc
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".terramask-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"output directory {directory} is not writable: {exc.strerror or exc}") from exc
    return directory


class StagingDir:
    """A hidden folder next to a run's outputs; they are written there under their final
    names and moved into place together by :meth:`commit`.

    ``out/.run.tmp-<hex>/`` is created on construction. Until :meth:`commit`, nothing
    appears under a final name in ``out``, however the process ends (a ``kill -9``
    leaves only the hidden folder, which :func:`remove_stale_temporaries` removes).
    :meth:`commit` renames the named files in the order given (put the file that marks a
    finished run, e.g. ``summary.json``, last) and removes the folder.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / f".run{_TMP_MARK}{uuid.uuid4().hex[:12]}"
        try:
            self.path.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot write into {self.out_dir}: {exc.strerror or exc}") from exc
        self.done = False

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def commit(self, names: list[str] | tuple[str, ...]) -> dict[str, Path]:
        """Move ``names`` (files in the staging folder) into the output folder, in order;
        returns ``name -> final path``."""
        if self.done:
            raise OutputError(f"{self.path} was already committed or discarded")
        out: dict[str, Path] = {}
        try:
            for name in names:
                staged = self.path / name
                if not staged.is_file():
                    raise OutputError(f"cannot write {self.out_dir / name}: the run produced no file")
                _fsync_file(staged)
                os.replace(staged, self.out_dir / name)
                out[name] = self.out_dir / name
        except OSError as exc:
            self.discard()
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"cannot move outputs into {self.out_dir}: {exc.strerror or exc}") from exc
        _fsync_dir(self.out_dir)
        self.discard()
        return out

    def discard(self) -> None:
        """Remove the staging folder and whatever is in it."""
        self.done = True
        shutil.rmtree(self.path, ignore_errors=True)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove temporary files left in ``directory`` by an interrupted run.

    Only names made by :func:`temporary_path` (``.<stem>.tmp-<hex><suffix>``), their
    sidecars and :class:`StagingDir` folders are touched. Returns the removed paths. Do
    not call it while another process writes into the same directory.
    """
    removed = []
    for candidate in Path(directory).glob(f".*{_TMP_MARK}*"):
        if candidate.is_dir() and candidate.name.startswith(f".run{_TMP_MARK}"):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        elif candidate.is_file():
            try:
                candidate.unlink()
                removed.append(candidate)
            except OSError as exc:  # pragma: no cover
                log.warning("could not remove stale temporary %s: %s", candidate, exc)
    return removed
