"""Request bodies of the web API (pydantic). Responses are plain JSON dicts built in
:mod:`terramask.web.render`; their shape is documented on each route."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Session and prediction ids: short URL-safe tokens.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SessionId = Annotated[str, Field(pattern=ID_PATTERN, description="Browser session id.")]


class Point(BaseModel):
    """A point prompt: ``(x, y)`` in the request's ``frame``; label 1 = object, 0 = background."""

    model_config = ConfigDict(extra="forbid")

    x: float
    y: float
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
    - ``include``: what to send per candidate: ``geojson`` (polygon in the scene CRS and
      lon/lat) and/or ``png`` (the mask for display, cropped, base64).
    """

    model_config = ConfigDict(extra="forbid")

    points: list[Point] = Field(default_factory=list)
    boxes: list[Annotated[list[float], Field(min_length=4, max_length=4)]] = Field(default_factory=list)
    frame: str = "pixel"
    multimask: bool = True
    session_id: SessionId | None = None
    refine_from: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    refine_candidate: Annotated[int, Field(ge=0)] = 0
    include: list[Literal["geojson", "png"]] = Field(default_factory=lambda: ["geojson", "png"])


class ExportRequest(BaseModel):
    """``POST /export``: write candidate ``candidate`` (0-based) of prediction
    ``prediction_id`` (or ``"last"``) of ``session_id`` into ``<out>/<name>``."""

    model_config = ConfigDict(extra="forbid")

    session_id: SessionId
    prediction_id: Annotated[str, Field(pattern=ID_PATTERN)] = "last"
    candidate: Annotated[int, Field(ge=0)] = 0
    name: str | None = None
    overwrite: bool = False
