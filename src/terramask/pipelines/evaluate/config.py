"""Settings of an evaluation run (:class:`EvalConfig`), checked once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from terramask.core.errors import InputError
from terramask.eval.clicks import MULTIMASK, REGIONS

MODES = ("clicks", "box", "auto", "find")


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate. Defaults follow the published protocols (RITM / SimpleClick / SAM):
    20 clicks, NoC@85/90, the previous logits as prior, several candidates for the first
    click only (the best-scoring one kept). ``n_boot``: bootstrap resamples of the
    intervals (:mod:`terramask.eval.intervals`). Mode ``find``
    (:mod:`terramask.pipelines.evaluate.find`): ``find_text`` phrases for a concept
    backend, or ``exemplars_per_image`` labelled objects per image as find-similar's
    exemplars (one of the two), with ``similarity`` and ``max_points``."""

    mode: str = "clicks"
    max_clicks: int = 20
    stop_iou: float = 0.90
    noc_thresholds: tuple[float, ...] = (0.85, 0.90)
    miou_ks: tuple[int, ...] = (1, 3, 5)
    multimask: str = "first"
    region: str = "deepest"
    use_prior: bool = True
    boundary_tolerance: float = 2.0
    auto_thresholds: tuple[float, ...] = (0.5, 0.75)
    auto_params: dict = field(default_factory=dict)
    n_examples: int = 3
    n_boot: int = 2000
    find_text: tuple[str, ...] = ()
    exemplars_per_image: int | None = None
    similarity: float = 0.6
    max_points: int = 64

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown evaluation mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not 1 <= self.max_clicks <= 1000:
            raise InputError(f"max clicks must be in 1..1000, got {self.max_clicks}")
        if not 0.0 < self.stop_iou <= 1.0:
            raise InputError(f"stop IoU must be in (0, 1], got {self.stop_iou}")
        for t in (*self.noc_thresholds, *self.auto_thresholds):
            if not 0.0 < t <= 1.0:
                raise InputError(f"IoU thresholds must be in (0, 1], got {t}")
        if self.noc_thresholds and self.stop_iou < max(self.noc_thresholds):
            raise InputError(
                f"stop IoU {self.stop_iou} is below the NoC threshold {max(self.noc_thresholds)}; "
                "the simulation would stop before NoC can be measured"
            )
        for k in self.miou_ks:
            if not 1 <= k <= self.max_clicks:
                raise InputError(f"mIoU@{k} needs 1 <= k <= max clicks ({self.max_clicks})")
        if self.multimask not in MULTIMASK:
            raise InputError(f"unknown multimask policy {self.multimask!r}; use one of {', '.join(MULTIMASK)}")
        if self.region not in REGIONS:
            raise InputError(f"unknown error-region rule {self.region!r}; use one of {', '.join(REGIONS)}")
        if not np.isfinite(self.boundary_tolerance) or self.boundary_tolerance < 0:
            raise InputError(f"boundary tolerance must be >= 0 pixels, got {self.boundary_tolerance}")
        if self.n_boot < 1:
            raise InputError(f"bootstrap resamples must be >= 1, got {self.n_boot}")
        if self.n_examples < 0:
            raise InputError(f"number of examples must be >= 0, got {self.n_examples}")
        object.__setattr__(self, "find_text", tuple(self.find_text))
        if self.mode == "find" and bool(self.find_text) == bool(self.exemplars_per_image):
            raise InputError("--mode find needs --text PHRASE (with --class K) or --exemplars-from-labels N, one of them")
        if self.mode != "find" and (self.find_text or self.exemplars_per_image):
            raise InputError("--text and --exemplars-from-labels only apply to --mode find")
        if self.exemplars_per_image is not None and self.exemplars_per_image < 1:
            raise InputError(f"--exemplars-from-labels must be >= 1, got {self.exemplars_per_image}")
        if not -1.0 <= self.similarity <= 1.0 or self.max_points < 1:
            raise InputError("--similarity must be in [-1, 1] and max points >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def auto_params_for(self, model: str) -> dict:
        """Generation parameters of ``model``: keys without a prefix apply to every model,
        ``"MODEL:key"`` only to that model (and win)."""
        out = {k: v for k, v in self.auto_params.items() if ":" not in k}
        prefix = f"{model}:"
        out.update({k[len(prefix) :]: v for k, v in self.auto_params.items() if k.startswith(prefix)})
        return out
