"""Automatic mask generation: API, fast vs exact, backends without point decoding, records."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from helpers.structured_sam import StructuredBackend, build_structured_sam
from helpers.tiny_sam import write_sam_checkpoint
from terramask.core.errors import InputError, ModelError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.rle import rle_to_mask
from terramask.pipelines.amg.generator import AmgResult, generate, generate_compact, records
from terramask.pipelines.amg.params import AmgParams
from terramask.pipelines.scene.segmenters import segment_function

PARAMS = AmgParams(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.6)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    path = write_sam_checkpoint(tmp_path_factory.mktemp("amg") / "tiny.pth", arch="tiny", seed=0)
    return StructuredBackend(build_structured_sam(path))


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((120, 176, 3), np.uint8)
    img[:, :, 0] = np.linspace(0, 200, 176)[None, :]
    img[:, :, 1] = np.linspace(30, 220, 120)[:, None]
    img[30:70, 40:100] = (250, 20, 20)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def exact(backend, image):
    return generate_compact(backend, image, PARAMS, mode="exact")


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float32)
    b = b.reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    return inter / np.maximum(a.sum(1)[:, None] + b.sum(1)[None] - inter, 1)


def test_generate_returns_a_georeferenced_maskset_with_reference_columns(backend, image):
    transform = Affine(0.5, 0, 500000, 0, -0.5, 4200000)
    geo = GeoImage(np.moveaxis(image, 2, 0).copy(), transform=transform, crs="EPSG:32616")
    ms = generate(backend, geo, PARAMS, mode="exact")
    assert isinstance(ms, MaskSet) and len(ms) > 3
    assert ms.shape == image.shape[:2]
    assert ms.crs == "EPSG:32616" and ms.transform == transform
    for col in ("stability_score", "point_coords", "crop_box", "area"):
        assert col in ms
    assert ms["point_coords"].shape == (len(ms), 2) and ms["crop_box"].shape == (len(ms), 4)
    assert (ms["crop_box"] == [0, 0, 176, 120]).all()
    np.testing.assert_array_equal(ms["area"], ms.masks.reshape(len(ms), -1).sum(1))
    # boxes are end-inclusive xyxy of the masks, scores pass the thresholds
    from terramask.core.boxes import mask_to_box

    np.testing.assert_array_equal(ms.boxes, mask_to_box(ms.masks))
    assert (ms.scores > 0.5).all() and (ms["stability_score"] >= 0.6).all()


def test_fast_mode_agrees_with_exact(backend, image, exact):
    fast = generate_compact(backend, image, PARAMS, mode="fast")
    assert abs(len(fast) - len(exact)) <= max(1, len(exact) // 10)
    iou = _iou_matrix(exact.masks.to_dense(), fast.masks.to_dense())
    best = iou.max(axis=1)
    assert best.mean() >= 0.95 and np.median(best) >= 0.99
    # fast upsamples only the masks it keeps, each inside its box: timings are recorded
    assert set(fast.timings) >= {"encoder", "decoder", "total"}


def test_fast_mode_upsamples_only_survivors_inside_their_boxes(backend, image):
    calls = []
    original = backend.upscale_logits

    def spy(embedding, low_res, window=None):
        calls.append((len(low_res), window))
        return original(embedding, low_res, window)

    backend.upscale_logits = spy
    try:
        result = generate_compact(backend, image, PARAMS, mode="fast", decoder="backend")
    finally:
        del backend.upscale_logits
    assert len(calls) == len(result) > 0
    h, w = image.shape[:2]
    assert all(n == 1 and window is not None for n, window in calls)
    areas = [(x1 - x0) * (y1 - y0) for _, (x0, y0, x1, y1) in calls]
    assert np.mean(areas) < h * w


def test_overrides_and_errors(backend, image):
    r = generate_compact(backend, image, PARAMS, mode="exact", points_per_side=4)
    assert len(r) > 0
    assert (r.points[:, 0] % (176 / 4) != 0).all()  # 4x4 grid points
    with pytest.raises(InputError, match="mode"):
        generate(backend, image, PARAMS, mode="turbo")
    with pytest.raises(InputError, match="pred_iou_thresh"):
        generate(backend, image, PARAMS, pred_iou_thresh=3.0)
    with pytest.raises(InputError, match="decoder"):
        generate(backend, image, PARAMS, decoder="gpu")
    with pytest.raises(InputError, match="unknown automatic-mask parameter"):
        generate(backend, image, PARAMS, points_per_sid=4)


def test_nothing_survives_gives_an_empty_maskset(backend, image):
    ms = generate(backend, image, PARAMS.replace(pred_iou_thresh=1.0), mode="fast")
    assert len(ms) == 0 and ms.shape == image.shape[:2]
    assert records(ms, "coco_rle") == []


@pytest.mark.parametrize("mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_records_in_every_output_mode(exact, mode):
    result = exact
    recs = records(result, mode)
    dense = result.masks.to_dense()
    assert len(recs) == len(result)
    for rec, mask, box in zip(recs, dense, result.boxes):
        assert set(rec) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
        seg = rec["segmentation"]
        got = seg if mode == "binary_mask" else rle_to_mask(seg)
        np.testing.assert_array_equal(got, mask)
        if mode == "coco_rle":
            assert isinstance(seg["counts"], str)
        assert rec["area"] == int(mask.sum())
        x0, y0, x1, y1 = box
        assert rec["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert rec["crop_box"] == [0, 0, 176, 120]
        assert len(rec["point_coords"]) == 1 and len(rec["point_coords"][0]) == 2
    with pytest.raises(InputError, match="output_mode"):
        records(result, "png")


def test_records_from_a_maskset_and_back(exact):
    result = exact
    ms = result.to_maskset()
    again = AmgResult.from_maskset(ms)
    assert records(again, "uncompressed_rle") == records(result, "uncompressed_rle")
    assert records(ms, "coco_rle") == records(result, "coco_rle")


class _GenerateOnly:
    """A backend with only the Generator capability (like ``classic``)."""

    name = "gen-only"

    def __init__(self, masks):
        self.masks = masks

    def generate(self, image, **params):
        return MaskSet(self.masks, np.linspace(0.9, 0.5, len(self.masks)))


def test_backend_without_point_decoding_uses_its_own_generate(image):
    """Through the one dispatch (segment_function), with the generator's post-processing."""
    masks = np.zeros((3, *image.shape[:2]), bool)
    masks[0, 10:50, 10:60] = True
    masks[0, 20, 20] = False  # a one-pixel hole: filled
    masks[1, 60:100, 80:150] = True
    masks[1, 5:8, 170:173] = True  # a 9-pixel island: removed
    masks[2, 100:110, 10:20] = True  # untouched
    result = segment_function(_GenerateOnly(masks), AmgParams(min_mask_region_area=20))(image)
    assert len(result) == 3
    dense = {int(np.argmax(_iou_matrix(m[None], masks)[0])): m for m in result.masks.to_dense()}
    assert dense[0][20, 20] and dense[0].sum() == 40 * 50
    assert not dense[1][5:8, 170:173].any() and dense[1].sum() == 40 * 70
    np.testing.assert_array_equal(dense[2], masks[2])
    recs = {r["area"]: r for r in records(result, "coco_rle")}
    assert recs[2000]["crop_box"] == [0, 0, 176, 120]
    assert recs[2000]["stability_score"] == pytest.approx(0.9)  # the score stands in
    assert recs[2000]["point_coords"] == [[34.5, 29.5]]  # the box centre


def test_backend_that_cannot_segment_automatically(image):
    class Nothing:
        name = "nothing"

    with pytest.raises(ModelError, match="neither"):
        segment_function(Nothing(), None)
    with pytest.raises(ModelError, match="cannot decode point prompts.*segment_function"):
        generate(Nothing(), image)


def test_generator_serves_only_point_decoding_backends(image):
    with pytest.raises(ModelError, match="cannot decode point prompts"):
        generate_compact(_GenerateOnly(np.zeros((1, *image.shape[:2]), bool)), image, AmgParams())


def test_classic_backend_segments_automatically(image):
    from terramask.models.classic.backend import ClassicBackend

    result = segment_function(ClassicBackend(), AmgParams())(image)
    assert len(result) >= 2
    recs = records(result, "coco_rle")
    assert all(r["area"] > 0 for r in recs)
    dense = result.masks.to_dense()
    # the red rectangle is one of the regions
    red = np.zeros(image.shape[:2], bool)
    red[30:70, 40:100] = True
    assert _iou_matrix(red[None], dense).max() > 0.8
