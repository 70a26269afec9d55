"""Labelled evaluation datasets: ``images/`` + ``masks/`` (+ ``masks_instance/``).

Layout (as in ``../shared/data/rs/``)::

    DATASET/images/<stem>.{png,jpg,jpeg,tif,tiff}
    DATASET/masks/<stem>.{png,tif,tiff}             uint8 class index per pixel, 255 = ignore
    DATASET/masks_instance/<stem>.{png,tif,tiff}    optional; uint16 instance id, 0 = none

Every image needs a mask with the same stem and the same width x height (and the
converse), else :class:`DatasetError`. Objects of the target class ``K``:

- with instance masks: every instance id whose pixels are mostly class ``K``;
- without: the connected components (8-connectivity) of ``class == K``.

Instances smaller than ``min_area`` pixels (counting non-ignored pixels) are dropped
and counted in ``Sample.n_small``. ``instances_per_image`` samples that many objects per
image deterministically (seeded by ``seed`` and the file stem), ``limit`` keeps that many
images evenly spaced over the sorted stems.

Images are read by the ``read_image`` callable given to the dataset: by default
:func:`read_rgb8` (Pillow: PNG/JPEG, 16-bit PNGs stretched). GeoTIFFs need the io layer,
which this layer must not import: the caller injects a reader that understands them
(:func:`terramask.pipelines.evaluate.readers.read_image`, used by ``terramask eval``),
so 16-bit panchromatic tiles look as they do in every other command.

:meth:`SegmentationDataset.check_labels` reads the masks once before a run and stops
it with one clear line when the target class cannot give any object.
"""

from __future__ import annotations

import copy
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from terramask.core.errors import DatasetError, InputError
from terramask.eval.metrics import IGNORE_LABEL

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Pair:
    """File paths of one labelled image."""

    stem: str
    image: Path
    mask: Path
    instances: Path | None = None


@dataclass
class Sample:
    """One loaded image with its labels, all on the image grid ``(H, W)``.

    - ``image``: ``(H, W, 3)`` uint8 RGB;
    - ``labels``: ``(H, W)`` integer class index as stored (uint8; 255 = ignore);
    - ``ignore``: ``(H, W)`` bool, True where ``labels == ignore_label``;
    - ``target``: ``(H, W)`` bool, pixels of the target class (not ignored);
    - ``instances``: ``(H, W)`` int32, ``0`` = none, ``1..n`` = selected objects;
    - ``instance_ids``: ``(n,)`` the ids in the source (instance-mask id or component index);
    - ``n_total``: objects of the class before ``min_area`` and sampling; ``n_small``: dropped as too small.
    """

    stem: str
    image: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    target: np.ndarray
    instances: np.ndarray
    instance_ids: np.ndarray
    n_total: int
    n_small: int

    @property
    def n_instances(self) -> int:
        return int(len(self.instance_ids))

    def instance_mask(self, i: int) -> np.ndarray:
        """``(H, W)`` bool mask of selected object ``i`` (0-based)."""
        return self.instances == (i + 1)


def read_rgb8(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a PNG/JPEG image (Pillow). GeoTIFFs need a reader from
    the io layer, injected as ``SegmentationDataset(read_image=...)``."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        raise DatasetError(
            f"{path}: GeoTIFF images need a GeoTIFF reader; pass read_image=terramask.pipelines.evaluate.readers.read_image"
        )
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                from terramask.core.image import GeoImage

                arr = np.asarray(im)
                return GeoImage(arr[None].astype(np.float64 if im.mode == "F" else np.int64), source=str(path)).to_rgb8()
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc


