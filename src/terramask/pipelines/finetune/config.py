"""Settings of a fine-tuning run (:class:`FinetuneConfig`), checked once."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from terramask.core.errors import InputError
from terramask.models.finetune.trainable import TRAIN_MODES
from terramask.pipelines.finetune.prompts import PROMPT_KINDS

#: ``--engine`` values: this process, or data-parallel Ray Train workers
ENGINES = ("local", "ray")
#: Ray workers when ``--workers`` is not given
DEFAULT_RAY_WORKERS = 2

#: fields that must match for a run directory to be resumed
RESUME_KEYS = (
    "dataset", "model", "checkpoint", "train", "prompts", "val", "target_class", "seed", "lr",
    "weight_decay", "batch_size", "instances_per_image", "min_area", "limit",
)


@dataclass(frozen=True)
class FinetuneConfig:
    """What ``terramask finetune`` trains and how.

    ``dataset``: a labelled folder (``images/`` + ``masks/``, as ``terramask eval``);
    ``model``/``checkpoint``: the base model (a registry name, a SAM checkpoint file, or a
    run directory); ``train``: ``decoder`` or ``decoder+lora``; ``prompts``: ``clicks``,
    ``boxes`` or ``both``; ``val``: fraction of images held back (0: none, no early
    stopping); ``engine``: ``local`` (this process) or ``ray`` (data-parallel over
    ``workers`` Ray Train workers, CPU; same global batch, same result within float
    tolerance); ``patience``: epochs without a better val mIoU@1 before stopping;
    ``batch_size``: objects per optimiser step; ``instances_per_image``: objects used per
    image (None: all); ``eval_clicks``: click budget of the before/after evaluation.
    """

    dataset: str
    model: str | None = "sam-vit-b"
    checkpoint: str | None = None
    train: str = "decoder"
    prompts: str = "both"
    epochs: int = 10
    val: float = 0.2
    target_class: int = 1
    seed: int = 0
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 4
    patience: int = 3
    instances_per_image: int | None = None
    min_area: int = 16
    limit: int | None = None
    eval_clicks: int = 5
    device: str = "cpu"
    engine: str = "local"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.train not in TRAIN_MODES:
            raise InputError(f"unknown --train {self.train!r}; use one of {', '.join(TRAIN_MODES)}")
        if self.prompts not in PROMPT_KINDS:
            raise InputError(f"unknown --prompts {self.prompts!r}; use one of {', '.join(PROMPT_KINDS)}")
        if not 1 <= self.epochs <= 10000:
            raise InputError(f"--epochs must be in 1..10000, got {self.epochs}")
        if not 0.0 <= self.val < 1.0:
            raise InputError(f"--val must be a fraction in [0, 1), got {self.val}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise InputError(f"learning rate must be > 0 and weight decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.batch_size < 1 or self.patience < 1 or self.min_area < 1 or self.eval_clicks < 1:
            raise InputError("batch size, patience, minimum area and evaluation clicks must be >= 1")
        if self.engine not in ENGINES:
            raise InputError(f"unknown --engine {self.engine!r}; use one of {', '.join(ENGINES)}")
        if self.workers is not None and (self.engine != "ray" or self.workers < 1):
            raise InputError("--workers N (N >= 1) goes with --engine ray")
        if self.engine == "ray" and self.device != "cpu":
            raise InputError("--engine ray trains on CPU workers (gloo); use --device cpu, or the local engine on a GPU")
        if self.instances_per_image is not None and self.instances_per_image < 1:
            raise InputError(f"instances per image must be >= 1, got {self.instances_per_image}")

    def to_dict(self) -> dict:
        return asdict(self)

    def resume_key(self) -> dict:
        """The settings a resumed run must share with the interrupted one."""
        d = self.to_dict()
        return {k: d[k] for k in RESUME_KEYS}
