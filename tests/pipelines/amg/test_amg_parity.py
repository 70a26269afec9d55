"""``exact`` mode equals the official ``SamAutomaticMaskGenerator`` as a set of masks.

Same weights, image and parameters for both; results are compared as sets (the
reference's NMS order is not a contract): same count, every reference mask matched by one
of ours with IoU >= 0.99, and the matched records' scores equal within float tolerance.

Two models:
- the structured tiny SAM (``helpers.structured_sam``): disc-like masks around each
  prompt, so NMS, crop layers, the crop-edge filter and small-region removal all act;
- the plain random tiny SAM through :class:`~terramask.models.sam.backend.SamBackend` (the folded
  decoder path): noisy full-image masks, NMS disabled so every candidate is compared.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.structured_sam import StructuredBackend, build_structured_sam
from helpers.tiny_sam import build_official_sam, write_sam_checkpoint
from terramask.core.rle import rle_to_mask
from terramask.pipelines.amg.generator import generate_compact, records
from terramask.pipelines.amg.params import AmgParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_sam_checkpoint(tmp_path_factory.mktemp("amgparity") / "tiny.pth", arch="tiny", seed=0)


@pytest.fixture(scope="module")
def scene(rs_data):
    """A real NAIP field image, shrunk to a small non-square image."""
    from PIL import Image

    path = rs_data / "naip_fields_agoro" / "images" / "37.2292207864713--86.8936640526172.png"
    return np.array(Image.open(path).convert("RGB").resize((224, 160), Image.BILINEAR))


def _official(sam, image, params: dict) -> list[dict]:
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(sam, output_mode="uncompressed_rle", **params).generate(image)


def assert_same_set(ref: list[dict], ours: list[dict], score_tol: float = 1e-4, stability_tol: float = 1e-4):
    assert len(ours) == len(ref), f"{len(ours)} masks vs {len(ref)} in the reference"
    if not ref:
        return
    a = np.stack([rle_to_mask(r["segmentation"]) for r in ref]).reshape(len(ref), -1).astype(np.float32)
    b = np.stack([rle_to_mask(r["segmentation"]) for r in ours]).reshape(len(ours), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    used = set()
    for i, rec in enumerate(ref):
        # the best-matching unused mask with the same predicted IoU
        cands = [j for j in np.argsort(-iou[i]) if j not in used and iou[i, j] >= 0.99]
        cands = [j for j in cands if abs(ours[j]["predicted_iou"] - rec["predicted_iou"]) <= score_tol]
        assert cands, f"reference mask {i} (bbox {rec['bbox']}, iou {rec['predicted_iou']:.4f}) has no match"
        j = cands[0]
        used.add(j)
        got = ours[j]
        assert abs(got["stability_score"] - rec["stability_score"]) <= stability_tol
        assert got["crop_box"] == list(rec["crop_box"])
        np.testing.assert_allclose(got["point_coords"], rec["point_coords"], atol=1e-6)
        assert abs(got["area"] - rec["area"]) <= max(2, 0.01 * rec["area"])
        np.testing.assert_allclose(got["bbox"], rec["bbox"], atol=1)


STRUCTURED_CASES = {
    "one-layer": dict(points_per_side=10, pred_iou_thresh=0.5, stability_score_thresh=0.6),
    "crops-and-small-regions": dict(
        points_per_side=8,
        pred_iou_thresh=0.4,
        stability_score_thresh=0.5,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        min_mask_region_area=40,
        box_nms_thresh=0.6,
    ),
    "two-layers-explicit-grids": dict(
        points_per_side=None,
        point_grids=[np.array([[0.2, 0.3], [0.5, 0.5], [0.8, 0.6]]), np.array([[0.25, 0.25], [0.75, 0.75]]), np.array([[0.5, 0.5]])],
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=2,
        crop_overlap_ratio=0.25,
    ),
}


@pytest.mark.parametrize("case", list(STRUCTURED_CASES))
def test_exact_mode_matches_official_generator_structured(checkpoint, scene, case):
    params = STRUCTURED_CASES[case]
    sam = build_structured_sam(checkpoint)
    ref = _official(sam, scene, params)
    assert len(ref) >= 3, "the case must keep several masks to test anything"
    result = generate_compact(StructuredBackend(sam), scene, AmgParams(**params), mode="exact")
    ours = records(result, "uncompressed_rle")
    assert_same_set(ref, ours)
    # masks are byte-identical RLE for this model (same logits, same arithmetic)
    assert sorted(tuple(r["segmentation"]["counts"]) for r in ref) == sorted(tuple(r["segmentation"]["counts"]) for r in ours)


def test_exact_mode_matches_official_generator_tiny_sam_backend(checkpoint, scene):
    """The real SAM adapter and the folded decoder: every candidate compared (no NMS)."""
    from terramask.models.sam.backend import SamBackend

    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5, box_nms_thresh=1.0)
    image = scene[:96, :128]
    ref = _official(build_official_sam(checkpoint), image, params)
    assert len(ref) >= 10
    result = generate_compact(SamBackend.from_checkpoint(checkpoint), image, AmgParams(**params), mode="exact")
    assert_same_set(ref, records(result, "uncompressed_rle"), score_tol=1e-4, stability_tol=1e-3)


def test_coco_rle_records_equal_pycocotools(checkpoint, scene):
    from pycocotools import mask as mask_utils

    params = STRUCTURED_CASES["one-layer"]
    sam = build_structured_sam(checkpoint)
    result = generate_compact(StructuredBackend(sam), scene, AmgParams(**params), mode="exact")
    coco = records(result, "coco_rle")
    binary = records(result, "binary_mask")
    assert len(coco) == len(binary) == len(result) > 0
    for c, b in zip(coco, binary):
        expect = mask_utils.encode(np.asfortranarray(b["segmentation"].astype(np.uint8)))
        assert c["segmentation"]["counts"] == expect["counts"].decode()
        assert c["segmentation"]["size"] == list(b["segmentation"].shape)
        assert c["area"] == int(b["segmentation"].sum())