def read_label(path: Path, what: str = "mask") -> np.ndarray:
    """A single-band label image as a 2-D integer array (Pillow; PNG or TIFF)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read {what} ({exc})") from exc
    if arr.ndim != 2:
        raise DatasetError(f"{path}: a {what} must be single-band, got shape {arr.shape}")
    if arr.dtype.kind not in "ui":
        raise DatasetError(f"{path}: a {what} must hold integers, got dtype {arr.dtype}")
    return arr


def _index(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in suffixes or p.name.startswith("."):
            continue
        if p.stem in out:
            raise DatasetError(f"{folder}: two files share the stem {p.stem!r} ({out[p.stem].name}, {p.name})")
        out[p.stem] = p
    return out


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def find_pairs(root: str | Path) -> list[Pair]:
    """All ``(image, mask[, instance mask])`` pairs of a dataset folder, sorted by stem."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    img_dir, mask_dir, inst_dir = root / "images", root / "masks", root / "masks_instance"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DatasetError(f"{root}: no {d.name}/ folder; a dataset needs images/ and masks/ with matching file stems")
    images = _index(img_dir, IMAGE_SUFFIXES)
    masks = _index(mask_dir, MASK_SUFFIXES)
    if not images:
        raise DatasetError(f"{img_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    if missing := set(images) - set(masks):
        raise DatasetError(f"{root}: images without a mask in masks/: {_few(missing)}")
    if extra := set(masks) - set(images):
        raise DatasetError(f"{root}: masks without an image in images/: {_few(extra)}")
    instances: dict[str, Path] = {}
    if inst_dir.is_dir():
        instances = _index(inst_dir, MASK_SUFFIXES)
        if missing := set(images) - set(instances):
            raise DatasetError(f"{root}: images without an instance mask in masks_instance/: {_few(missing)}")
    return [Pair(s, images[s], masks[s], instances.get(s)) for s in sorted(images)]


def _header_size(path: Path) -> tuple[int, int] | None:
    """``(rows, cols)`` from the file header, or None when Pillow cannot parse it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return (im.height, im.width)
    except Exception:  # noqa: BLE001 - multi-band/float TIFFs Pillow cannot parse: checked at load
        return None


def select_evenly(n: int, limit: int | None) -> list[int]:
    """``limit`` indices evenly spaced over ``range(n)`` (all when ``limit`` is None or >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


class SegmentationDataset:
    """A labelled dataset folder, iterated image by image (one :class:`Sample` in memory)."""

    def __init__(
        self,
        root: str | Path,
        target_class: int = 1,
        *,
        ignore_label: int = IGNORE_LABEL,
        limit: int | None = None,
        instances_per_image: int | None = None,
        min_area: int = 16,
        seed: int = 0,
        read_image: Callable[[Path], np.ndarray] = read_rgb8,
    ) -> None:
        if not 0 <= target_class <= 65535 or target_class == ignore_label:
            raise InputError(f"target class must be a label value other than the ignore label {ignore_label}, got {target_class}")
        if instances_per_image is not None and instances_per_image < 1:
            raise InputError(f"instances per image must be >= 1, got {instances_per_image}")
        if min_area < 1:
            raise InputError(f"min_area must be >= 1 pixel, got {min_area}")
        self.root = Path(root)
        self.target_class = int(target_class)
        self.ignore_label = int(ignore_label)
        self.instances_per_image = instances_per_image
        self.min_area = int(min_area)
        self.seed = int(seed)
        self.read_image = read_image
        all_pairs = find_pairs(self.root)
        self.n_available = len(all_pairs)
        self.pairs = [all_pairs[i] for i in select_evenly(len(all_pairs), limit)]

    @property
    def name(self) -> str:
        return self.root.name

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Sample]:
        for pair in self.pairs:
            yield self.load(pair)

    def check_sizes(self) -> None:
        """Compare image and mask sizes from file headers (cheap); raise on the first mismatch."""
        for pair in self.pairs:
            sizes = {p: _header_size(p) for p in (pair.image, pair.mask, pair.instances) if p is not None}
            known = {p: s for p, s in sizes.items() if s is not None}
            if len(set(known.values())) > 1:
                raise DatasetError(_mismatch(pair, known))

    def describe(self) -> dict:
        return {
            "root": str(self.root),
            "name": self.name,
            "images": len(self.pairs),
            "images_available": self.n_available,
            "target_class": self.target_class,
            "ignore_label": self.ignore_label,
            "instance_source": "masks_instance" if any(p.instances for p in self.pairs) else "connected components (8-connectivity)",
            "instances_per_image": self.instances_per_image,
            "min_area_px": self.min_area,
            "seed": self.seed,
        }

    def with_seed(self, seed: int) -> "SegmentationDataset":
        """The same dataset with another sampling seed (``instances_per_image``)."""
        other = copy.copy(self)
        other.seed = int(seed)
        return other

    def check_labels(self) -> None:
        """Read every mask once and raise one clear error when the run cannot measure
        anything: a target class outside the masks' value range (:class:`InputError`),
        a class no mask holds, or no object at least ``min_area`` pixels
        (:class:`DatasetError`)."""
        values: set[int] = set()
        n_objects = n_kept = largest = 0
        for pair in self.pairs:
            labels = read_label(pair.mask, "class mask")
            info = np.iinfo(labels.dtype)
            if not info.min <= self.target_class <= info.max:
                raise InputError(
                    f"class {self.target_class} cannot occur in {pair.mask.name}: its {labels.dtype} values are {info.min}..{info.max}"
                )
            if len(values) <= 64:
                values.update(np.unique(labels).tolist())
            _, _, _, _, areas = self._objects(pair, labels)
            n_objects += len(areas)
            n_kept += int(np.count_nonzero(areas >= self.min_area))
            largest = max(largest, int(areas.max(initial=0)))
        where = f"the {len(self.pairs)} mask(s) of {self.root}"
        if n_objects == 0:
            found = ", ".join(str(v) for v in sorted(values)[:20])
            raise DatasetError(f"class {self.target_class} has no object in {where} (mask values found: {found}); choose another --class")
        if n_kept == 0:
            raise DatasetError(
                f"all {n_objects} object(s) of class {self.target_class} in {where} are smaller than the minimum area "
                f"of {self.min_area} px (largest: {largest} px); lower --min-area"
            )

    def _objects(self, pair: Pair, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(ignore, target, raw, ids, areas)`` of the target class in one mask: ``raw``
        ``(H, W)`` int32 object map ``0..n``, ``ids (n,)`` source ids, ``areas (n,)``
        non-ignored pixels per object."""
        ignore = labels == self.ignore_label
        target = (labels == self.target_class) & ~ignore
        if pair.instances is not None:
            inst_src = read_label(pair.instances, "instance mask")
            if inst_src.shape != labels.shape:
                raise DatasetError(_mismatch(pair, {pair.mask: labels.shape, pair.instances: inst_src.shape}))
            raw, ids = _instances_from_map(inst_src, labels, self.target_class, ignore)
        else:
            raw, ids = _instances_from_components(target)
        areas = np.bincount(np.where(ignore, 0, raw).ravel(), minlength=len(ids) + 1)[1:]
        return ignore, target, raw, ids, areas

    def load(self, pair: Pair) -> Sample:
        image = np.asarray(self.read_image(pair.image))
        labels = read_label(pair.mask, "class mask")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DatasetError(f"{pair.image}: expected an RGB uint8 image after reading, got {image.shape} {image.dtype}")
        if image.shape[:2] != labels.shape:
            raise DatasetError(_mismatch(pair, {pair.image: image.shape[:2], pair.mask: labels.shape}))
        ignore, target, raw, ids, areas = self._objects(pair, labels)
        n_total = len(ids)
        # Objects smaller than min_area valid pixels are dropped.
        keep = np.flatnonzero(areas >= self.min_area)
        n_small = n_total - len(keep)
        if self.instances_per_image is not None and len(keep) > self.instances_per_image:
            rng = np.random.default_rng([self.seed, zlib.crc32(pair.stem.encode())])
            keep = np.sort(rng.choice(keep, size=self.instances_per_image, replace=False))
        lut = np.zeros(n_total + 1, dtype=np.int32)
        lut[keep + 1] = np.arange(1, len(keep) + 1, dtype=np.int32)
        instances = lut[raw]
        return Sample(pair.stem, image, labels, ignore, target, instances, ids[keep], n_total, n_small)


def _mismatch(pair: Pair, sizes: dict) -> str:
    desc = ", ".join(f"{Path(p).parent.name}/{Path(p).name} {s[1]}x{s[0]}" for p, s in sizes.items())
    return f"{pair.stem}: image and label sizes differ (width x height): {desc}"


def _instances_from_components(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (8-connectivity) of ``target`` -> ``(map 0..n int32, ids 1..n)``."""
    import cv2

    n, lab = cv2.connectedComponents(target.astype(np.uint8), connectivity=8)
    return lab.astype(np.int32), np.arange(1, n, dtype=np.int64)


def _instances_from_map(inst: np.ndarray, labels: np.ndarray, target_class: int, ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids whose non-ignored pixels are mostly ``target_class`` -> consecutive map."""
    inst = inst.astype(np.int64)
    ids, inverse = np.unique(inst, return_inverse=True)
    inverse = inverse.reshape(inst.shape)
    valid = ~ignore
    total = np.bincount(inverse[valid], minlength=len(ids))
    in_class = np.bincount(inverse[valid & (labels == target_class)], minlength=len(ids))
    chosen = (ids != 0) & (in_class * 2 > total)
    lut = np.zeros(len(ids), dtype=np.int32)
    lut[chosen] = np.arange(1, int(chosen.sum()) + 1, dtype=np.int32)
    return lut[inverse], ids[chosen]
