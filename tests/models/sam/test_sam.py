"""SamBackend: parity with the official segment_anything SamPredictor on the same random
weights, the batched/windowed decode paths used by automatic generation, and checkpoint
loading errors.

Tolerances. The tiny checkpoint's decoder output layers are scaled (helpers.tiny_sam), so
low-res logits are O(10-100). terramask runs the same official modules on the same
tensors, so results are expected to be identical; the tests allow float rounding:
logits ``atol=1e-3`` (relative ~1e-5), scores ``atol=1e-5``, thresholded masks equal
(at most 1e-4 of pixels may differ, and mask IoU >= 0.999).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from helpers.tiny_sam import make_sam_state_dict, official_predictor, write_sam_checkpoint  # noqa: E402
from terramask.core.errors import CheckpointMismatchError, InputError, PromptError, WeightsNotFoundError  # noqa: E402
from terramask.core.image import GeoImage  # noqa: E402
from terramask.core.prompts import Prompts  # noqa: E402
from terramask.models.base import Backend, Embedding, PointBatchDecoder  # noqa: E402
from terramask.models.sam.backend import SamBackend, infer_arch  # noqa: E402

LOGIT_ATOL = 1e-3
SCORE_ATOL = 1e-5


@pytest.fixture(scope="module")
def official(tiny_sam_checkpoint, sam_test_image):
    pred = official_predictor(tiny_sam_checkpoint)
    pred.set_image(sam_test_image)
    return pred


@pytest.fixture(scope="module")
def embedding(sam_backend, sam_test_image):
    return sam_backend.set_image(sam_test_image)


def _mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _assert_masks_equal(ours, theirs):
    assert ours.shape == theirs.shape and ours.dtype == bool
    assert np.mean(ours != theirs) <= 1e-4
    for a, b in zip(ours, theirs):
        assert _mask_iou(a, b) >= 0.999


def _official_sorted(pred, multimask, **kw):
    logits, scores, low = pred.predict(multimask_output=multimask, return_logits=True, **kw)
    order = np.argsort(-scores, kind="stable") if multimask else np.arange(len(scores))
    return logits[order], scores[order], low[order]


def test_backend_implements_protocols(sam_backend):
    assert isinstance(sam_backend, Backend) and isinstance(sam_backend, PointBatchDecoder)
    assert sam_backend.mask_threshold == 0.0


def test_embedding_equals_official_features(embedding, official):
    assert embedding.image_size == (300, 400) and embedding.input_size == (768, 1024)
    assert embedding.input_size == tuple(official.input_size)
    assert embedding.features.dtype == np.float32 and embedding.features.shape == (1, 256, 64, 64)
    np.testing.assert_allclose(embedding.features, official.features.numpy(), atol=1e-5, rtol=0)


PROMPT_CASES = {
    "point": dict(point_coords=[[210.0, 150.0]], point_labels=[1]),
    "points_with_background": dict(point_coords=[[210.0, 150.0], [60.5, 40.25], [380.0, 280.0]], point_labels=[1, 0, 1]),
    "box": dict(box=[150.0, 90.0, 275.0, 215.0]),
    "box_and_point": dict(box=[150.0, 90.0, 275.0, 215.0], point_coords=[[200.0, 140.0]], point_labels=[0]),
    # 12 points: enough prompt tokens for the lean decoder to switch to plain projections
    "twelve_points": dict(
        point_coords=[[20.0 + 31.0 * i, 15.0 + 23.0 * i] for i in range(12)], point_labels=[1, 0] * 6
    ),
}


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_predict_matches_official_predictor(sam_backend, embedding, official, case, multimask):
    kw = {k: np.asarray(v) for k, v in PROMPT_CASES[case].items()}
    prompts = Prompts(
        points=kw.get("point_coords"), labels=kw.get("point_labels", np.zeros(0)), boxes=kw.get("box", np.zeros((0, 4)))
    )
    result = sam_backend.predict(embedding, prompts, multimask=multimask)
    logits, scores, low = _official_sorted(official, multimask, **kw)

    assert len(result) == (3 if multimask else 1)
    assert result.shape == (300, 400)
    assert np.all(np.diff(result.scores) <= 0), "candidates are sorted by score"
    np.testing.assert_allclose(result.scores, scores, atol=SCORE_ATOL, rtol=0)
    low_ours = result["low_res_logits"]
    assert low_ours.dtype == np.float32 and low_ours.shape == (len(result), 256, 256)
    np.testing.assert_allclose(low_ours, low, atol=LOGIT_ATOL, rtol=1e-5)
    # thresholded masks are not trivial (the scaled decoder gives mixed signs) and equal
    assert 0.01 < result.masks.mean() < 0.99
    _assert_masks_equal(result.masks, logits > 0)
    # boxes are the masks' xyxy extents (end-inclusive, like SAM's batched_mask_to_box)
    ys, xs = np.nonzero(result.masks[0])
    np.testing.assert_array_equal(result.boxes[0], [xs.min(), ys.min(), xs.max(), ys.max()])


def test_refinement_with_prior_mask_matches_official(sam_backend, embedding, official):
    first = sam_backend.predict(embedding, Prompts(points=[[210.0, 150.0]], labels=[1]))
    _, _, low = _official_sorted(official, True, point_coords=np.array([[210.0, 150.0]]), point_labels=np.array([1]))
    np.testing.assert_allclose(first["low_res_logits"][0], low[0], atol=LOGIT_ATOL, rtol=1e-5)

    prompts = Prompts(points=[[210.0, 150.0]], labels=[1]).refine([[100.0, 250.0]], [0], first["low_res_logits"][:1])
    second = sam_backend.predict(embedding, prompts, multimask=False)
    logits, scores, low2 = _official_sorted(
        official,
        False,
        point_coords=np.array([[210.0, 150.0], [100.0, 250.0]]),
        point_labels=np.array([1, 0]),
        mask_input=low[:1],
    )
    np.testing.assert_allclose(second.scores, scores, atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(second["low_res_logits"], low2, atol=LOGIT_ATOL, rtol=1e-5)
    _assert_masks_equal(second.masks, logits > 0)
    # a prior mask alone is a valid prompt too
    alone = sam_backend.predict(embedding, Prompts(mask_logits=first["low_res_logits"][:1]), multimask=False)
    _, scores3, low3 = _official_sorted(official, False, mask_input=low[:1])
    np.testing.assert_allclose(alone.scores, scores3, atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(alone["low_res_logits"], low3, atol=LOGIT_ATOL, rtol=1e-5)
    # the prior mask changes the answer (it is really used)
    plain = sam_backend.predict(embedding, Prompts(points=prompts.points, labels=prompts.labels), multimask=False)
    assert np.abs(plain["low_res_logits"] - second["low_res_logits"]).max() > 1e-2


def test_several_boxes_match_official_predict_torch(sam_backend, embedding, official):
    boxes = np.array([[150.0, 90.0, 275.0, 215.0], [10.0, 20.0, 120.0, 90.0], [300.0, 200.0, 399.0, 299.0]])
    for multimask in (True, False):
        result = sam_backend.predict(embedding, Prompts(boxes=boxes), multimask=multimask)
        assert len(result) == 3  # one mask per box, in box order
        with torch.no_grad():
            tb = official.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), official.original_size)
            logits, scores, low = official.predict_torch(None, None, boxes=tb, multimask_output=False, return_logits=True)
        np.testing.assert_allclose(result.scores, scores[:, 0].numpy(), atol=SCORE_ATOL, rtol=0)
        np.testing.assert_allclose(result["low_res_logits"], low[:, 0].numpy(), atol=LOGIT_ATOL, rtol=1e-5)
        _assert_masks_equal(result.masks, logits[:, 0].numpy() > 0)


def test_several_boxes_with_prior_mask_match_official(sam_backend, embedding, official):
    boxes = np.array([[150.0, 90.0, 275.0, 215.0], [10.0, 20.0, 120.0, 90.0]])
    prior = sam_backend.predict(embedding, Prompts(points=[[210.0, 150.0]], labels=[1]))["low_res_logits"][:1]
    result = sam_backend.predict(embedding, Prompts(boxes=boxes, mask_logits=prior))
    with torch.no_grad():
        tb = official.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), official.original_size)
        logits, scores, low = official.predict_torch(
            None, None, boxes=tb, mask_input=torch.as_tensor(prior[None].copy()), multimask_output=False, return_logits=True
        )
    np.testing.assert_allclose(result.scores, scores[:, 0].numpy(), atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(result["low_res_logits"], low[:, 0].numpy(), atol=LOGIT_ATOL, rtol=1e-5)
    _assert_masks_equal(result.masks, logits[:, 0].numpy() > 0)


def test_official_decoder_path_matches_lean_decoder(tiny_sam_checkpoint, sam_backend, embedding):
    """``lean_decoder=False`` runs segment_anything's MaskDecoder.forward itself."""
    plain = SamBackend.from_checkpoint(tiny_sam_checkpoint, name=sam_backend.name)
    plain.lean_decoder = False
    prior = sam_backend.predict(embedding, Prompts(points=[[210.0, 150.0]], labels=[1]))["low_res_logits"][:1]
    cases = [
        (Prompts(points=[[210.0, 150.0], [60.0, 40.0]], labels=[1, 0]), True),
        (Prompts(points=[[210.0, 150.0]], labels=[1], mask_logits=prior), False),
        (Prompts(boxes=[[150.0, 90.0, 275.0, 215.0], [10.0, 20.0, 120.0, 90.0]]), True),
    ]
    for prompts, multimask in cases:
        a = sam_backend.predict(embedding, prompts, multimask=multimask)
        b = plain.predict(embedding, prompts, multimask=multimask)
        np.testing.assert_allclose(a.scores, b.scores, atol=SCORE_ATOL, rtol=0)
        np.testing.assert_allclose(a["low_res_logits"], b["low_res_logits"], atol=LOGIT_ATOL, rtol=1e-5)
        _assert_masks_equal(a.masks, b.masks)
    coords, labels = np.array([[[210.0, 150.0]], [[20.0, 30.0]]]), np.ones((2, 1))
    for x, y in zip(sam_backend.decode_points(embedding, coords, labels), plain.decode_points(embedding, coords, labels)):
        np.testing.assert_allclose(x, y, atol=LOGIT_ATOL, rtol=1e-5)


