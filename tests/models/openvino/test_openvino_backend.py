"""The OpenVINO runtime against the PyTorch backends on the same random weights, through
the path users run: the checkpoint served from 127.0.0.1, downloaded into the cache by
``load_backend(..., download=True)``, exported to ONNX once and compiled by OpenVINO.

Tolerances as in tests/models/onnx/test_onnx.py (float32 kernels of two libraries, same
weights): embeddings ``atol=1e-4``, scores ``atol=1e-4``, low-res logits (scaled to
O(10-100) by the test decoders) ``atol=1e-2`` + ``rtol=1e-3``, masks IoU >= 0.99.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("openvino")

from helpers.http_server import FileServer  # noqa: E402
from terramask.core.errors import InputError, MissingDependencyError, ModelError  # noqa: E402
from terramask.core.prompts import Prompts  # noqa: E402
from terramask.models import registry, resolve  # noqa: E402
from terramask.models.base import Backend, PointBatchDecoder  # noqa: E402
from terramask.models.openvino import backend as ov_backend  # noqa: E402
from terramask.models.openvino.backend import OpenVinoSam2Backend, OpenVinoSamBackend  # noqa: E402

SCORE_ATOL = 1e-4
LOGIT_ATOL, LOGIT_RTOL = 1e-2, 1e-3


def _write_sam(path):
    from helpers.tiny_sam import write_sam_checkpoint

    return write_sam_checkpoint(path, arch="tiny", seed=0)


def _write_mobilesam(path):
    pytest.importorskip("mobile_sam")
    from helpers.tiny_mobilesam import write_mobilesam_checkpoint

    return write_mobilesam_checkpoint(path, seed=1)


def _write_sam2(path):
    pytest.importorskip("sam2")
    from helpers.tiny_sam2 import write_sam2_checkpoint

    return write_sam2_checkpoint(path, arch="tiny", seed=2)


# family -> (registry model whose entry is pointed at the served file, its official file name, writer, class)
FAMILIES = {
    "sam": ("sam-vit-b", "sam_vit_b_01ec64.pth", _write_sam, OpenVinoSamBackend),
    "mobilesam": ("mobilesam", "mobile_sam.pt", _write_mobilesam, OpenVinoSamBackend),
    "sam2": ("sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", _write_sam2, OpenVinoSam2Backend),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 127.0.0.1 server over a folder the tests write random-weight checkpoints into."""
    folder = tmp_path_factory.mktemp("served")
    with FileServer(folder) as server:
        yield server, folder


