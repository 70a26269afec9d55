"""What a fine-tuning pipeline needs from a model with a trainable mask decoder.

The pipeline (:mod:`terramask.pipelines.finetune`) holds no torch: it samples prompts
and labels with numpy and drives a :class:`Trainer`, obtained from
:func:`terramask.models.resolve.load_trainer`. Coordinates crossing this protocol are
pixels of the image given to the backend's ``set_image`` (``x=col, y=row``), like every
backend call; targets live in the model's low-resolution frame (see
:meth:`Trainer.prepare_target`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from terramask.models.base import Backend, Embedding

#: ``--train`` values: the decoder (and prompt encoder) only, or with low-rank adapters
#: on the image encoder's attention.
TRAIN_MODES = ("decoder", "decoder+lora")


@dataclass(frozen=True)
class PromptSample:
    """One training prompt in image pixels: ``points (P, 2)`` float ``(x, y)``,
    ``labels (P,)`` int (1 object, 0 background) and/or ``box (4,)`` xyxy.

    ``refine``: train the second click of an interactive session instead (SAM's
    iterative recipe, what ``terramask eval``'s later clicks ask): the trainer first
    predicts from these prompts without gradient, adds a correction click in the largest
    error region and trains on both clicks with the first prediction as prior mask."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    refine: bool = False

    @property
    def single_click(self) -> bool:
        """One point and no box: an ambiguous prompt, trained with SAM's multimask rule."""
        return self.box is None and len(self.points) == 1


@dataclass(frozen=True)
class TrainItem:
    """One labelled object and a prompt on it.

    ``embedding``: the backend's (cached) embedding of the image; ``target``: the
    :meth:`Trainer.prepare_target` array of the object; ``image``: the ``(H, W, 3)``
    uint8 image, needed only when the encoder trains (``decoder+lora``).
    """

    embedding: Embedding
    target: np.ndarray
    prompt: PromptSample
    image: np.ndarray | None = None


@dataclass(frozen=True)
class StepLosses:
    """Mean losses of one optimiser step: ``loss = 20 * focal + dice + iou_mse`` (SAM's
    weights). ``finite`` is False when any of them was NaN/inf: then no update was made."""

    loss: float
    focal: float
    dice: float
    iou_mse: float
    finite: bool = True


class Collective(Protocol):
    """The workers of a data-parallel run, as a training step and the pipeline see them.

    ``rank``/``world``: this worker's index and the number of workers (one replica of the
    model each). ``sum_gradients`` adds a list of gradient tensors over the workers in
    place; ``sum_array`` does the same for a float array (loss sums); ``broadcast`` returns
    rank 0's ``obj`` on every worker; ``barrier`` waits for all.
    """

    rank: int
    world: int

    def sum_gradients(self, grads: list[Any]) -> None: ...

    def sum_array(self, values: np.ndarray) -> np.ndarray: ...

    def broadcast(self, obj: Any) -> Any: ...

    def barrier(self) -> None: ...


class SingleProcess:
    """The :class:`Collective` of a run with one worker: every operation is the identity."""

    rank = 0
    world = 1

    def sum_gradients(self, grads: list[Any]) -> None:
        return None

    def sum_array(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def broadcast(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        return None


@runtime_checkable
class Trainer(Protocol):
    """A backend whose prompt encoder and mask decoder (and optionally encoder adapters)
    are trained in place, so :attr:`backend` predicts with the current weights."""

    family: str
    arch: str
    mode: str

    @property
    def backend(self) -> Backend: ...

    def trainable_parameters(self) -> int: ...

    def prepare_target(self, embedding: Embedding, mask: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
        """``mask``/``ignore`` ``(H, W)`` bool on the image grid -> ``(low, low)`` int8 in
        the model's low-res frame: 1 object, 0 background, -1 not counted (ignored pixels
        and the padding right/below the resized image)."""
        ...

    def train_step(self, items: Sequence[TrainItem], total: int | None = None,
                   collective: Collective | None = None) -> StepLosses:
        """One optimiser step. Alone: on the mean loss of ``items``. Data-parallel: ``items``
        is this worker's share of a global batch of ``total`` items; each item's loss is
        divided by ``total`` and the gradients (and loss sums) are summed over
        ``collective``, so every replica makes the step one worker would make on the whole
        batch. The returned losses are the global batch's means."""
        ...

    def save_checkpoint(self, path: Path) -> None:
        """The whole model in the family's official checkpoint format, written atomically."""
        ...

    def load_decoder(self, path: Path) -> None:
        """Load the prompt encoder and mask decoder tensors of a :meth:`save_checkpoint`
        file into the model (e.g. the best epoch's, after training went on)."""
        ...

    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        """Trainable weights, optimiser, torch RNG and ``extra`` (JSON-able), atomically."""
        ...

    def load_state(self, path: Path) -> dict[str, Any]:
        """Restore :meth:`save_state`'s file; returns its ``extra``."""
        ...
