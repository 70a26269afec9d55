"""ONNX export and the onnxruntime backend: parity with the PyTorch SamBackend on the same
random weights, at image sizes other than any used while exporting, batched decoding for
automatic generation, the int8 encoder, metadata and errors.

Tolerances (float32 ONNX Runtime kernels vs PyTorch kernels, same weights): embeddings
``atol=1e-4`` (values O(1)); scores ``atol=1e-4``; low-res logits, scaled to O(10-100) by
the test decoder, ``atol=1e-2`` with ``rtol=1e-3``; masks IoU >= 0.99 with at most 0.1%
of pixels differing (seen: identical).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from terramask.core.errors import InputError, ModelError, OutputError  # noqa: E402
from terramask.core.prompts import Prompts  # noqa: E402
from terramask.models.base import Backend, Embedding, PointBatchDecoder  # noqa: E402
from terramask.models.onnx.backend import OnnxSamBackend, preprocess  # noqa: E402
from terramask.models.onnx.export import METADATA, STAGED, export_onnx, read_metadata  # noqa: E402

SCORE_ATOL = 1e-4
LOGIT_ATOL, LOGIT_RTOL = 1e-2, 1e-3


@pytest.fixture(scope="module")
def export(tiny_sam_checkpoint, tmp_path_factory):
    return export_onnx(tiny_sam_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny", quantize=True)


@pytest.fixture(scope="module")
def onnx_backend(export):
    return OnnxSamBackend.from_directory(export.directory, name="sam:tiny_sam", threads=2)


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _assert_same_result(ours, theirs):
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=SCORE_ATOL)
    np.testing.assert_allclose(ours["low_res_logits"], theirs["low_res_logits"], atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    assert np.mean(ours.masks != theirs.masks) <= 1e-3
    for a, b in zip(ours.masks, theirs.masks):
        assert _iou(a, b) >= 0.99


def test_metadata_records_source_and_settings(export, tiny_sam_checkpoint):
    import hashlib

    meta = read_metadata(export.directory)
    assert meta == export.metadata
    assert meta["source_sha256"] == hashlib.sha256(tiny_sam_checkpoint.read_bytes()).hexdigest()
    assert meta["input_size"] == 1024 and meta["opset"] == 17 and meta["family"] == "sam"
    assert meta["files"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "encoder_int8": "encoder.int8.onnx", **STAGED}
    assert "differ" in meta["encoder_int8_note"]
    for name in meta["files"].values():
        assert (export.directory / name).stat().st_size > 0
    assert not [p for p in export.directory.iterdir() if p.name.endswith(".tmp")]


def test_protocols(onnx_backend):
    assert isinstance(onnx_backend, Backend) and isinstance(onnx_backend, PointBatchDecoder)
    assert onnx_backend.threads == 2 and onnx_backend.weights_id.endswith(":onnx")


def test_preprocessing_equals_segment_anything():
    from segment_anything.utils.transforms import ResizeLongestSide

    rgb = np.random.default_rng(5).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    x, size = preprocess(rgb, 1024, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    resized = ResizeLongestSide(1024).apply_image(rgb)
    assert size == resized.shape[:2]
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    ref = (torch.as_tensor(resized).permute(2, 0, 1).contiguous() - mean) / std
    ref = torch.nn.functional.pad(ref, (0, 1024 - size[1], 0, 1024 - size[0]))
    np.testing.assert_array_equal(x[0], ref.numpy())


def test_onnx_upscaling_is_the_shared_numpy_upscaler(onnx_backend):
    """The ONNX backend upsamples with :class:`Upscaler` (torch engine where installed, else
    numpy; SAM rule): the numpy engine equals PyTorch's two-step chain on a window touching
    the bottom-right corner."""
    low = torch.randn(2, 1, 256, 256)
    ref = torch.nn.functional.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)[..., :683, :1024]
    ref = torch.nn.functional.interpolate(ref, (200, 300), mode="bilinear", align_corners=False)[:, 0].numpy()
    emb = Embedding(onnx_backend.name, None, (200, 300), (683, 1024))
    assert onnx_backend._upscaler.engine == "torch" and onnx_backend._upscaler.model_size == 1024  # torch installed
    for engine in ("torch", "numpy"):  # numpy: the engine of installs without torch (also test_runs_without_torch)
        onnx_backend._upscaler.engine = engine
        try:
            ours = onnx_backend.upscale_logits(emb, low[:, 0].numpy(), window=(250, 150, 300, 200))
        finally:
            onnx_backend._upscaler.engine = "torch"
        np.testing.assert_allclose(ours, ref[:, 150:200, 250:300], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(300, 400), (517, 333)])
def test_predict_matches_torch_at_any_image_size(onnx_backend, sam_backend, shape):
    rng = np.random.default_rng(shape[0])
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    eo, et = onnx_backend.set_image(rgb), sam_backend.set_image(rgb)
    assert eo.input_size == et.input_size and eo.image_size == et.image_size == shape
    np.testing.assert_allclose(eo.features, et.features, atol=1e-4, rtol=0)
    h, w = shape
    cases = [
        (Prompts(points=[[w * 0.5, h * 0.5]], labels=[1]), True),
        (Prompts(points=[[w * 0.5, h * 0.5], [w * 0.1, h * 0.2]], labels=[1, 0]), False),
        (Prompts(boxes=[[w * 0.2, h * 0.2, w * 0.7, h * 0.8]]), True),
        (Prompts(points=[[w * 0.4, h * 0.4]], labels=[0], boxes=[[w * 0.2, h * 0.2, w * 0.7, h * 0.8]]), False),
        (Prompts(boxes=[[5, 5, w * 0.3, h * 0.3], [w * 0.2, h * 0.2, w * 0.7, h * 0.8]]), True),
    ]
    for prompts, multimask in cases:
        _assert_same_result(onnx_backend.predict(eo, prompts, multimask), sam_backend.predict(et, prompts, multimask))
    prior = sam_backend.predict(et, cases[0][0])["low_res_logits"][:1]
    refine = cases[0][0].refine([[w * 0.8, h * 0.8]], [0], prior)
    _assert_same_result(onnx_backend.predict(eo, refine, False), sam_backend.predict(et, refine, False))
    mask_only = Prompts(mask_logits=prior)
    _assert_same_result(onnx_backend.predict(eo, mask_only), sam_backend.predict(et, mask_only))


@pytest.mark.slow
def test_batched_decode_and_windowed_upscale_match_torch(onnx_backend, sam_backend, sam_test_image):
    eo, et = onnx_backend.set_image(sam_test_image), sam_backend.set_image(sam_test_image)
    coords = np.random.default_rng(2).uniform(0, 300, (11, 1, 2))
    labels = np.ones((11, 1), np.int64)
    lo, io = onnx_backend.decode_points(eo, coords, labels, chunk=4)
    lt, it = sam_backend.decode_points(et, coords, labels)
    assert lo.shape == (11, 3, 256, 256)
    np.testing.assert_allclose(io, it, atol=SCORE_ATOL)
    np.testing.assert_allclose(lo, lt, atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    flat = lt[:4].reshape(-1, 256, 256)
    full_o, full_t = onnx_backend.upscale_logits(eo, flat), sam_backend.upscale_logits(et, flat)
    np.testing.assert_allclose(full_o, full_t, atol=1e-3, rtol=1e-4)
    win = (13, 40, 390, 271)
    np.testing.assert_allclose(onnx_backend.upscale_logits(eo, flat, window=win), full_t[:, 40:271, 13:390], atol=1e-3, rtol=1e-4)
    assert onnx_backend.decode_points(eo, np.zeros((0, 1, 2)), np.zeros((0, 1)))[0].shape == (0, 3, 256, 256)


def test_int8_encoder_is_labelled_and_close(export, onnx_backend, sam_test_image):
    """The static int8 encoder (models/onnx/quantize.py) runs, is labelled, and is checked."""
    q = OnnxSamBackend.from_directory(export.directory, name="sam:tiny_sam", quantized=True)
    eq, ef = q.set_image(sam_test_image), onnx_backend.set_image(sam_test_image)
    assert eq.extras["runtime"] == "onnx-int8" and "differ" in eq.extras["note"]
    assert q.weights_id != onnx_backend.weights_id
    # quantisation changes the embedding, but it stays correlated with the float one
    corr = np.corrcoef(eq.features.ravel(), ef.features.ravel())[0, 1]
    assert corr > 0.95 and not np.array_equal(eq.features, ef.features)


def test_runs_without_torch(export, sam_test_image, tmp_path):
    np.save(tmp_path / "img.npy", sam_test_image)
    code = (
        "import sys, numpy as np\n"
        "sys.modules['torch'] = None  # as if torch were not installed: any import of it fails\n"
        "from terramask.models.onnx.backend import OnnxSamBackend\n"
        "from terramask.core.prompts import Prompts\n"
        f"b = OnnxSamBackend({str(export.directory)!r}, threads=1)\n"
        f"e = b.set_image(np.load({str(tmp_path / 'img.npy')!r}))\n"
        "r = b.predict(e, Prompts(points=[[210, 150]], labels=[1]))\n"
        "print(len(r), b._upscaler.engine)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "numpy"]


def test_errors(export, onnx_backend, sam_backend, sam_test_image, tmp_path, tiny_sam_checkpoint):
    with pytest.raises(OutputError, match="already holds"):
        export_onnx(tiny_sam_checkpoint, export.directory)
    half = tmp_path / "half"
    half.mkdir()
    with pytest.raises(InputError, match="not a terramask ONNX export"):
        OnnxSamBackend(half)
    (half / METADATA).write_text(json.dumps({"format": 99}))
    with pytest.raises(InputError, match="unsupported"):
        read_metadata(half)
    with pytest.raises(ModelError, match="supports"):
        export_onnx("classic", tmp_path / "c")
    with pytest.raises(InputError, match="needs its own set_image"):
        onnx_backend.predict(sam_backend.set_image(sam_test_image), Prompts(points=[[1, 1]], labels=[1]))
    with pytest.raises(InputError, match="TERRAMASK_ONNX_THREADS"):
        import os

        os.environ["TERRAMASK_ONNX_THREADS"] = "many"
        try:
            OnnxSamBackend(export.directory)
        finally:
            del os.environ["TERRAMASK_ONNX_THREADS"]


@pytest.mark.slow
def test_load_backend_onnx_runtime_exports_once_into_the_cache(tiny_sam_checkpoint, export, monkeypatch, tmp_path):
    from terramask.models import resolve
    from terramask.models.embedding_cache import CachedBackend
    from terramask.models.onnx import export as onnx_export

    calls = []
    real = onnx_export.export_spec
    monkeypatch.setattr(onnx_export, "export_spec", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = resolve.load_backend(checkpoint=tiny_sam_checkpoint, runtime="onnx")
    second = resolve.load_backend(checkpoint=tiny_sam_checkpoint, runtime="onnx", cache=True)
    assert isinstance(first, OnnxSamBackend) and first.name == "sam:tiny_sam"
    assert isinstance(second, CachedBackend) and isinstance(second.backend, OnnxSamBackend)
    assert len(calls) == 1 and first.directory.parent.name == "onnx"
    # an export directory can be given directly, and the int8 encoder selected where its
    # stored check offers it (the refusal itself: test_quantize.py)
    import shutil

    from terramask.models.onnx.export import write_metadata
    from terramask.models.onnx.quantize import int8_check

    assert int8_check(export.metadata) is not None  # export(quantize=True) measured it
    offered = shutil.copytree(export.directory, tmp_path / "offered")
    write_metadata(offered, {**export.metadata, "int8_check": {**export.metadata["int8_check"], "speedup": 1.5, "mean_iou": 0.99}})
    direct = resolve.load_backend("sam:tiny_sam", checkpoint=offered, runtime="onnx-int8")
    assert direct.quantized and direct.name == "sam:tiny_sam"
    with pytest.raises(ModelError, match="no ONNX runtime"):
        resolve.load_backend("classic", runtime="onnx")


@pytest.mark.slow
def test_mobilesam_export_matches_torch(tmp_path, sam_test_image):
    from terramask.models.sam.mobilesam import MobileSamBackend, build_mobilesam_model

    torch.manual_seed(3)
    ckpt = tmp_path / "mobile_sam.pt"
    model = build_mobilesam_model()
    with torch.no_grad():  # logits far from zero, so thresholded masks are stable (DESIGN.md)
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(400.0)
            mlp.layers[-1].bias.mul_(400.0)
    torch.save(model.state_dict(), ckpt)
    exp = export_onnx("mobilesam", tmp_path / "ms", checkpoint=ckpt)
    assert exp.metadata["family"] == "mobilesam" and exp.metadata["arch"] == "vit_t"
    ob, tb = OnnxSamBackend(exp.directory, threads=2), MobileSamBackend.from_checkpoint(ckpt)
    eo, et = ob.set_image(sam_test_image), tb.set_image(sam_test_image)
    np.testing.assert_allclose(eo.features, et.features, atol=1e-4, rtol=0)
    p = Prompts(points=[[210.0, 150.0], [60.0, 40.0]], labels=[1, 0])
    _assert_same_result(ob.predict(eo, p), tb.predict(et, p))


@pytest.mark.slow
def test_sam2_export_matches_torch(tmp_path, sam_test_image):
    pytest.importorskip("sam2")
    from helpers.tiny_sam2 import write_sam2_checkpoint
    from terramask.models.onnx.backend import open_onnx_backend
    from terramask.models.onnx.sam2_backend import OnnxSam2Backend
    from terramask.models.sam2.backend import Sam2Backend

    ckpt = write_sam2_checkpoint(tmp_path / "tiny_sam2.pt")
    exp = export_onnx("sam2.1-hiera-tiny", tmp_path / "s2", checkpoint=ckpt)
    assert exp.metadata["family"] == "sam2" and exp.metadata["dynamic_multimask_via_stability"] is True
    ob = open_onnx_backend(exp.directory, threads=2)
    tb = Sam2Backend.from_checkpoint(ckpt, name=ob.name)
    assert isinstance(ob, OnnxSam2Backend) and isinstance(ob, PointBatchDecoder)
    eo, et = ob.set_image(sam_test_image), tb.set_image(sam_test_image)
    np.testing.assert_allclose(eo.features["image_embed"], et.features["image_embed"], atol=1e-4, rtol=0)
    for a, b in zip(eo.features["high_res_feats"], et.features["high_res_feats"]):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    cases = [
        (Prompts(points=[[210.0, 150.0]], labels=[1]), True),
        (Prompts(points=[[210.0, 150.0]], labels=[1]), False),  # single mask: stability fallback
        (Prompts(points=[[200.0, 140.0]], labels=[0], boxes=[[150.0, 90.0, 275.0, 215.0]]), True),
        (Prompts(boxes=[[20.0, 30.0, 120.0, 140.0], [150.0, 90.0, 275.0, 215.0]]), True),
    ]
    for prompts, multimask in cases:
        _assert_same_result(ob.predict(eo, prompts, multimask), tb.predict(et, prompts, multimask))
    prior = tb.predict(et, cases[0][0])["low_res_logits"][:1]
    _assert_same_result(ob.predict(eo, Prompts(mask_logits=prior)), tb.predict(et, Prompts(mask_logits=prior)))
    coords = np.array([[[210.0, 150.0]], [[20.0, 30.0]], [[390.0, 290.0]]])
    lo, io = ob.decode_points(eo, coords, np.ones((3, 1)))
    lt, it = tb.decode_points(et, coords, np.ones((3, 1)))
    np.testing.assert_allclose(io, it, atol=SCORE_ATOL)
    np.testing.assert_allclose(lo, lt, atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    win = (10, 20, 300, 250)
    np.testing.assert_allclose(ob.upscale_logits(eo, lo[0], window=win), tb.upscale_logits(et, lt[0], window=win), atol=1e-2, rtol=1e-3)
