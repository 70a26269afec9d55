"""Scene uploads (``POST /scenes?name=FILE``): streamed to disk, checked, then offered.

The request body is the file itself (``Content-Type: application/octet-stream``). It is
written chunk by chunk into a hidden temporary file inside the upload folder
(``<out>/uploads/``), never held in memory, and refused with ``413`` as soon as it
passes the limit (at once when ``Content-Length`` announces more). The finished file
must be a raster GDAL reads with the GeoTIFF, PNG or JPEG driver, whatever its name
says: the first bytes must be one of those formats' signatures (so, e.g., a VRT or an
XML file naming other files on the server is refused before GDAL sees it) and the
opened dataset's driver is checked again. Only then is it linked under its final name,
the client's file name reduced to a safe stem (``../../x.tif`` -> ``x.tif``; ``x-2.tif``
when taken), so a half-written or rejected upload never appears under a scene name and
nothing is written outside the upload folder.

Besides the per-file limit (``--max-upload-mb``), the upload folder as a whole has a quota
(``--upload-quota-mb``, :class:`UploadQuota`): the bytes of its published files plus those
of uploads still streaming may not pass it, so many uploads cannot fill the disk either.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import AsyncIterator

from terramask.core.errors import InputError, TerramaskError
from terramask.web.scenes import SCENE_SUFFIXES, safe_stem

log = logging.getLogger(__name__)

#: Default upload limit of ``terramask serve`` (``--max-upload-mb``).
DEFAULT_MAX_UPLOAD_MB = 500
#: Default total size of the upload folder (``--upload-quota-mb``).
DEFAULT_UPLOAD_QUOTA_MB = 5000
#: File signatures -> the GDAL drivers allowed to read them.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "GTiff"), (b"MM\x00*", "GTiff"), (b"II+\x00", "GTiff"), (b"MM\x00+", "GTiff"),
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"),
)
_KIND_OF_SUFFIX = {".tif": "GTiff", ".tiff": "GTiff", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


class UploadTooLarge(TerramaskError):
    """The upload is larger than the server's limit (HTTP 413)."""


class UploadsDisabled(TerramaskError, PermissionError):
    """The server was started with uploads switched off (HTTP 403)."""


class NotARaster(InputError):
    """The uploaded bytes are not a GeoTIFF, PNG or JPEG that GDAL can read (HTTP 422)."""


class UploadQuota:
    """The total bytes the upload folder may hold: published files (counted from disk at
    the start of each upload, so files deleted by hand give their room back) plus the
    bytes of every upload still streaming in this server (counted as they arrive, so two
    uploads at once cannot pass the quota together). ``limit_bytes`` <= 0: no quota."""

    def __init__(self, folder: Path, limit_bytes: int) -> None:
        self.folder = folder
        self.limit_bytes = int(limit_bytes)
        self._stored = 0
        self._streaming = 0

    def stored(self) -> int:
        """Bytes of the published uploads in the folder (hidden temporary files aside)."""
        if not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def room(self) -> int | None:
        """Bytes a new upload may still take (``None`` without a quota)."""
        if self.limit_bytes <= 0:
            return None
        return max(0, self.limit_bytes - self.stored() - self._streaming)

    def begin(self) -> None:
        """An upload starts: count the folder again (the only scan per upload)."""
        self._stored = self.stored()

    def check(self, n: int, name: str) -> None:
        """:class:`UploadTooLarge` when ``n`` more bytes would pass the quota."""
        if self.limit_bytes > 0 and self._stored + self._streaming + n > self.limit_bytes:
            raise UploadTooLarge(
                f"{name}: the upload folder {self.folder} would pass its quota of {self.limit_bytes / 1e6:,.0f} MB "
                f"({self._stored / 1e6:,.0f} MB used; terramask serve --upload-quota-mb): delete uploads or raise it"
            )

    def take(self, n: int, name: str) -> None:
        """Count ``n`` more streamed bytes of an upload (:meth:`check` first)."""
        self.check(n, name)
        self._streaming += n

    def end(self, n: int, published: bool) -> None:
        """An upload of ``n`` streamed bytes ended; published ones now count as stored."""
        self._streaming -= n
        if published:
            self._stored += n


