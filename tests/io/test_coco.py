"""COCO RLE records and JSON files: reference layout, exact RLE strings, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine

from terramask.core.errors import InputError
from terramask.core.maskset import MaskSet
from terramask.core.rle import mask_to_rle, rle_to_mask
from terramask.io.coco import (
    exact_bbox,
    maskset_to_records,
    records_to_coco_json,
    segmentation_to_coco_rle,
    write_coco_rle,
)

T = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)


def _masks(n=4, shape=(23, 31), seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, *shape), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        masks[i, y0 : y0 + rng.integers(2, 9), x0 : x0 + rng.integers(2, 12)] = True
        masks[i] ^= rng.random(shape) > 0.97  # speckle: many runs, some at the border
    masks[-1, 0, 0] = True  # a mask starting on the first pixel (RLE starts with a 0 run)
    return masks


def _maskset(masks):
    n = len(masks)
    extras = {
        "stability_score": np.linspace(0.9, 0.99, n).astype(np.float32),
        "point_coords": np.arange(2 * n, dtype=np.float64).reshape(n, 2),
        "crop_box": np.tile([0.0, 0.0, 31.0, 23.0], (n, 1)),
        "tile_index": np.arange(n, dtype=np.int64),
        "low_res_logits": np.zeros((n, 1, 8, 8), np.float32),
    }
    scores = np.array([0.98, 0.9, 0.85, 0.7][:n], np.float32)
    return MaskSet(masks, scores=scores, extras=extras, transform=T, crs="EPSG:32618")


def test_records_follow_the_reference_layout():
    masks = _masks()
    ms = _maskset(masks)
    records = maskset_to_records(ms)
    assert len(records) == 4
    rec = records[0]
    assert list(rec)[:4] == ["segmentation", "area", "bbox", "predicted_iou"]
    assert {"point_coords", "stability_score", "crop_box", "tile_index"} <= set(rec)
    assert "low_res_logits" not in rec
    assert rec["predicted_iou"] == 0.98  # float32 written as its shortest decimal
    assert rec["point_coords"] == [[0.0, 1.0]]
    assert rec["crop_box"] == [0.0, 0.0, 31.0, 23.0]  # XYWH
    for rec, mask, box in zip(records, masks, ms.boxes):
        assert isinstance(rec["segmentation"]["counts"], str)
        np.testing.assert_array_equal(rle_to_mask(rec["segmentation"]), mask)
        assert rec["area"] == int(mask.sum())
        # Reference convention: w = x1 - x0 of the end-inclusive box.
        assert rec["bbox"] == [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    json.dumps(records)


@pytest.mark.parametrize("mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_output_modes(mode):
    masks = _masks(2)
    seg = maskset_to_records(MaskSet(masks), mode)[1]["segmentation"]
    if mode == "binary_mask":
        np.testing.assert_array_equal(seg, masks[1])
    else:
        assert seg["size"] == [23, 31]
        assert isinstance(seg["counts"], list if mode == "uncompressed_rle" else str)
        np.testing.assert_array_equal(rle_to_mask(seg), masks[1])


def test_unknown_output_mode():
    with pytest.raises(InputError, match="output_mode"):
        maskset_to_records(MaskSet(_masks(1)), "polygons")


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_rle_strings_equal_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    masks = _masks(4)
    masks = np.concatenate([masks, np.zeros((1, 23, 31), bool), np.ones((1, 23, 31), bool)])
    for mask in masks:
        ours = segmentation_to_coco_rle(mask)
        theirs = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"].decode("ascii")
        assert ours["size"] == list(theirs["size"])
        assert exact_bbox(mask) == mask_api.toBbox(theirs).astype(int).tolist()
        assert int(mask_api.area(theirs)) == int(mask.sum())
        # And pycocotools decodes our string to the same mask.
        np.testing.assert_array_equal(mask_api.decode({"size": ours["size"], "counts": ours["counts"]}), mask)


def test_write_records_file(tmp_path):
    masks = _masks()
    path = write_coco_rle(tmp_path / "masks.json", _maskset(masks))
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 4
    for rec, mask in zip(data, masks):
        np.testing.assert_array_equal(rle_to_mask(rec["segmentation"]), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.json"]


def test_write_records_accepts_every_segmentation_format(tmp_path):
    masks = _masks(3)
    records = [
        {"segmentation": masks[0], "area": np.int64(masks[0].sum()), "predicted_iou": np.float32(0.5)},
        {"segmentation": mask_to_rle(masks[1]), "area": int(masks[1].sum())},
        {"segmentation": segmentation_to_coco_rle(masks[2]) | {"counts": segmentation_to_coco_rle(masks[2])["counts"].encode()}},
    ]
    data = json.loads(write_coco_rle(tmp_path / "m.json", records).read_text())
    for rec, mask in zip(data, masks):
        assert isinstance(rec["segmentation"]["counts"], str)
        np.testing.assert_array_equal(rle_to_mask(rec["segmentation"]), mask)
    assert data[0]["predicted_iou"] == 0.5 and data[0]["area"] == int(masks[0].sum())


def test_write_coco_layout(tmp_path):
    masks = _masks()
    path = write_coco_rle(tmp_path / "coco.json", _maskset(masks), "scenes/atlanta.tif", layout="coco")
    doc = json.loads(path.read_text())
    image = doc["images"][0]
    assert image["file_name"] == "atlanta.tif"
    assert (image["width"], image["height"], image["crs"]) == (31, 23, "EPSG:32618")
    assert image["transform"] == [0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0]
    assert doc["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    anns = doc["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3, 4]
    for ann, mask in zip(anns, masks):
        assert ann["image_id"] == 1 and ann["category_id"] == 1 and ann["iscrowd"] == 0
        assert ann["bbox"] == exact_bbox(mask)
        assert ann["area"] == int(mask.sum())
        np.testing.assert_array_equal(rle_to_mask(ann["segmentation"]), mask)
    assert anns[0]["score"] == 0.98 and "stability_score" in anns[0]


def test_coco_json_checks_image_info():
    records = maskset_to_records(MaskSet(_masks(1)))
    with pytest.raises(InputError, match="needs 'height'"):
        records_to_coco_json(records, {"id": 1, "file_name": "a.png", "width": 31})
    with pytest.raises(InputError, match="23x31 mask but the image is 20x31"):
        records_to_coco_json(records, {"id": 1, "file_name": "a.png", "width": 31, "height": 20})


def test_record_without_segmentation(tmp_path):
    with pytest.raises(InputError, match="record 0 has no 'segmentation'"):
        write_coco_rle(tmp_path / "m.json", [{"area": 3}])
    assert list(tmp_path.iterdir()) == []


def test_empty_coco_layout_needs_size(tmp_path):
    with pytest.raises(InputError, match="width and height"):
        write_coco_rle(tmp_path / "m.json", [], layout="coco")
    doc = json.loads(write_coco_rle(tmp_path / "m.json", [], layout="coco",
                                    image_info={"width": 5, "height": 4}).read_text())
    assert doc["annotations"] == [] and doc["images"][0]["width"] == 5


def test_window_rle_equals_the_full_mask_rle():
    from terramask.core.rle import positions_to_counts, window_change_positions, window_to_rle

    rng = np.random.default_rng(3)
    for shape, (x0, y0, h, w) in [((40, 30), (5, 7, 10, 12)), ((40, 30), (0, 0, 40, 30)), ((40, 30), (3, 0, 40, 9)),
                                  ((40, 30), (29, 39, 1, 1)), ((1, 1), (0, 0, 1, 1))]:
        win = rng.random((h, w)) > 0.4
        win[0, 0] = win[-1, -1] = True
        full = np.zeros(shape, bool)
        full[y0 : y0 + h, x0 : x0 + w] = win
        assert window_to_rle(win, x0, y0, shape) == mask_to_rle(full)
    # two windows with disjoint columns, given in any order, make one RLE
    shape = (20, 20)
    a, b = np.ones((20, 3), bool), np.ones((20, 4), bool)
    full = np.zeros(shape, bool)
    full[:, 2:5] = True
    full[:, 5:9] = True
    pos = np.concatenate([window_change_positions(b, 5, 0, 20), window_change_positions(a, 2, 0, 20)])
    assert positions_to_counts(pos, 400) == mask_to_rle(full)["counts"]


def test_record_writer_streams_the_same_json(tmp_path):
    from terramask.io.coco import RecordWriter

    masks = np.zeros((2, 6, 7), bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:, :2] = True
    ms = MaskSet(masks, np.array([0.9, 0.8], np.float32), extras={"stability_score": np.array([0.95, 0.97], np.float32)})
    records = maskset_to_records(ms, "coco_rle")
    with RecordWriter(tmp_path / "stream.json") as writer:
        for rec in records:
            writer.write(rec)
        assert not (tmp_path / "stream.json").exists()  # a temporary name until closed
    write_coco_rle(tmp_path / "whole.json", records)
    assert json.loads((tmp_path / "stream.json").read_text()) == json.loads((tmp_path / "whole.json").read_text())
    assert writer.count == 2
    with pytest.raises(RuntimeError):
        with RecordWriter(tmp_path / "broken.json") as writer:
            writer.write(records[0])
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.json", "whole.json"]
    with RecordWriter(tmp_path / "empty.json"):
        pass
    assert json.loads((tmp_path / "empty.json").read_text()) == []
