"""The staged SAM decoder export (models/onnx/staged_graphs.py, staged.py): loaded through
the real path (``resolve.load_backend(..., runtime="onnx")``), it decodes prompts without a
prior mask, equals the PyTorch lean decoder (clicks, boxes, batches, the two-stage point
decoding of automatic generation, automatic generation itself); exports written before it
get it from their source checkpoint (``ensure_staged``, on the cached-export load path) or
else still load and decode with the one-graph decoder.

Tolerances as tests/models/onnx/test_onnx.py: scores ``1e-4``, low-res logits (scaled to
O(10-100) by the test decoder) ``1e-2`` + ``1e-3`` relative, masks IoU >= 0.99.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from terramask.core.prompts import Prompts  # noqa: E402
from terramask.models import resolve  # noqa: E402
from terramask.models.onnx.backend import OnnxSamBackend  # noqa: E402
from terramask.models.onnx.export import STAGED, ensure_staged, read_metadata, write_metadata  # noqa: E402

SCORE_ATOL = 1e-4
LOGIT_ATOL, LOGIT_RTOL = 1e-2, 1e-3


@pytest.fixture(scope="module")
def loaded(tiny_sam_checkpoint, tmp_path_factory, monkeypatch_module):
    """The ONNX and torch backends of the tiny checkpoint, both through ``load_backend``."""
    monkeypatch_module.setenv("TERRAMASK_CACHE", str(tmp_path_factory.mktemp("staged-cache")))
    onnx_backend = resolve.load_backend(checkpoint=tiny_sam_checkpoint, runtime="onnx")
    torch_backend = resolve.load_backend(checkpoint=tiny_sam_checkpoint, runtime="torch")
    return onnx_backend, torch_backend


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


class _Counting:
    """A session wrapper counting its runs."""

    def __init__(self, session) -> None:
        self.session, self.runs = session, 0

    def run(self, names, feeds):
        self.runs += 1
        return self.session.run(names, feeds)


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _assert_same_result(ours, theirs):
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=SCORE_ATOL)
    np.testing.assert_allclose(ours["low_res_logits"], theirs["low_res_logits"], atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    for a, b in zip(ours.masks, theirs.masks, strict=True):
        assert _iou(a, b) >= 0.99


def test_export_writes_the_staged_graphs(loaded):
    onnx_backend, _ = loaded
    meta = read_metadata(onnx_backend.directory)
    assert {k: meta["files"][k] for k in STAGED} == STAGED
    for name in STAGED.values():
        assert (onnx_backend.directory / name).stat().st_size > 0
    assert onnx_backend._staged is not None


def test_prompts_without_a_prior_use_the_staged_graphs_and_equal_torch(loaded, sam_test_image, monkeypatch):
    onnx_backend, torch_backend = loaded
    one_graph = _Counting(onnx_backend._decoder)
    monkeypatch.setattr(onnx_backend, "_decoder", one_graph)
    eo, et = onnx_backend.set_image(sam_test_image), torch_backend.set_image(sam_test_image)
    cases = [
        (Prompts(points=[[210.0, 150.0]], labels=[1]), True),
        (Prompts(points=[[210.0, 150.0], [60.0, 40.0], [300.0, 250.0]], labels=[1, 0, 1]), False),
        (Prompts(boxes=[[150.0, 90.0, 275.0, 215.0]]), True),
        (Prompts(points=[[200.0, 140.0]], labels=[0], boxes=[[150.0, 90.0, 275.0, 215.0]]), False),
        (Prompts(boxes=[[20.0, 30.0, 120.0, 140.0], [150.0, 90.0, 275.0, 215.0], [5.0, 5.0, 390.0, 290.0]]), True),
    ]
    for prompts, multimask in cases:
        _assert_same_result(onnx_backend.predict(eo, prompts, multimask), torch_backend.predict(et, prompts, multimask))
    assert one_graph.runs == 0
    # a prior mask goes through the one-graph decoder, with the same result as torch
    prior = torch_backend.predict(et, cases[0][0])["low_res_logits"][:1]
    refine = cases[0][0].refine([[300.0, 250.0]], [0], prior)
    _assert_same_result(onnx_backend.predict(eo, refine, False), torch_backend.predict(et, refine, False))
    assert one_graph.runs == 1


def test_point_batches_equal_torch(loaded, sam_test_image):
    onnx_backend, torch_backend = loaded
    eo, et = onnx_backend.set_image(sam_test_image), torch_backend.set_image(sam_test_image)
    coords = np.random.default_rng(4).uniform(0, 300, (7, 2))  # not a multiple of the chunk (4)
    lo, io = onnx_backend.decode_points(eo, coords[:, None], np.ones((7, 1), np.int64))
    lt, it = torch_backend.decode_points(et, coords[:, None], np.ones((7, 1), np.int64))
    np.testing.assert_allclose(io, it, atol=SCORE_ATOL)
    np.testing.assert_allclose(lo, lt, atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
    threshold = np.sort(it.ravel())[it.size // 2 - 1 : it.size // 2 + 1].mean()  # between two scores: no ties
    for select in (lambda iou: iou > threshold, lambda iou: np.ones(iou.shape, bool), lambda iou: np.zeros(iou.shape, bool)):
        iou_o, rows_o, ks_o, low_o = onnx_backend.decode_selected(eo, coords, select)
        iou_t, rows_t, ks_t, low_t = torch_backend.decode_selected(et, coords, select)
        np.testing.assert_allclose(iou_o, iou_t, atol=SCORE_ATOL)
        np.testing.assert_array_equal(rows_o, rows_t)
        np.testing.assert_array_equal(ks_o, ks_t)
        assert low_o.shape == low_t.shape and low_o.dtype == np.float32
        np.testing.assert_allclose(low_o, low_t, atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
        np.testing.assert_allclose(low_o, lo[rows_o, ks_o], atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_automatic_generation_equals_torch(loaded, sam_test_image):
    from terramask.pipelines.amg.generator import generate

    onnx_backend, torch_backend = loaded
    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ours = generate(onnx_backend, sam_test_image, None, mode="exact", **params)
    theirs = generate(torch_backend, sam_test_image, None, mode="exact", **params)
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=SCORE_ATOL)
    for a, b in zip(ours.masks, theirs.masks, strict=True):
        assert _iou(a, b) >= 0.99


def _older_export(directory, to):
    """A copy of the export ``directory`` as terramask wrote it before the staged decoder."""
    old = shutil.copytree(directory, to)
    meta = read_metadata(old)
    write_metadata(old, {**meta, "files": {k: v for k, v in meta["files"].items() if k not in STAGED}})
    for name in STAGED.values():
        (old / name).unlink()
    return old


def test_an_older_export_gets_the_staged_graphs_from_its_source_checkpoint(loaded, tiny_sam_checkpoint, sam_test_image, tmp_path):
    onnx_backend, torch_backend = loaded
    assert read_metadata(onnx_backend.directory)["source_checkpoint"] == str(tiny_sam_checkpoint)
    old = _older_export(onnx_backend.directory, tmp_path / "old")
    meta = ensure_staged(old)
    assert {k: meta["files"][k] for k in STAGED} == STAGED and read_metadata(old) == meta
    backend = OnnxSamBackend(old, name=onnx_backend.name, threads=1)
    assert backend._staged is not None
    p = Prompts(points=[[210.0, 150.0]], labels=[1])
    _assert_same_result(backend.predict(backend.set_image(sam_test_image), p), torch_backend.predict(torch_backend.set_image(sam_test_image), p))
    # without its source checkpoint an older export stays as it is
    gone = _older_export(onnx_backend.directory, tmp_path / "gone")
    write_metadata(gone, {**read_metadata(gone), "source_checkpoint": str(tmp_path / "missing.pth")})
    assert STAGED.keys().isdisjoint(ensure_staged(gone)["files"])


def test_an_export_without_the_staged_graphs_decodes_with_the_one_graph_decoder(loaded, sam_test_image, tmp_path):
    onnx_backend, torch_backend = loaded
    old = _older_export(onnx_backend.directory, tmp_path / "old")
    backend = OnnxSamBackend(old, name=onnx_backend.name, threads=1)
    assert backend._staged is None
    eo, et = backend.set_image(sam_test_image), torch_backend.set_image(sam_test_image)
    p = Prompts(points=[[210.0, 150.0]], labels=[1])
    _assert_same_result(backend.predict(eo, p), torch_backend.predict(et, p))
    coords = np.array([[210.0, 150.0], [20.0, 30.0]])
    iou_o, rows_o, ks_o, low_o = backend.decode_selected(eo, coords, lambda iou: iou > 0.0)
    iou_t, rows_t, ks_t, low_t = torch_backend.decode_selected(et, coords, lambda iou: iou > 0.0)
    np.testing.assert_allclose(iou_o, iou_t, atol=SCORE_ATOL)
    np.testing.assert_array_equal(rows_o, rows_t)
    np.testing.assert_allclose(low_o, low_t, atol=LOGIT_ATOL, rtol=LOGIT_RTOL)