def _serve(family, served, monkeypatch) -> str:
    """Write ``family``'s tiny checkpoint, serve it and point its registry entry at it
    (tiny architectures: the loaders read them from the file, so ``arch``/``config`` go)."""
    server, folder = served
    name, filename, write, _ = FAMILIES[family]
    path = folder / filename
    if not path.exists():
        write(path)
    data = path.read_bytes()
    spec = dataclasses.replace(
        registry.get_spec(name), url=server.url(filename), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        arch=None if family == "sam" else registry.get_spec(name).arch, config=None,
    )
    monkeypatch.setitem(registry.REGISTRY, name, spec)
    return name


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _assert_same_result(ours, theirs):
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=SCORE_ATOL)
    np.testing.assert_allclose(ours["low_res_logits"], theirs["low_res_logits"], atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    for a, b in zip(ours.masks, theirs.masks, strict=True):
        assert _iou(a, b) >= 0.99


def _features(embedding):
    f = embedding.features
    return [f["image_embed"], *f["high_res_feats"]] if isinstance(f, dict) else [f]


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_openvino_matches_torch_through_the_load_path(family, served, monkeypatch, sam_test_image):
    name = _serve(family, served, monkeypatch)
    ov = resolve.load_backend(name, runtime="openvino", download=True)
    torch_backend = resolve.load_backend(name, runtime="torch")
    assert type(ov) is FAMILIES[family][3]
    assert isinstance(ov, Backend) and isinstance(ov, PointBatchDecoder)
    assert ov.weights_id == f"{registry.get_spec(name).sha256}:openvino"
    assert ov.settings.precision == "f32" and ov.settings.hint == "LATENCY"
    assert ov._encoder.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"

    eo, et = ov.set_image(sam_test_image), torch_backend.set_image(sam_test_image)
    assert eo.extras["runtime"] == "openvino" and eo.input_size == et.input_size
    for a, b in zip(_features(eo), _features(et), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    cases = [
        (Prompts(points=[[210.0, 150.0]], labels=[1]), True),
        (Prompts(points=[[210.0, 150.0], [60.0, 40.0]], labels=[1, 0]), False),
        (Prompts(points=[[200.0, 140.0]], labels=[0], boxes=[[150.0, 90.0, 275.0, 215.0]]), True),
        (Prompts(boxes=[[20.0, 30.0, 120.0, 140.0], [150.0, 90.0, 275.0, 215.0]]), True),
    ]
    for prompts, multimask in cases:
        _assert_same_result(ov.predict(eo, prompts, multimask), torch_backend.predict(et, prompts, multimask))
    prior = torch_backend.predict(et, cases[0][0])["low_res_logits"][:1]
    refine = cases[0][0].refine([[300.0, 250.0]], [0], prior)
    _assert_same_result(ov.predict(eo, refine, False), torch_backend.predict(et, refine, False))
    coords = np.array([[[210.0, 150.0]], [[20.0, 30.0]], [[390.0, 290.0]]])
    lo, io = ov.decode_points(eo, coords, np.ones((3, 1), np.int64))
    lt, it = torch_backend.decode_points(et, coords, np.ones((3, 1), np.int64))
    np.testing.assert_allclose(io, it, atol=SCORE_ATOL)
    np.testing.assert_allclose(lo, lt, atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    if family != "sam2":  # SAM v1 families: the staged decoder, also for automatic generation's two stages
        assert ov._staged is not None

        middle = np.sort(it.ravel())[it.size // 2 - 1 : it.size // 2 + 1].mean()  # between two scores: no ties

        def keep(iou):
            return iou > middle

        iou_o, rows_o, ks_o, low_o = ov.decode_selected(eo, coords[:, 0], keep)
        iou_t, rows_t, ks_t, low_t = torch_backend.decode_selected(et, coords[:, 0], keep)
        np.testing.assert_allclose(iou_o, iou_t, atol=SCORE_ATOL)
        np.testing.assert_array_equal(rows_o, rows_t)
        np.testing.assert_array_equal(ks_o, ks_t)
        np.testing.assert_allclose(low_o, low_t, atol=LOGIT_ATOL, rtol=LOGIT_RTOL)

    # the export and the compiled blobs are reused: a second load exports nothing
    from terramask.models.cachedir import cache_dir
    from terramask.models.onnx import export as onnx_export

    assert list((cache_dir() / "openvino").iterdir())  # compiled blobs cached for the next process
    calls = []
    monkeypatch.setattr(onnx_export, "export_spec", lambda *a, **k: calls.append(a))
    again = resolve.load_backend(name, runtime="openvino", cache=True)
    assert calls == [] and again.backend.directory == ov.directory


def test_missing_openvino_gives_the_install_hint(tiny_sam_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    ov_backend.ov_core.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install 'terramask\[openvino\]'"):
            resolve.load_backend(checkpoint=tiny_sam_checkpoint, runtime="openvino")
        with pytest.raises(MissingDependencyError, match=r"terramask\[openvino\]"):
            ov_backend.cpu_description()
    finally:
        ov_backend.ov_core.cache_clear()


def test_weight_free_and_unknown_runtimes_are_one_line_errors(tiny_sam_checkpoint):
    with pytest.raises(ModelError, match="'classic' .*has no OpenVINO runtime; use --runtime torch") as err:
        resolve.load_backend("classic", runtime="openvino")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="unknown runtime 'tensorrt'; available: .*openvino, auto"):
        resolve.load_backend("classic", runtime="tensorrt")


def test_an_export_directory_needs_a_named_runtime(tmp_path):
    with pytest.raises(InputError, match="ONNX export directory: name its runtime"):
        resolve.load_backend("sam-vit-b", checkpoint=tmp_path, runtime="auto")
