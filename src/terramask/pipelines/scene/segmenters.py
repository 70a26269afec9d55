"""Tile segmenters: the one place that decides how a backend segments everything.

A *segmenter* is a picklable zero-argument callable returning ``segment_tile(image:
GeoImage) -> MaskSet`` (masks on the image grid, with ``scores`` and optionally a
``stability_score`` column). :func:`segment_function` is the single dispatch between a
backend's own ``generate`` (the ``Generator`` capability, e.g. ``classic``) and automatic
mask generation through the point-decoding protocol (SAM family).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, ClassVar, Mapping

from terramask.core.errors import InputError, ModelError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.models.base import Backend

SegmentTile = Callable[[GeoImage], Any]  # a MaskSet, or compact masks (AmgResult)


def segment_function(backend: Any, params: Mapping[str, Any] | Any | None = None, mode: str = "fast") -> SegmentTile:
    """``segment_tile(image)`` for a loaded backend: automatic masks of one tile.

    The one place that decides how a backend segments everything:

    - backends that decode point prompts (the ``PointBatchDecoder`` capability: SAM
      family, ONNX) go through automatic mask generation
      (:func:`terramask.pipelines.amg.generator.generate_compact`, compact masks) with
      ``params`` (an ``AmgParams`` or a dict of its fields) and ``mode``;
    - backends that segment on their own (the ``Generator`` capability, e.g. ``classic``)
      get ``backend.generate(image, **params)`` when ``params`` holds their own options,
      else ``backend.generate(image)`` with the generator's post-processing of
      ``params`` (:func:`terramask.pipelines.amg.generator.from_own_masks`);
    - any other backend is a :class:`ModelError`.
    """
    from terramask.pipelines.amg import generator as amg
    from terramask.pipelines.amg.params import AmgParams

    if amg.supports_point_decoding(backend):
        return partial(_amg_generate, backend, _amg_params(params), mode)
    if not callable(getattr(backend, "generate", None)):
        raise ModelError(
            f"backend {getattr(backend, 'name', type(backend).__name__)!r} can neither decode point prompts "
            "nor generate masks itself, so it cannot segment automatically"
        )
    if params is None or (isinstance(params, Mapping) and not set(params) <= set(AmgParams.names())):
        return partial(_generate_with, backend, dict(params or {}))
    return partial(_own_masks, backend, _amg_params(params), mode)


def _amg_params(params: Mapping[str, Any] | Any | None) -> Any:
    from terramask.pipelines.amg.params import AmgParams

    return params if isinstance(params, AmgParams) else AmgParams.from_mapping(dict(_params_dict(params or {})))


def _generate_with(backend: Any, kwargs: dict, image: GeoImage) -> MaskSet:
    return backend.generate(image, **kwargs)


def _own_masks(backend: Any, params: Any, mode: str, image: GeoImage):
    from terramask.pipelines.amg import generator as amg

    return amg.from_own_masks(backend.generate(image), image, params, mode)


def _amg_generate(backend: Any, params: Any, mode: str, image: GeoImage):
    from terramask.pipelines.amg import generator as amg

    return amg.generate_compact(backend, image, params, mode=mode)


@dataclass(frozen=True)
class AutoSegmenter:
    """Picklable recipe for a tile segmenter: load ``model`` and segment automatically.

    ``model``/``checkpoint``/``device``/``runtime``/``cache`` as
    :func:`terramask.models.resolve.load_backend`; ``params``: automatic-generation
    parameters (a dict: ``AmgParams`` fields for SAM models, ``generate`` options for
    ``classic``); ``mode``: ``fast`` or ``exact``. This is the model part of a scene run's
    configuration (the rest is :class:`terramask.pipelines.scene.config.SceneRunConfig`).
    """

    model: str | None = None
    checkpoint: str | None = None
    device: str = "cpu"
    params: Mapping[str, Any] | None = None
    mode: str = "fast"
    runtime: str = "torch"
    cache: bool = False

    def __call__(self) -> SegmentTile:
        return segment_function(self.load(), self.params, self.mode)

    def load(self) -> Backend:
        """The backend, loaded (once per call: engines call the factory once per worker)."""
        from terramask.models.resolve import load_backend

        return load_backend(self.model, checkpoint=self.checkpoint, device=self.device, runtime=self.runtime,
                            cache=self.cache)

    def spec(self):
        """The registry spec of the model that will be loaded (resolved as ``load_backend`` does)."""
        from terramask.models.registry import get_spec
        from terramask.models.resolve import resolve_model_name, spec_for_checkpoint

        if self.checkpoint is not None and not (self.model or "").strip():
            return spec_for_checkpoint(self.checkpoint)
        return get_spec(resolve_model_name(self.model))

    def validate(self) -> None:
        """Raise :class:`InputError` now for parameters the model would reject in every tile."""
        check_params(self.params, self.spec().family)
        from terramask.pipelines.amg.params import check_mode

        check_mode(self.mode)

    def describe(self) -> dict:
        return {"model": self.spec().name, "checkpoint": self.checkpoint, "device": self.device,
                "params": dict(self.params or {}), "mode": self.mode}


def check_params(params: Mapping[str, Any] | Any | None, family: str) -> None:
    """Check automatic-generation ``params`` for a model ``family`` before any tile runs:
    ``AmgParams`` fields for every model; the ``classic`` model also takes its own
    ``generate`` options (``superpixels``, ``merge_thresh`` …), but not both kinds at once."""
    from terramask.pipelines.amg.params import AmgParams

    if params is None or isinstance(params, AmgParams):
        return
    values = dict(_params_dict(params))
    if set(values) <= set(AmgParams.names()):
        AmgParams.from_mapping(values)
        return
    from terramask.models.resolve import check_own_generate_options

    try:
        if check_own_generate_options(family, values):
            return
    except InputError as exc:
        raise InputError(f"{exc}; or give automatic-generation parameters ({', '.join(AmgParams.names())}), "
                         "not both kinds") from None
    unknown = sorted(set(values) - set(AmgParams.names()))
    raise InputError(f"unknown automatic-mask parameter(s) {', '.join(unknown)}; known: {', '.join(AmgParams.names())}")


@dataclass(frozen=True)
class BackendSegmenter:
    """A segmenter around an already loaded backend (local engine only: not shipped to Ray)."""

    shippable: ClassVar[bool] = False

    backend: Backend
    params: Mapping[str, Any] | Any | None = None
    mode: str = "fast"

    def __call__(self) -> SegmentTile:
        return segment_function(self.backend, self.params, self.mode)

    def describe(self) -> dict:
        return {"model": getattr(self.backend, "name", type(self.backend).__name__),
                "params": dict(_params_dict(self.params or {})), "mode": self.mode}


def describe_segmenter(segmenter: Any) -> dict:
    describe = getattr(segmenter, "describe", None)
    if callable(describe):
        return describe()
    return {"segmenter": getattr(segmenter, "__qualname__", type(segmenter).__name__)}


def _params_dict(params: Any) -> Mapping[str, Any]:
    if isinstance(params, Mapping):
        return params
    if hasattr(params, "to_dict"):
        return params.to_dict()
    raise InputError(f"params must be a mapping or a parameter object with to_dict(), got {type(params).__name__}")
