"""Scenes where they live: URLs and GDAL virtual file systems, read by window.

A SCENE may be a local path, an ``https://``/``http://``, ``s3://``, ``gs://`` or ``az://``
URL, or a GDAL ``/vsi…`` path (``/vsicurl/``, ``/vsis3/``, ``/vsizip/`` …). URLs are
rewritten once (:func:`gdal_path`) to the GDAL virtual file system that reads them by
HTTP range requests, so a window read fetches the blocks it needs and never the whole
file. Credentials come from each cloud's usual environment variables and profiles
(``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*`` …), which GDAL reads
itself; terramask never stores them.

GDAL's network options are set once per process (:func:`configure_gdal`, called by
:func:`terramask.io.scene.open_scene` for a remote scene): transient HTTP errors (429,
5xx, reset connections) are retried with exponential backoff, a directory listing is never
fetched on open, HTTP ranges of one read are merged and fetched in parallel, and a block
cache keeps repeated reads off the network. A value already in the environment wins, so
``GDAL_HTTP_MAX_RETRY=0 terramask …`` still turns retries off.

What is shown to people (messages, logs, ``summary.json``) is :func:`display_name`: the
URL without its query string and fragment, which is where signed URLs carry their
signatures (``X-Amz-Signature``, SAS tokens).
"""

from __future__ import annotations

import html
import logging
import os
import re
import threading
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

#: URL scheme -> GDAL virtual file system prefix.
SCHEMES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}

#: GDAL configuration options for remote reads (a value in the environment wins).
GDAL_OPTIONS = {
    # Never list the "directory" of a remote file on open (one request saved per scene,
    # and a listing of a large bucket prefix can be slow).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Transient errors (429, 500, 502, 503, 504, connection reset): 4 retries waiting
    # 0.5 s, 1 s, 2 s, 4 s (GDAL doubles the delay after each try).
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_CONNECTTIMEOUT": "20",
    "GDAL_HTTP_TIMEOUT": "120",
    # The ranges of one window read are merged when adjacent and fetched in parallel.
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # A COG header (IFDs, tile offsets of the first levels) in the first request.
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 1024 * 1024),
}

_configured = False
_lock = threading.Lock()
_VRT_NAME = re.compile(r'<MDI key="name">(.*?)</MDI>', re.DOTALL)
_URL_IN_TEXT = re.compile(r"((?:https?|s3|gs|az)://[^\s?#'\"]*)[?#][^\s'\"]*")


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL with a known scheme or a GDAL ``/vsi…`` path (no local file check)."""
    text = os.fspath(path)
    if text.startswith("/vsi"):
        return True
    scheme = urlsplit(text).scheme.lower()
    return scheme in SCHEMES


def gdal_path(path: str | os.PathLike) -> str:
    """The name GDAL opens: ``https://h/a.tif`` -> ``/vsicurl/https://h/a.tif``,
    ``s3://b/k.tif`` -> ``/vsis3/b/k.tif`` (likewise ``gs://``, ``az://``); ``/vsi…``
    paths and local paths unchanged."""
    text = os.fspath(path)
    scheme = urlsplit(text).scheme.lower()
    if text.startswith("/vsi") or scheme not in SCHEMES:
        return text
    if scheme in ("http", "https"):
        return SCHEMES[scheme] + text
    return SCHEMES[scheme] + text.split("://", 1)[1]


def display_name(path: str | os.PathLike) -> str:
    """``path`` as shown in messages, logs and summaries: a URL loses its query string and
    fragment (signatures, tokens); user names and passwords in it are dropped too."""
    text = os.fspath(path)
    if is_vrt_xml(text):
        match = _VRT_NAME.search(text)
        return html.unescape(match.group(1)) if match else "(virtual raster)"
    prefix = ""
    if text.startswith("/vsicurl/"):
        prefix, text = "/vsicurl/", text[len("/vsicurl/"):]
    parts = urlsplit(text)
    if parts.scheme.lower() not in SCHEMES:
        return prefix + redact(text)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return prefix + urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_vrt_xml(text: str) -> bool:
    """True for a VRT given as its XML text (a STAC item's or a mosaic's virtual scene)."""
    return text.lstrip().startswith("<VRTDataset")


def redact(text: str) -> str:
    """``text`` with the query string of every URL in it removed (e.g. a GDAL error
    message that quotes a signed URL)."""
    return _URL_IN_TEXT.sub(r"\1", text)


def configure_gdal() -> None:
    """Set :data:`GDAL_OPTIONS` for this process once; options already in the environment
    are left to the environment."""
    global _configured
    with _lock:
        if _configured:
            return
        from rasterio.env import set_gdal_config

        for key, value in GDAL_OPTIONS.items():
            if key not in os.environ:
                set_gdal_config(key, value)
        _configured = True
        log.debug("GDAL network options set: %s", {k: v for k, v in GDAL_OPTIONS.items() if k not in os.environ})


#: Object-store messages (S3, GCS, Azure through GDAL) for a missing object or a refusal.
_NOT_FOUND = ("specified key does not exist", "nosuchkey", "nosuchbucket", "specified bucket does not exist",
              "blobnotfound", "no such object")
_DENIED = ("access denied", "accessdenied", "forbidden", "invalidaccesskeyid", "signaturedoesnotmatch",
           "authorizationfailure")
_HTTP_CODE = re.compile(r"HTTP (?:response )?code[: ]+(\d{3})", re.IGNORECASE)


def http_status(reason: str) -> int | None:
    """The HTTP status code a GDAL message reports, if any."""
    match = _HTTP_CODE.search(reason)
    return int(match.group(1)) if match else None


def remote_open_error(name: str, reason: str) -> Exception:
    """One clear error for a remote scene that GDAL could not open (``name``: display name)."""
    from terramask.core.errors import SceneError, SceneNotFoundError

    status = http_status(reason)
    lowered = reason.lower()
    if status is None and any(k in lowered for k in _NOT_FOUND):
        return SceneNotFoundError(f"{name}: not found on the server ({reason.rstrip('.')})")
    if status is None and any(k in lowered for k in _DENIED):
        return SceneError(f"{name}: access denied ({reason.rstrip('.')}); check the credentials")
    if status == 404:
        return SceneNotFoundError(f"{name}: not found on the server (HTTP 404)")
    if status in (401, 403):
        return SceneError(f"{name}: access denied (HTTP {status}); check the credentials or the URL's signature")
    if status is not None:
        return SceneError(f"{name}: the server answered HTTP {status}: {reason}")
    return SceneError(f"{name}: cannot open the remote raster: {reason}")
