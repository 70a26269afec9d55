"""Sam2Backend: parity with the official sam2 SAM2ImagePredictor on the same random
weights, the batched/windowed decode paths, CPU connected components (the CUDA-only
upstream post-processing) and checkpoint loading.

Tolerances: the test checkpoint's decoder output layers are scaled (helpers.tiny_sam2) so
logits are O(10-100); both sides run the same official modules on the same tensors, so
logits must agree to ``atol=1e-3`` (plus ``rtol=1e-4`` for batched decodes), scores to ``1e-5``, and thresholded masks to mask
IoU >= 0.999 (at most 1e-4 of pixels differ).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from helpers.tiny_sam2 import official_predictor, write_sam2_checkpoint  # noqa: E402
from terramask.core.errors import CheckpointMismatchError, InputError, PromptError  # noqa: E402
from terramask.core.image import GeoImage  # noqa: E402
from terramask.core.prompts import Prompts  # noqa: E402
from terramask.models.base import Backend, PointBatchDecoder  # noqa: E402
from terramask.models.sam2.backend import (  # noqa: E402
    Sam2Backend,
    connected_components,
    fill_holes_and_sprinkles,
    infer_config,
)

pytestmark = pytest.mark.slow  # builds SAM 2 models and runs the official predictor (seconds each)

LOGIT_ATOL = 1e-3
LOGIT_RTOL = 1e-4  # batched decodes reorder float sums: ~3e-5 relative seen on logits of ~50
SCORE_ATOL = 1e-5


@pytest.fixture(scope="module")
def sam2_ckpt(tmp_path_factory):
    return write_sam2_checkpoint(tmp_path_factory.mktemp("sam2") / "tiny_sam2.pt", seed=0)


@pytest.fixture(scope="module")
def backend(sam2_ckpt):
    return Sam2Backend.from_checkpoint(sam2_ckpt, name="sam2-test")


@pytest.fixture(scope="module")
def official(sam2_ckpt, sam_test_image):
    pred = official_predictor(sam2_ckpt)
    pred.set_image(sam_test_image)
    return pred


@pytest.fixture(scope="module")
def embedding(backend, sam_test_image):
    return backend.set_image(sam_test_image)


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _assert_masks_equal(ours, theirs):
    assert ours.shape == theirs.shape and ours.dtype == bool
    assert np.mean(ours != theirs) <= 1e-4
    for a, b in zip(ours, theirs):
        assert _iou(a, b) >= 0.999


def test_protocols_and_embedding_equal_official(backend, embedding, official):
    assert isinstance(backend, Backend) and isinstance(backend, PointBatchDecoder)
    assert embedding.image_size == (300, 400) and embedding.input_size == (1024, 1024)
    f = embedding.features
    assert f["image_embed"].shape == (1, 256, 64, 64)
    assert [h.shape for h in f["high_res_feats"]] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    np.testing.assert_allclose(f["image_embed"], official._features["image_embed"].numpy(), atol=1e-5, rtol=0)
    for ours, theirs in zip(f["high_res_feats"], official._features["high_res_feats"]):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5, rtol=0)


CASES = {
    "point": dict(point_coords=[[210.0, 150.0]], point_labels=[1]),
    "points_with_background": dict(point_coords=[[210.0, 150.0], [60.5, 40.25], [380.0, 280.0]], point_labels=[1, 0, 1]),
    "box": dict(box=[150.0, 90.0, 275.0, 215.0]),
    "box_and_point": dict(box=[150.0, 90.0, 275.0, 215.0], point_coords=[[200.0, 140.0]], point_labels=[0]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_matches_official_predictor(backend, embedding, official, case, multimask):
    kw = CASES[case]
    logits, scores, low = official.predict(multimask_output=multimask, return_logits=True, **kw)
    order = np.argsort(-scores, kind="stable") if multimask else np.arange(len(scores))
    prompts = Prompts(points=kw.get("point_coords"), labels=kw.get("point_labels", []), boxes=kw.get("box", np.zeros((0, 4))))
    result = backend.predict(embedding, prompts, multimask=multimask)
    assert len(result) == (3 if multimask else 1)
    np.testing.assert_allclose(result.scores, scores[order], atol=SCORE_ATOL)
    np.testing.assert_allclose(result["low_res_logits"], low[order], atol=LOGIT_ATOL)
    _assert_masks_equal(result.masks, logits[order] > 0)
    assert np.all(np.diff(result.scores) <= 0)
    assert result.masks.any()  # scaled decoder: non-trivial masks, so parity means something


def test_several_boxes_and_prior_mask_match_official(backend, embedding, official):
    boxes = np.array([[20.0, 30.0, 120.0, 140.0], [150.0, 90.0, 275.0, 215.0]])
    logits, scores, low = official.predict(box=boxes, multimask_output=False, return_logits=True)
    result = backend.predict(embedding, Prompts(boxes=boxes), multimask=True)  # several boxes: one mask each
    assert len(result) == 2
    np.testing.assert_allclose(result.scores, scores.reshape(-1), atol=SCORE_ATOL)
    _assert_masks_equal(result.masks, logits.reshape(2, 300, 400) > 0)
    # refinement with the best low-res logits as prior
    first = backend.predict(embedding, Prompts(points=[[210.0, 150.0]], labels=[1]))
    prior = first["low_res_logits"][:1]
    logits, scores, _ = official.predict(
        point_coords=[[210.0, 150.0], [100.0, 100.0]], point_labels=[1, 0], mask_input=prior, multimask_output=False, return_logits=True
    )
    refined = backend.predict(embedding, Prompts(points=[[210.0, 150.0]], labels=[1]).refine([[100.0, 100.0]], [0], prior), multimask=False)
    np.testing.assert_allclose(refined.scores, scores, atol=SCORE_ATOL)
    _assert_masks_equal(refined.masks, logits > 0)


def test_decode_points_and_windowed_upscale_match_official(backend, embedding, official):
    coords = np.array([[[210.0, 150.0]], [[60.0, 40.0]], [[390.0, 290.0]]])
    labels = np.ones((3, 1), dtype=np.int64)
    low, iou = backend.decode_points(embedding, coords, labels)
    assert low.shape == (3, 3, 256, 256) and iou.shape == (3, 3)
    with torch.inference_mode():
        c = official._transforms.transform_coords(torch.as_tensor(coords, dtype=torch.float32), normalize=True, orig_hw=(300, 400))
        masks, ious, _ = official._predict(c, torch.as_tensor(labels, dtype=torch.int32), multimask_output=True, return_logits=True)
    np.testing.assert_allclose(iou, ious.numpy(), atol=SCORE_ATOL)
    full = backend.upscale_logits(embedding, low.reshape(-1, 256, 256))
    np.testing.assert_allclose(full, masks.numpy().reshape(-1, 300, 400), atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    window = (37, 81, 250, 299)
    part = backend.upscale_logits(embedding, low.reshape(-1, 256, 256), window=window)
    np.testing.assert_allclose(part, full[:, 81:299, 37:250], atol=LOGIT_ATOL)
    empty_low, empty_iou = backend.decode_points(embedding, np.zeros((0, 1, 2)), np.zeros((0, 1)))
    assert empty_low.shape == (0, 3, 256, 256) and empty_iou.shape == (0, 3)


def test_geoimage_keeps_georeference(backend):
    from affine import Affine

    rgb = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    img = GeoImage(np.moveaxis(rgb, 2, 0), transform=Affine(0.5, 0, 1000, 0, -0.5, 2000), crs="EPSG:32633")
    emb = backend.set_image(img)
    res = backend.predict(emb, Prompts(points=[[40, 30]], labels=[1]))
    assert res.crs == "EPSG:32633" and res.transform == img.transform and res.shape == (64, 96)


def test_prompt_and_embedding_errors(backend, embedding, sam_backend, sam_test_image):
    with pytest.raises(PromptError, match="no prompt"):
        backend.predict(embedding, Prompts())
    with pytest.raises(PromptError, match="text"):
        backend.predict(embedding, Prompts(text="roof"))
    with pytest.raises(PromptError, match="prior mask"):
        backend.predict(embedding, Prompts(points=[[1, 1]], labels=[1], mask_logits=np.zeros((1, 64, 64))))
    with pytest.raises(InputError, match="needs its own set_image"):
        backend.predict(sam_backend.set_image(sam_test_image), Prompts(points=[[1, 1]], labels=[1]))
    with pytest.raises(InputError, match="window"):
        backend.upscale_logits(embedding, np.zeros((1, 256, 256), np.float32), window=(0, 0, 500, 10))


# -- CPU connected components and clean-up -----------------------------------------------


def test_connected_components_match_skimage_8_connectivity():
    from skimage.measure import label

    rng = np.random.default_rng(3)
    masks = rng.random((4, 40, 50)) > 0.6
    masks[3] = False
    labels, areas = connected_components(masks)
    for m, lab, area in zip(masks, labels, areas):
        ref = label(m, connectivity=2)
        assert lab.max() == ref.max()
        # same partition (labels may be numbered differently)
        for k in range(1, ref.max() + 1):
            ours = np.unique(lab[ref == k])
            assert len(ours) == 1 and ours[0] > 0
            assert np.all(area[ref == k] == (ref == k).sum())
        assert np.all(area[~m] == 0) and np.all(lab[~m] == 0)


def test_fill_holes_and_sprinkles_semantics():
    logits = np.full((1, 20, 20), -5.0, dtype=np.float32)
    logits[0, 2:12, 2:12] = 5.0
    logits[0, 5:7, 5:7] = -3.0  # 4-pixel hole
    logits[0, 16, 16] = 4.0  # 1-pixel island
    out = fill_holes_and_sprinkles(logits, 0.0, max_hole_area=4, max_sprinkle_area=1)
    assert np.all(out[0, 5:7, 5:7] == 10.0) and out[0, 16, 16] == -10.0
    assert np.all(out[0, 0, :] == -5.0)  # the big background region is kept
    same = fill_holes_and_sprinkles(logits, 0.0, max_hole_area=3, max_sprinkle_area=0)
    np.testing.assert_array_equal(same, logits)


def test_hole_filling_equals_official_postprocess_with_components(backend, embedding, official, monkeypatch):
    """With the CUDA kernel replaced by our components (same contract), the official
    post-processing and ours agree, so on CPU we do what upstream does on GPU."""
    import sam2.utils.misc as misc

    def cpu_components(mask):
        labels, areas = connected_components(mask[:, 0].cpu().numpy())
        return torch.as_tensor(labels)[:, None], torch.as_tensor(areas)[:, None]

    monkeypatch.setattr(misc, "get_connected_components", cpu_components)
    official._transforms.max_hole_area = 40.0
    official._transforms.max_sprinkle_area = 40.0
    try:
        logits, scores, _ = official.predict(point_coords=[[210.0, 150.0]], point_labels=[1], return_logits=True)
    finally:
        official._transforms.max_hole_area = 0.0
        official._transforms.max_sprinkle_area = 0.0
    backend.max_hole_area = backend.max_sprinkle_area = 40.0
    try:
        ours = backend.predict(embedding, Prompts(points=[[210.0, 150.0]], labels=[1]))
        plain = backend.decode_points(embedding, np.array([[[210.0, 150.0]]]), np.ones((1, 1)))[0][0]
        cleaned = backend.upscale_logits(embedding, plain)
    finally:
        backend.max_hole_area = backend.max_sprinkle_area = 0.0
    order = np.argsort(-scores, kind="stable")
    _assert_masks_equal(ours.masks, logits[order] > 0)
    np.testing.assert_allclose(cleaned, logits, atol=LOGIT_ATOL)


# -- loading ------------------------------------------------------------------------------


def test_infer_config_recognises_official_trunks():
    state = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7), "no_obj_embed_spatial": torch.zeros(1, 64)}
    state.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    assert infer_config(state) == "sam2.1_hiera_t"
    del state["no_obj_embed_spatial"]
    assert infer_config(state) == "sam2_hiera_t"
    state["image_encoder.trunk.patch_embed.proj.weight"] = torch.zeros(144, 3, 7, 7)
    with pytest.raises(CheckpointMismatchError, match="matches no official"):
        infer_config(state)
    with pytest.raises(CheckpointMismatchError, match="not a SAM 2"):
        infer_config({"x": torch.zeros(1)})


def test_loading_errors(tmp_path, sam2_ckpt, tiny_sam_checkpoint):
    from terramask.core.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError):
        Sam2Backend.from_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a readable"):
        Sam2Backend.from_checkpoint(bad)
    with pytest.raises(CheckpointMismatchError, match="not a SAM 2"):
        Sam2Backend.from_checkpoint(tiny_sam_checkpoint)  # a SAM v1 file
    # the tiny test weights do not fit the official Hiera-T configuration
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        Sam2Backend.from_checkpoint(sam2_ckpt, config="sam2.1_hiera_t")
    with pytest.raises(InputError, match="unknown SAM 2 configuration"):
        Sam2Backend.from_checkpoint(sam2_ckpt, config="hiera_xxl")


def test_embedding_cache_round_trip_gives_identical_masks(backend, sam_test_image, tmp_path):
    from terramask.models.embedding_cache import CachedBackend, EmbeddingCache

    cache = EmbeddingCache(tmp_path / "emb", cap_bytes=200 * 2**20)
    cached = CachedBackend(backend, cache)
    first = cached.set_image(sam_test_image)
    second = cached.set_image(sam_test_image)
    assert first.extras["cache"] == "miss" and second.extras["cache"] == "hit"
    p = Prompts(points=[[210.0, 150.0]], labels=[1])
    a, b = cached.predict(first, p), cached.predict(second, p)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_load_backend_dispatches_sam2_and_wraps_the_cache(sam2_ckpt, monkeypatch):
    from terramask.models import resolve
    from terramask.models.embedding_cache import CachedBackend

    backend = resolve.load_backend("sam2.1-hiera-tiny", checkpoint=sam2_ckpt)
    assert isinstance(backend, Sam2Backend) and backend.name == "sam2.1-hiera-tiny"
    assert backend.config == "embedded"  # a user checkpoint brings its own configuration
    cached = resolve.load_backend("sam2.1-hiera-tiny", checkpoint=sam2_ckpt, cache=True)
    assert isinstance(cached, CachedBackend) and isinstance(cached.backend, Sam2Backend)
    # the cached official file is loaded with the registry's configuration
    calls = []
    monkeypatch.setattr(resolve, "ensure_checkpoint", lambda spec, ckpt, download_missing: sam2_ckpt)
    monkeypatch.setattr(Sam2Backend, "from_checkpoint", classmethod(lambda cls, path, **kw: calls.append(kw) or "ok"))
    assert resolve.load_backend("sam2.1-hiera-large") == "ok"
    assert calls[-1] == {"config": "configs/sam2.1/sam2.1_hiera_l.yaml", "device": "cpu", "name": "sam2.1-hiera-large"}


class _Marker:
    """Pickled object whose unpickling would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_checkpoint_with_pickled_objects_is_refused_without_torch_advice(tmp_path):
    import pickle

    marker = tmp_path / "code-ran"
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "evil": _Marker(marker)}, path, pickle_module=pickle)
    with pytest.raises(CheckpointMismatchError, match="contains pickled Python objects") as info:
        Sam2Backend.from_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "will not load it" in message and "weights_only" not in message
    # the file name is the official one: the message names its registry entry and URL
    assert "terramask models download sam2" in message and "https://" in message
    assert not marker.exists()