def upload_name(name: str) -> str:
    """The file name an upload called ``name`` gets: a safe stem plus its lower-case
    suffix, which must be a GeoTIFF/PNG/JPEG one; else :class:`InputError`."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = Path(base).suffix.lower()
    if suffix not in SCENE_SUFFIXES:
        raise InputError(f"upload name {base[:80]!r}: give a .tif, .tiff, .png, .jpg or .jpeg file name")
    return safe_stem(base) + suffix


def kind_of(head: bytes) -> str | None:
    """The GDAL driver whose signature ``head`` (a file's first bytes) starts with."""
    return next((driver for magic, driver in SIGNATURES if head.startswith(magic)), None)


async def save_upload(chunks: AsyncIterator[bytes], folder: Path, name: str, max_bytes: int,
                      announced: int | None = None, quota: UploadQuota | None = None) -> Path:
    """Stream ``chunks`` into ``folder`` under a hidden temporary name and return that
    path; :class:`UploadTooLarge` past ``max_bytes`` or past the folder's ``quota`` (the
    partial file removed and its bytes given back). On success the file's bytes stay
    counted by ``quota`` until the caller's :meth:`UploadQuota.end` (published or not)."""
    limit_text = f"the upload limit of {max_bytes / 1e6:,.0f} MB (terramask serve --max-upload-mb)"
    if announced is not None and announced > max_bytes:
        raise UploadTooLarge(f"{name}: {announced:,} bytes is more than {limit_text}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload-{secrets.token_hex(6)}.part"
    size = taken = 0
    if quota is not None:
        quota.begin()
        if announced is not None:
            quota.check(announced, name)
    try:
        with open(tmp, "xb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(f"{name}: more than {limit_text}")
                if quota is not None:
                    quota.take(len(chunk), name)
                    taken += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise NotARaster(f"{name}: the upload is empty")
    except BaseException:
        tmp.unlink(missing_ok=True)
        if quota is not None:
            quota.end(taken, published=False)
        raise
    return tmp


def check_raster(tmp: Path, name: str) -> str:
    """The driver of the raster in ``tmp`` (GTiff, PNG or JPEG, matching ``name``'s
    suffix); :class:`NotARaster` otherwise. Blocking: run it off the event loop."""
    with open(tmp, "rb") as f:
        head = f.read(16)
    kind = kind_of(head)
    expected = _KIND_OF_SUFFIX[Path(name).suffix.lower()]
    if kind is None:
        raise NotARaster(f"{name}: not a GeoTIFF, PNG or JPEG file (unknown signature)")
    if kind != expected:
        raise NotARaster(f"{name}: the file is a {kind} but its name says {expected}; rename it")
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(tmp) as ds:
            if ds.driver != kind:
                raise NotARaster(f"{name}: read as {ds.driver}, not {kind}")
            if ds.count < 1 or ds.width < 1 or ds.height < 1:
                raise NotARaster(f"{name}: has no pixels")
            ds.read(1, window=((0, min(ds.height, 16)), (0, min(ds.width, 16))))
    except RasterioError as exc:
        raise NotARaster(f"{name}: cannot be read as a raster ({' '.join(str(exc).split())[:200]})") from None
    return kind


def publish(tmp: Path, folder: Path, name: str) -> Path:
    """Give the checked file ``tmp`` its final name in ``folder`` (``name``, or
    ``stem-2.ext`` … when taken) without ever replacing a file; returns the path."""
    stem, suffix = Path(name).stem, Path(name).suffix
    k = 1
    while True:
        final = folder / (name if k == 1 else f"{stem}-{k}{suffix}")
        try:
            os.link(tmp, final)  # fails when the name exists: no upload overwrites another
        except FileExistsError:
            k += 1
            continue
        tmp.unlink()
        log.info("upload saved as %s", final)
        return final
