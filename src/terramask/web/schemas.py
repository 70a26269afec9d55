"""Request bodies of the web API (pydantic). Responses are plain JSON dicts built in
:mod:`terramask.web.render`; their shape is documented on each route."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from terramask.web.limits import MAX_BOXES, MAX_POINTS

#: Session and prediction ids: short URL-safe tokens. (pydantic's regex engine anchors
#: ``$`` at the very end, so a trailing newline does not match.)
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SessionId = Annotated[str, Field(pattern=ID_PATTERN, description="Browser session id.")]
#: Export folder names: a plain name, never a path (checked with ``fullmatch``).
EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
#: What ``/predict`` can send per candidate.
Include = Literal["geojson", "png", "png_best"]
INCLUDE_ALL: tuple[Include, ...] = ("geojson", "png")
#: What the page asks per click: the masks to draw (polygons cost most of a response).
INCLUDE_DEFAULT: tuple[Include, ...] = ("png",)
#: A coordinate: a finite number (JSON ``NaN`` / ``Infinity`` are refused).
Coordinate = Annotated[float, Field(allow_inf_nan=False)]


def check_export_name(name: str) -> str:
    """``name`` if it is a plain folder name (1-80 letters, digits, ``_ . -``, starting
    with a letter or digit, no ``..``), else ValueError with the rule."""
    if EXPORT_NAME.fullmatch(name) is None or ".." in name:
        raise ValueError(
            f"export name {name!r} is not a plain folder name: use 1-80 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


class Point(BaseModel):
    """A point prompt: ``(x, y)`` in the request's ``frame``; label 1 = object, 0 = background."""

    model_config = ConfigDict(extra="forbid")

    x: Coordinate
    y: Coordinate
    label: Literal[0, 1] = 1


class PredictRequest(BaseModel):
    """``POST /predict``.

    - ``points`` / ``boxes`` (xyxy) in ``frame``: ``pixel`` (scene pixels, default),
      ``lonlat``, ``map`` (the scene CRS) or any CRS such as ``EPSG:32633``.
    - ``multimask``: 3 candidates (sorted by score) instead of 1.
    - ``session_id``: the browser's session (a new one is made and returned when absent).
    - ``refine_from``: a ``prediction_id`` of this session, or ``"last"``. The new points
      are added to that prediction's prompts and the low-res logits of its candidate
      ``refine_candidate`` (0 = best) are the prior mask. Boxes cannot be added this way.
    - ``include``: what to send per candidate besides score and areas: ``png`` (the mask
      for display, cropped, base64; the default), ``png_best`` (the best candidate's only,
      the others from ``GET /prediction/candidate`` when needed: what the page asks per
      click) and/or ``geojson`` (polygons in the scene CRS and lon/lat, with perimeters:
      several times slower, for scripts, not clicks).

    At most :data:`~terramask.web.limits.MAX_POINTS` points and
    :data:`~terramask.web.limits.MAX_BOXES` boxes; coordinates must be finite.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"points": [{"x": 10, "y": 10, "label": 1}]},
        {"boxes": [[5, 5, 40, 30]], "multimask": False, "session_id": "example"},
    ]})

    points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS)
    boxes: list[Annotated[list[Coordinate], Field(min_length=4, max_length=4)]] = Field(
        default_factory=list, max_length=MAX_BOXES)
    frame: str = Field("pixel", max_length=2000)
    multimask: StrictBool = True
    session_id: SessionId | None = None
    refine_from: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    refine_candidate: Annotated[int, Field(ge=0)] = 0
    include: list[Include] = Field(default_factory=lambda: list(INCLUDE_DEFAULT), max_length=2)


class ExportRequest(BaseModel):
    """``POST /export``: write candidate ``candidate`` (0-based) of prediction
    ``prediction_id`` (or ``"last"``) of ``session_id`` into ``<out>/<name>``; ``name``
    is a plain folder name (:func:`check_export_name`)."""

    model_config = ConfigDict(extra="forbid")

    session_id: SessionId
    prediction_id: Annotated[str, Field(pattern=ID_PATTERN)] = "last"
    candidate: Annotated[int, Field(ge=0)] = 0
    name: str | None = None
    overwrite: StrictBool = False

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        return None if name is None else check_export_name(name)


class ErrorBody(BaseModel):
    """Every error response: one sentence and the error's class name."""

    detail: str
    type: str


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for ``codes``, all with :class:`ErrorBody`."""
    words = {400: "Bad parameter", 404: "Not found", 409: "Conflict: changed meanwhile, or exists",
             413: "Request body too large", 422: "Invalid request or prompt", 499: "Client went away",
             500: "Server error", 503: "Model busy or over the time budget"}
    return {code: {"model": ErrorBody, "description": words.get(code, "Error")} for code in codes}


ObjectId = Annotated[int, Field(ge=1, le=2**31 - 1)]
ClassId = Annotated[int, Field(ge=1, le=255)]
Version = Annotated[int, Field(ge=0, le=2**62)]


class AcceptRequest(BaseModel):
    """``POST /objects``: accept candidate ``candidate`` (0-based) of prediction
    ``prediction_id`` (or ``"last"``) of ``session_id`` as an object of class ``class_id``."""

    model_config = ConfigDict(extra="forbid")

    session_id: SessionId
    prediction_id: Annotated[str, Field(pattern=ID_PATTERN)] = "last"
    candidate: Annotated[int, Field(ge=0, le=255)] = 0
    class_id: ClassId = 1
    object_id: ObjectId | None = Field(None, description="Replace this object (re-opened and refined) instead of adding one.")
    version: Version | None = Field(None, description="The replaced object's current version (with object_id).")


class ReopenRequest(BaseModel):
    """``POST /objects/{id}/reopen``: the session that refines the object and the
    object version the page last saw."""

    model_config = ConfigDict(extra="forbid")

    session_id: SessionId
    version: Version


class ReclassRequest(BaseModel):
    """``PATCH /objects/{id}``: the new class and the object version the page last saw."""

    model_config = ConfigDict(extra="forbid")

    class_id: ClassId
    version: Version


class ClassRequest(BaseModel):
    """``POST /classes``: a class name (1-40 characters) and a ``#rrggbb`` colour."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=40)]
    color: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
