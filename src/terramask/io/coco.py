"""COCO-style mask records and JSON files (compressed RLE segmentations).

Two layouts:

- **records** (default): a JSON list with one dict per mask, the layout of the reference
  ``segment_anything`` ``scripts/amg.py`` output — ``segmentation`` (COCO RLE
  ``{"size": [H, W], "counts": str}``), ``area`` (pixels), ``bbox`` (XYWH),
  ``predicted_iou``, ``point_coords``, ``stability_score``, ``crop_box`` (XYWH) and any other
  scalar columns. ``bbox`` follows the reference: ``w = x1 - x0`` of the end-inclusive
  pixel box (one less than the pixel extent).
- **coco**: a COCO dataset/results dict (``images``, ``annotations``, ``categories``)
  whose annotation ``bbox`` is pycocotools' ``toBbox`` (exact pixel extent) and whose
  ``score`` is the predicted IoU (or the mask set's score).

RLE strings are produced by :mod:`terramask.core.rle` and are byte-identical to
pycocotools' ``mask.encode``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from terramask.core.boxes import xyxy_to_xywh
from terramask.core.errors import InputError, OutputError
from terramask.core.maskset import MaskSet
from terramask.core.rle import mask_to_coco_rle, mask_to_rle, rle_area, rle_to_mask, to_coco_rle
from terramask.io.atomic import AtomicPath, StagedWriter, json_default, write_json

log = logging.getLogger(__name__)

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Columns never copied into records: per-mask arrays too large for JSON.
_SKIP_COLUMNS = frozenset({"low_res_logits", "logits", "masks"})


# -- segmentations in any of the three reference formats -----------------------------
def segmentation_to_mask(seg: Any) -> np.ndarray:
    """Bool array, uncompressed RLE or COCO RLE -> ``(H, W)`` bool."""
    if isinstance(seg, Mapping):
        if "size" not in seg or "counts" not in seg:
            raise InputError(f"RLE segmentation needs 'size' and 'counts', got keys {sorted(seg)}")
        return rle_to_mask(dict(seg))
    arr = np.asarray(seg)
    if arr.ndim != 2:
        raise InputError(f"segmentation must be an (H, W) mask or an RLE dict, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def segmentation_area(seg: Any) -> int:
    """Foreground pixel count of a segmentation in any format."""
    if isinstance(seg, Mapping):
        return rle_area(dict(seg))
    return int(np.count_nonzero(segmentation_to_mask(seg)))


def segmentation_to_coco_rle(seg: Any) -> dict:
    """Any segmentation format -> compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    if isinstance(seg, Mapping):
        counts = seg["counts"]
        if isinstance(counts, bytes):
            return {"size": list(seg["size"]), "counts": counts.decode("ascii")}
        if isinstance(counts, str):
            return {"size": list(seg["size"]), "counts": counts}
        return to_coco_rle({"size": list(seg["size"]), "counts": [int(c) for c in counts]})
    return mask_to_coco_rle(segmentation_to_mask(seg))