def test_per_image_decoder_state_follows_the_embedding(sam_backend, sam_test_image, embedding):
    """The backend reuses per-image decoder work for the last embedding; switching images
    back and forth must never mix them up."""
    other = sam_backend.set_image(np.ascontiguousarray(sam_test_image[::-1, ::-1]))
    prompts = Prompts(points=[[210.0, 150.0]], labels=[1])
    first = sam_backend.predict(embedding, prompts)
    on_other = sam_backend.predict(other, prompts)
    again = sam_backend.predict(embedding, prompts)
    np.testing.assert_array_equal(first["low_res_logits"], again["low_res_logits"])
    assert np.abs(on_other["low_res_logits"] - first["low_res_logits"]).max() > 1.0
    # a copy of the features (e.g. read back from a cache) gives the same answer
    copied = Embedding(
        model=embedding.model,
        features=embedding.features.copy(),
        image_size=embedding.image_size,
        input_size=embedding.input_size,
    )
    np.testing.assert_allclose(
        sam_backend.predict(copied, prompts)["low_res_logits"], first["low_res_logits"], atol=1e-5, rtol=0
    )


def test_decode_points_matches_official_batched_predict(sam_backend, embedding, official):
    coords = np.array([[[210.0, 150.0]], [[20.0, 30.0]], [[399.0, 299.0]], [[0.0, 0.0]]])
    labels = np.ones((4, 1), dtype=np.int64)
    low, iou = sam_backend.decode_points(embedding, coords, labels)
    assert low.shape == (4, 3, 256, 256) and low.dtype == np.float32
    assert iou.shape == (4, 3) and iou.dtype == np.float32
    with torch.no_grad():
        tc = official.transform.apply_coords_torch(torch.as_tensor(coords, dtype=torch.float), official.original_size)
        _, iou_ref, low_ref = official.predict_torch(tc, torch.as_tensor(labels, dtype=torch.int), multimask_output=True)
    np.testing.assert_allclose(iou, iou_ref.numpy(), atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(low, low_ref.numpy(), atol=LOGIT_ATOL, rtol=1e-5)
    empty_low, empty_iou = sam_backend.decode_points(embedding, np.zeros((0, 1, 2)), np.zeros((0, 1)))
    assert empty_low.shape == (0, 3, 256, 256) and empty_iou.shape == (0, 3)


def test_upscale_logits_equals_official_postprocess(sam_backend, embedding, official):
    low, _ = sam_backend.decode_points(embedding, np.array([[[210.0, 150.0]]]), np.ones((1, 1)))
    low = low[0]
    full = sam_backend.upscale_logits(embedding, low)
    assert full.shape == (3, 300, 400) and full.dtype == np.float32
    with torch.no_grad():
        ref = official.model.postprocess_masks(torch.as_tensor(low[None]), official.input_size, official.original_size)[0]
    np.testing.assert_allclose(full, ref.numpy(), atol=LOGIT_ATOL, rtol=1e-5)


@pytest.mark.parametrize(
    "image_size",
    [(300, 400), (1024, 1024), (1500, 900), (37, 2000)],
    ids=["down-landscape", "square-1024", "up-portrait", "thin"],
)
def test_windowed_upscale_equals_crop_of_full(sam_backend, image_size):
    from terramask.models.sam.backend import preprocess_shape

    rng = np.random.default_rng(3)
    low = (rng.normal(0, 30, (2, 256, 256))).astype(np.float32)
    emb = Embedding(
        model=sam_backend.name,
        features=np.zeros((1, 256, 64, 64), np.float32),
        image_size=image_size,
        input_size=preprocess_shape(*image_size, 1024),
    )
    rows, cols = image_size
    full = sam_backend.upscale_logits(emb, low)
    assert full.shape == (2, rows, cols)
    windows = [
        (0, 0, cols, rows),
        (cols // 3, rows // 4, cols // 3 + max(1, cols // 5), rows - 1),
        (cols - 1, rows - 1, cols, rows),
        (0, rows // 2, 1, rows // 2 + 1),
    ]
    scale = float(np.abs(full).max())
    for x0, y0, x1, y1 in windows:
        part = sam_backend.upscale_logits(emb, low, window=(x0, y0, x1, y1))
        assert part.shape == (2, y1 - y0, x1 - x0)
        np.testing.assert_allclose(part, full[:, y0:y1, x0:x1], atol=2e-5 * scale, rtol=0)
    with pytest.raises(InputError, match="window"):
        sam_backend.upscale_logits(emb, low, window=(0, 0, cols + 1, rows))
    with pytest.raises(InputError, match="window"):
        sam_backend.upscale_logits(emb, low, window=(5, 5, 5, 10))


def test_geoimage_input_keeps_georeference(sam_backend, sam_test_image, embedding):
    from affine import Affine

    transform = Affine(0.5, 0, 500000.0, 0, -0.5, 4200000.0)
    geo = GeoImage(np.moveaxis(sam_test_image, 2, 0).copy(), transform=transform, crs="EPSG:32633")
    emb = sam_backend.set_image(geo)
    np.testing.assert_array_equal(emb.features, embedding.features)
    result = sam_backend.predict(emb, Prompts(points=[[210.0, 150.0]], labels=[1]))
    assert result.transform == transform and result.crs == "EPSG:32633"


def test_prompt_and_embedding_errors(sam_backend, embedding):
    with pytest.raises(PromptError, match="frame 'lonlat'"):
        sam_backend.predict(embedding, Prompts(points=[[10.0, 50.0]], labels=[1], frame="lonlat"))
    with pytest.raises(PromptError, match="no prompt"):
        sam_backend.predict(embedding, Prompts())
    with pytest.raises(PromptError, match=r"\(1, 256, 256\)"):
        sam_backend.predict(embedding, Prompts(points=[[1.0, 1.0]], labels=[1], mask_logits=np.zeros((1, 64, 64))))
    with pytest.raises(PromptError, match="text"):
        sam_backend.predict(embedding, Prompts(text="building"))
    other = Embedding(model="sam-vit-h", features=embedding.features, image_size=(300, 400), input_size=(768, 1024))
    with pytest.raises(InputError, match="sam-vit-h"):
        sam_backend.predict(other, Prompts(points=[[1.0, 1.0]], labels=[1]))
    with pytest.raises(InputError, match=r"\(B, P, 2\)"):
        sam_backend.decode_points(embedding, np.zeros((4, 2)), np.ones(4))


def test_architecture_is_inferred_from_the_checkpoint(sam_backend, tiny_sam_checkpoint):
    arch = sam_backend.arch
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.global_attn_indexes) == (32, 2, 2, (1,))
    assert (arch.img_size, arch.patch_size, arch.window_size) == (1024, 16, 14)
    assert arch.name == "vit_e32_d2_h2" and sam_backend.name == "sam-vit-e32-d2-h2"
    named = SamBackend.from_checkpoint(tiny_sam_checkpoint, name="my-sam")
    assert named.name == "my-sam"


def test_requested_architecture_mismatch_names_file_and_both_archs(tiny_sam_checkpoint):
    with pytest.raises(CheckpointMismatchError) as info:
        SamBackend.from_checkpoint(tiny_sam_checkpoint, arch="vit_b")
    text = str(info.value)
    assert str(tiny_sam_checkpoint) in text and "vit_b" in text and "vit_e32_d2_h2" in text
    assert "\n" not in text
    with pytest.raises(InputError, match="vit_q"):
        SamBackend.from_checkpoint(tiny_sam_checkpoint, arch="vit_q")


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        SamBackend.from_checkpoint(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint\x00\x01" * 100)
    with pytest.raises(CheckpointMismatchError, match="garbage.pth") as info:
        SamBackend.from_checkpoint(garbage)
    assert "\n" not in str(info.value)
    not_sam = tmp_path / "not_sam.pth"
    torch.save({"weight": torch.zeros(3, 3)}, not_sam)
    with pytest.raises(CheckpointMismatchError, match="not_sam.pth.*not a SAM checkpoint"):
        SamBackend.from_checkpoint(not_sam)


def test_checkpoint_with_missing_or_reshaped_tensors_is_refused(tmp_path):
    state = make_sam_state_dict("tiny", seed=1)
    missing = dict(state)
    del missing["mask_decoder.iou_token.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointMismatchError, match="missing.pth.*iou_token") as info:
        SamBackend.from_checkpoint(tmp_path / "missing.pth")
    assert "\n" not in str(info.value)
    reshaped = dict(state)
    reshaped["mask_decoder.output_upscaling.0.weight"] = torch.zeros(256, 32, 2, 2)
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(CheckpointMismatchError, match="reshaped.pth.*output_upscaling"):
        SamBackend.from_checkpoint(tmp_path / "reshaped.pth")


def test_wrapped_checkpoint_loads(tmp_path, sam_backend, embedding):
    state = make_sam_state_dict("tiny", seed=0)
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "wrapped.pth")
    backend = SamBackend.from_checkpoint(tmp_path / "wrapped.pth", name=sam_backend.name)
    prompts = Prompts(points=[[210.0, 150.0]], labels=[1])
    np.testing.assert_array_equal(
        backend.predict(embedding, prompts)["low_res_logits"], sam_backend.predict(embedding, prompts)["low_res_logits"]
    )


class _Marker:
    """Unpickling this runs ``open(path, "w")``: proof that arbitrary code would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickled_objects_are_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    state = make_sam_state_dict("tiny", seed=0)
    state["evil"] = _Marker(marker)
    path = tmp_path / "evil.pth"
    torch.save(state, path, pickle_module=pickle)
    with pytest.raises(CheckpointMismatchError, match="evil.pth contains pickled Python objects") as info:
        SamBackend.from_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "will not load it" in message
    assert "weights_only=False" not in message and "weights_only" not in message
    assert "terramask models download" in message and "https://" in message  # where to get a real one
    assert not marker.exists()


@pytest.mark.slow
def test_random_vit_b_checkpoint_loads_as_vit_b(tmp_path):
    path = write_sam_checkpoint(tmp_path / "vit_b.pth", arch="vit_b", seed=0)
    backend = SamBackend.from_checkpoint(path, arch="vit_b")
    assert backend.arch.name == "vit_b" and backend.name == "sam-vit-b"
    assert (backend.arch.embed_dim, backend.arch.depth, backend.arch.num_heads) == (768, 12, 12)
    assert backend.arch.global_attn_indexes == (2, 5, 8, 11)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert infer_arch(state).name == "vit_b"
    with pytest.raises(CheckpointMismatchError, match="vit_b.*vit_l"):
        SamBackend.from_checkpoint(path, arch="vit_l")
    # the decoder runs on an embedding of the right shape
    emb = Embedding(model=backend.name, features=np.random.default_rng(0).normal(size=(1, 256, 64, 64)).astype(np.float32),
                    image_size=(512, 512), input_size=(1024, 1024))
    result = backend.predict(emb, Prompts(points=[[100.0, 100.0]], labels=[1]))
    assert len(result) == 3 and result.shape == (512, 512)
