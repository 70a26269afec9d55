"""terramask errors -> HTTP status codes, in one table (the web half of DESIGN.md "Errors").

Every error response is JSON ``{"detail": "<one line>", "type": "<ErrorClass>"}``; no
traceback ever reaches the client (it goes to the server log instead). The status of an
exception is that of the nearest class in its MRO found in :data:`STATUS_CODES`, so a
subclass added later inherits its parent's code.

Modelled on titiler's ``DEFAULT_STATUS_CODES`` + ``add_exception_handlers``: an app
built by :func:`terramask.web.app.create_app` installs the handlers, and a caller may
pass its own table to override single entries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from terramask.core.errors import (
    BandError,
    DatasetError,
    DownloadError,
    InputError,
    MissingDependencyError,
    ModelError,
    OutputError,
    PromptError,
    SceneError,
    SceneNotFoundError,
    TerramaskError,
    UnknownModelError,
    WeightsNotFoundError,
)
from terramask.web.everything import JobConflict, JobNotFound
from terramask.web.export import ExportExistsError
from terramask.web.limits import RequestCancelled, RequestTimeout
from terramask.web.objects import ObjectNotFound, VersionConflict
from terramask.web.scenes import SceneNotListed, ViewsBusy
from terramask.web.store import PredictionGone
from terramask.web.uploads import NotARaster, UploadsDisabled, UploadTooLarge

log = logging.getLogger(__name__)

#: Exception class -> HTTP status. Looked up along the exception's MRO (nearest wins).
STATUS_CODES: dict[type[BaseException], int] = {
    PromptError: 422,  # a click outside the scene, on nodata, a degenerate box
    BandError: 422,
    DatasetError: 422,
    InputError: 400,  # any other bad parameter
    SceneNotFoundError: 404,
    PredictionGone: 404,  # refine/export from a prediction this server no longer holds
    SceneNotListed: 404,  # a scene id (or model) the server does not offer: never a path
    NotARaster: 422,  # an upload that is not a GeoTIFF/PNG/JPEG GDAL reads
    UploadTooLarge: 413,
    UploadsDisabled: 403,
    ViewsBusy: 503,  # every open scene view is serving a request
    ExportExistsError: 409,
    ObjectNotFound: 404,  # an object or class id the layer does not have (deleted in another tab)
    VersionConflict: 409,  # a stale tab changing an object another tab changed; nothing to undo
    JobNotFound: 404,  # a segment-everything job this server no longer keeps
    JobConflict: 409,  # the session's job still runs, or its candidates are not ready
    RequestTimeout: 503,  # over the request's time budget (model busy or slow); try again
    RequestCancelled: 499,  # the client went away; nobody reads this answer
    SceneError: 500,  # the raster exists but cannot be read
    UnknownModelError: 400,
    WeightsNotFoundError: 503,  # the server runs, the model it needs is not installed
    DownloadError: 502,
    MissingDependencyError: 503,
    ModelError: 500,
    OutputError: 500,
    TerramaskError: 500,
}

#: Appended to a 503 for missing weights when the message does not already say how to get them.
WEIGHTS_HINT = "get weights with: terramask models download sam-vit-b (or start with --checkpoint FILE)"


def status_for(exc: BaseException, table: Mapping[type[BaseException], int] | None = None) -> int:
    """The HTTP status for ``exc``: the nearest class of its MRO in ``table``, else 500."""
    table = STATUS_CODES if table is None else table
    for cls in type(exc).__mro__:
        if cls in table:
            return int(table[cls])
    return 500


def one_line(text: str, limit: int = 500) -> str:
    """``text`` squeezed to one line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_message(exc: BaseException) -> str:
    """The one-line message a client sees for ``exc``."""
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, WeightsNotFoundError) and "terramask models download" not in text:
        text = f"{text}; {WEIGHTS_HINT}"
    if not isinstance(exc, TerramaskError):
        # Unanticipated: name the class, keep the message short, never the traceback.
        text = one_line(f"internal error ({type(exc).__name__}): {text}", 300)
    return text


def error_response(status: int, detail: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, "type": kind})


def _error_text(err: dict) -> str:
    """One pydantic error as words: list-length limits as a sentence, ``Value error, ``
    prefixes dropped."""
    ctx = err.get("ctx") or {}
    prompts = tuple(err.get("loc", ()))[-1:] in (("points",), ("boxes",))
    if err.get("type") == "too_long" and prompts and isinstance(ctx.get("actual_length"), int):
        return (f"at most {ctx['max_length']:,} per request, got {ctx['actual_length']:,}; "
                "send the prompts of one object at a time")
    text = str(err.get("msg", "invalid"))
    return text.removeprefix("Value error, ")


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: ``body.points.0.x: Field required``."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {_error_text(err)}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return one_line("invalid request: " + "; ".join(parts))


def add_exception_handlers(app: FastAPI, status_codes: Mapping[type[BaseException], int] | None = None) -> None:
    """Install handlers so every error becomes ``{"detail", "type"}`` JSON with one line.

    ``status_codes`` entries override/extend :data:`STATUS_CODES`.
    """
    table = {**STATUS_CODES, **(status_codes or {})}

    async def terramask_error(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc, table)
        if isinstance(exc, (RequestTimeout, RequestCancelled)):
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        elif status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return error_response(status, error_message(exc), type(exc).__name__)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
        return error_response(500, error_message(exc), type(exc).__name__)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        response = error_response(exc.status_code, one_line(str(exc.detail)), "HTTPException")
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, _validation_message(exc), "RequestValidationError")

    for cls in table:
        if issubclass(cls, Exception):
            app.add_exception_handler(cls, terramask_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