def exact_bbox(mask: np.ndarray) -> list[int]:
    """``(H, W)`` bool -> COCO ``[x, y, w, h]`` of the pixel extent (pycocotools ``toBbox``)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


# -- mask sets -> reference records ---------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype == np.float32:
            return [_jsonable(v) for v in value]
        return value.tolist()
    if isinstance(value, np.float32):
        return _f32(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _f32(value) -> float:
    """A float32 as the shortest decimal that round-trips it (0.9, not 0.8999999761581421)."""
    return float(str(np.float32(value)))


def _encode(mask: np.ndarray, output_mode: str) -> Any:
    if output_mode == "coco_rle":
        return mask_to_coco_rle(mask)
    if output_mode == "uncompressed_rle":
        return mask_to_rle(mask)
    return np.array(mask, dtype=bool)


def maskset_to_records(maskset: MaskSet, output_mode: str = "coco_rle") -> list[dict]:
    """A :class:`MaskSet` -> the reference generator's list of records.

    Keys: ``segmentation`` (per ``output_mode``: ``binary_mask`` bool array,
    ``uncompressed_rle`` or ``coco_rle``), ``area``, ``bbox`` (XYWH from the mask set's
    xyxy boxes, reference convention), ``predicted_iou`` (the scores), then
    ``point_coords`` as a list of ``[x, y]``, ``stability_score``, ``crop_box`` (XYWH) when
    those columns exist, then every other extra column whose per-mask value is a scalar
    or a 1-D vector (``low_res_logits`` and larger arrays are skipped).
    """
    if output_mode not in OUTPUT_MODES:
        raise InputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
    if not isinstance(maskset, MaskSet):
        raise InputError(f"expected a MaskSet, got {type(maskset).__name__}")
    n = len(maskset)
    bboxes = xyxy_to_xywh(maskset.boxes)
    areas = maskset.areas
    extras = maskset.extras
    columns = []
    for name, col in extras.items():
        if name in _SKIP_COLUMNS or name in ("point_coords", "crop_box", "stability_score"):
            continue
        if col.ndim > 2:
            log.debug("column %r has per-mask shape %s; not written to records", name, col.shape[1:])
            continue
        columns.append(name)
    records = []
    for i in range(n):
        rec: dict[str, Any] = {
            "segmentation": _encode(maskset.masks[i], output_mode),
            "area": int(areas[i]),
            "bbox": [float(v) for v in bboxes[i]],
            "predicted_iou": _f32(maskset.scores[i]),
        }
        if "point_coords" in extras:
            pts = np.asarray(extras["point_coords"][i], dtype=np.float64).reshape(-1, 2)
            rec["point_coords"] = pts.tolist()
        if "stability_score" in extras:
            rec["stability_score"] = _jsonable(extras["stability_score"][i])
        if "crop_box" in extras:
            rec["crop_box"] = [float(v) for v in xyxy_to_xywh(np.asarray(extras["crop_box"][i], dtype=np.float64))]
        for name in columns:
            rec[name] = _jsonable(extras[name][i])
        records.append(rec)
    return records


def _records(data: MaskSet | Iterable[Mapping]) -> list[dict]:
    if isinstance(data, MaskSet):
        return maskset_to_records(data, "coco_rle")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, Mapping) or "segmentation" not in rec:
            raise InputError(f"record {i} has no 'segmentation'")
        out.append(dict(rec))
    return out


def _jsonable_record(rec: Mapping) -> dict:
    out = {}
    for key, value in rec.items():
        if key == "segmentation":
            out[key] = segmentation_to_coco_rle(value)
        else:
            out[key] = _jsonable(value)
    return out


def _image_size(records: Sequence[Mapping]) -> tuple[int, int] | None:
    for rec in records:
        seg = rec["segmentation"]
        if isinstance(seg, Mapping):
            return int(seg["size"][0]), int(seg["size"][1])
        rows, cols = np.asarray(seg).shape[:2]
        return int(rows), int(cols)
    return None


def records_to_coco_json(records: Iterable[Mapping], image_info: Mapping[str, Any],
                         categories: Sequence[Mapping[str, Any]] | None = None) -> dict:
    """Records -> a COCO dict ``{"images", "annotations", "categories"}`` for one image.

    ``image_info`` needs ``id``, ``file_name``, ``width`` and ``height`` (other keys, e.g.
    ``crs``/``transform``, are kept). Each annotation gets ``id`` (1-based),
    ``image_id``, ``category_id`` (the record's, else 1), ``segmentation`` (COCO RLE),
    ``area`` (pixels, from the mask), ``bbox`` (exact XYWH, as pycocotools ``toBbox``),
    ``iscrowd`` 0, ``score`` (``predicted_iou`` or ``score``), plus the record's other keys.
    """
    records = list(records)
    info = dict(image_info)
    for key in ("id", "file_name", "width", "height"):
        if key not in info:
            raise InputError(f"image_info needs {key!r}, got keys {sorted(info)}")
    annotations = []
    for i, rec in enumerate(records):
        mask = segmentation_to_mask(rec["segmentation"])
        if mask.shape != (int(info["height"]), int(info["width"])):
            raise InputError(
                f"record {i} has a {mask.shape[0]}x{mask.shape[1]} mask but the image is "
                f"{info['height']}x{info['width']}"
            )
        ann: dict[str, Any] = {
            "id": i + 1,
            "image_id": info["id"],
            "category_id": int(rec.get("category_id", 1)),
            "segmentation": segmentation_to_coco_rle(rec["segmentation"]),
            "area": int(np.count_nonzero(mask)),
            "bbox": exact_bbox(mask),
            "iscrowd": 0,
        }
        score = rec.get("predicted_iou", rec.get("score"))
        if score is not None:
            ann["score"] = float(score)
        for key, value in rec.items():
            if key not in ann and key not in ("segmentation", "bbox", "area"):
                ann[key] = _jsonable(value)
        annotations.append(ann)
    cats = [dict(c) for c in categories] if categories else [{"id": 1, "name": "object", "supercategory": "object"}]
    return {"images": [{k: _jsonable(v) for k, v in info.items()}], "annotations": annotations, "categories": cats}


def write_coco_rle(path: str | os.PathLike, data: MaskSet | Iterable[Mapping], image_path: str | os.PathLike | None = None,
                   *, layout: str = "records", image_id: int = 1, image_info: Mapping[str, Any] | None = None,
                   indent: int | None = None) -> Path:
    """Write masks as COCO-RLE JSON, atomically; returns the path.

    ``data`` is a :class:`MaskSet` (converted with :func:`maskset_to_records`) or records
    whose ``segmentation`` is a bool array, uncompressed RLE or COCO RLE (all written as
    COCO RLE). ``layout="records"`` writes the reference ``amg.py`` list;
    ``layout="coco"`` writes :func:`records_to_coco_json` with an image entry built from
    ``image_path`` (file name), the mask size, the mask set's CRS/transform, and
    ``image_info`` (overrides).
    """
    if layout not in ("records", "coco"):
        raise InputError(f"layout must be 'records' or 'coco', got {layout!r}")
    records = _records(data)
    if layout == "records":
        return write_json(path, [_jsonable_record(r) for r in records], indent=indent)
    info: dict[str, Any] = {"id": image_id, "file_name": Path(image_path).name if image_path else ""}
    size = data.shape if isinstance(data, MaskSet) else _image_size(records)
    if size is not None:
        info["height"], info["width"] = int(size[0]), int(size[1])
    if isinstance(data, MaskSet):
        if data.crs:
            info["crs"] = str(data.crs)
        info["transform"] = list(data.transform)[:6]
    info.update(image_info or {})
    if "width" not in info:
        raise InputError("cannot write COCO JSON without masks unless image_info gives width and height")
    return write_json(path, records_to_coco_json(records, info), indent=indent)


class RecordWriter(StagedWriter):
    """Stream reference records into a JSON list, renamed into place on :meth:`close`.

    ``with RecordWriter(path) as w: w.write(record)`` — each record is serialised as it
    comes (its ``segmentation`` as given: COCO or uncompressed RLE dict), so memory does
    not grow with the number of records. On an exception inside the ``with`` block, or
    after :meth:`abort`, no file is left behind. The file equals ``write_json(path,
    records, indent=None)`` of the same list.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.count = 0
        self._target: AtomicPath | None = None
        self._fh: Any = None

    def open(self) -> "RecordWriter":
        if self._target is not None:
            raise OutputError(f"record writer for {self.path} was already opened")
        self._target = AtomicPath(self.path)
        try:
            self._fh = open(self._target.tmp, "w", encoding="utf-8")
            self._fh.write("[")
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (JSON-able values; numpy scalars and arrays are converted)."""
        if self._fh is None:
            raise OutputError(f"record writer for {self.path} is not open")
        text = json.dumps({k: _jsonable(v) for k, v in record.items()}, default=json_default)
        try:
            self._fh.write((", " if self.count else "") + text)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.count += 1

    def close(self) -> Path:
        """Finish the list and rename the file into place; returns the final path."""
        if self._target is None or self._fh is None:
            raise OutputError(f"record writer for {self.path} is not open")
        try:
            self._fh.write("]\n")
            self._fh.close()
            self._fh = None
        except BaseException:
            self.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        """Drop the file being written; the final path is untouched."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:  # pragma: no cover
                pass
            self._fh = None
        if self._target is not None and not self._target.done:
            self._target.discard()
