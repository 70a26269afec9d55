"""MobileSAM: our TinyViT encoder against the reference implementation (the upstream code
packaged as ``mobilesam-mirror``) on the same random weights, the official key set
loading strictly, and the SAM machinery after the encoder.

Tolerances: encoder outputs ``atol=1e-4`` (values O(1); our attention uses PyTorch's
fused scaled-dot-product kernel, the reference an explicit softmax, so float rounding
differs); scores ``atol=1e-4``; low-res logits (scaled decoder, O(10-100))
``atol=2e-2, rtol=1e-3``; thresholded masks IoU >= 0.99 with at most 0.1% of pixels
differing.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("mobile_sam")  # the reference (pip install mobilesam-mirror)

from helpers.tiny_mobilesam import build_reference, reference_predictor, write_mobilesam_checkpoint  # noqa: E402
from terramask.core.errors import CheckpointMismatchError  # noqa: E402
from terramask.core.prompts import Prompts  # noqa: E402
from terramask.models.base import Backend, PointBatchDecoder  # noqa: E402
from terramask.models.sam.mobilesam import MobileSamBackend, build_mobilesam_model  # noqa: E402
from terramask.models.sam.tinyvit import relative_offset_index  # noqa: E402

pytestmark = pytest.mark.slow  # the TinyViT encoder takes seconds per image on CPU


@pytest.fixture(scope="module")
def ms_ckpt(tmp_path_factory):
    return write_mobilesam_checkpoint(tmp_path_factory.mktemp("mobilesam") / "mobile_sam.pt", seed=0)


@pytest.fixture(scope="module")
def backend(ms_ckpt):
    return MobileSamBackend.from_checkpoint(ms_ckpt)


@pytest.fixture(scope="module")
def reference(ms_ckpt, sam_test_image):
    pred = reference_predictor(ms_ckpt)
    pred.set_image(sam_test_image)
    return pred


@pytest.fixture(scope="module")
def embedding(backend, sam_test_image):
    return backend.set_image(sam_test_image)


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_official_key_set_loads_strictly_and_counts_parameters(ms_ckpt):
    state = torch.load(ms_ckpt, map_location="cpu", weights_only=True)
    model = build_mobilesam_model(state)
    assert set(model.state_dict()) == set(state)
    assert sum(p.numel() for p in model.parameters()) == 10_130_092  # MobileSAM's 10.13 M
    assert sum(p.numel() for p in model.image_encoder.parameters()) == 6_065_532


def test_relative_offset_index_matches_reference():
    ref = build_reference(seed=1)
    ours = relative_offset_index(7)
    for layer in ref.image_encoder.layers[1:]:
        for blk in layer.blocks:
            ws = blk.window_size
            assert torch.equal(relative_offset_index(ws), blk.attn.attention_bias_idxs)
    assert ours.shape == (49, 49) and int(ours.max()) == 48


def test_encoder_matches_reference(embedding, reference):
    assert isinstance(embedding.features, np.ndarray) and embedding.features.shape == (1, 256, 64, 64)
    assert embedding.input_size == (768, 1024)
    np.testing.assert_allclose(embedding.features, reference.features.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kw",
    [
        dict(point_coords=[[210.0, 150.0]], point_labels=[1]),
        dict(box=[150.0, 90.0, 275.0, 215.0], point_coords=[[200.0, 140.0]], point_labels=[0]),
    ],
    ids=["point", "box_and_point"],
)
def test_predict_matches_reference_predictor(backend, embedding, reference, kw):
    kw = {k: np.asarray(v) for k, v in kw.items()}
    logits, scores, low = reference.predict(multimask_output=True, return_logits=True, **kw)
    order = np.argsort(-scores, kind="stable")
    prompts = Prompts(points=kw.get("point_coords"), labels=kw.get("point_labels", []), boxes=kw.get("box", np.zeros((0, 4))))
    result = backend.predict(embedding, prompts)
    assert isinstance(backend, Backend) and isinstance(backend, PointBatchDecoder)
    np.testing.assert_allclose(result.scores, scores[order], atol=1e-4)
    np.testing.assert_allclose(result["low_res_logits"], low[order], atol=2e-2, rtol=1e-3)
    ref_masks = logits[order] > 0
    assert np.mean(result.masks != ref_masks) <= 1e-3
    for a, b in zip(result.masks, ref_masks):
        assert _iou(a, b) >= 0.99
    assert result.masks.any()


def test_decode_points_runs_on_the_sam_decoder(backend, embedding):
    low, iou = backend.decode_points(embedding, np.array([[[210.0, 150.0]], [[20.0, 20.0]]]), np.ones((2, 1)))
    assert low.shape == (2, 3, 256, 256) and iou.shape == (2, 3)
    single = backend.predict(embedding, Prompts(points=[[210.0, 150.0]], labels=[1]))
    np.testing.assert_allclose(np.sort(iou[0])[::-1], single.scores, atol=1e-4)


def test_wrong_checkpoints_are_refused(tmp_path, tiny_sam_checkpoint, ms_ckpt):
    with pytest.raises(CheckpointMismatchError, match="not a MobileSAM"):
        MobileSamBackend.from_checkpoint(tiny_sam_checkpoint)
    state = torch.load(ms_ckpt, map_location="cpu", weights_only=True)
    state.pop("image_encoder.neck.0.weight")
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(CheckpointMismatchError, match="does not fit the MobileSAM"):
        MobileSamBackend.from_checkpoint(broken)
    with pytest.raises(CheckpointMismatchError, match="only the vit_t"):
        MobileSamBackend.from_checkpoint(ms_ckpt, arch="vit_b")


def test_encoder_module_needs_no_timm():
    code = "import sys; import terramask.models.sam.tinyvit, terramask.models.sam.mobilesam; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_backend_dispatches_mobilesam(ms_ckpt):
    from terramask.models.resolve import load_backend

    backend = load_backend("mobilesam", checkpoint=ms_ckpt)
    assert isinstance(backend, MobileSamBackend) and backend.name == "mobilesam"
    assert backend.arch.name == "vit_t" and backend.img_size == 1024
