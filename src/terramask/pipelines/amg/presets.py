"""Named parameter sets for automatic mask generation (``terramask auto --preset``).

A preset only changes some :class:`~terramask.pipelines.amg.params.AmgParams`; every
parameter can still be set alone on top of it (``resolve_params("small-objects",
pred_iou_thresh=0.85)``).

- ``default``: the reference generator's defaults (``points_per_side=32`` …).
- ``small-objects``: the reference notebook's remote-sensing tuning
  (``../shared/WORKFLOW.md``): a 64 x 64 grid, one crop layer with half the points per
  side, looser quality thresholds and removal of specks and holes under 10 pixels. It
  finds small objects (cars, sheds, trees) the default misses, at several times the cost.
- ``quick``: a 16 x 16 grid (a quarter of the prompts, so about 4x less decoder time) for
  previews and scenes of large objects (agricultural fields, water bodies, forest
  stands), where a coarser grid still puts several points in every object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from terramask.core.errors import InputError
from terramask.pipelines.amg.params import AmgParams


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    values: Mapping[str, Any]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("default", "the reference generator's defaults (32x32 points, no crops)", {}),
        Preset(
            "small-objects",
            "the reference notebook's remote-sensing tuning: 64x64 points, 1 crop layer, looser thresholds, min region 10 px",
            {
                "points_per_side": 64,
                "pred_iou_thresh": 0.8,
                "stability_score_thresh": 0.9,
                "crop_n_layers": 1,
                "crop_n_points_downscale_factor": 2,
                "min_mask_region_area": 10,
            },
        ),
        Preset("quick", "16x16 points: previews and large objects (fields, water), about 4x faster", {"points_per_side": 16}),
    )
}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get_preset(name: str) -> Preset:
    key = (name or "default").strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise InputError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[key]


def resolve_params(preset: str | None = "default", **overrides: Any) -> AmgParams:
    """:class:`AmgParams` of ``preset`` with ``overrides`` applied (``None`` = keep the
    preset's value). Raises :class:`InputError` for an unknown preset, an unknown
    parameter or an invalid value."""
    return AmgParams.from_mapping(get_preset(preset or "default").values, **overrides)
