"""Static int8 encoders (models/onnx/quantize.py): the calibration reader on generated
tiles, weight-node selection, a quantised tiny SAM that loads and runs, the agreement
computation on injected masks, and the refusal logic on injected measurements (also
through ``resolve.load_backend``)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from terramask.core.errors import InputError, ModelError  # noqa: E402
from terramask.core.maskset import MaskSet  # noqa: E402
from terramask.core.prompts import Prompts  # noqa: E402
from terramask.models.onnx import quantize as q  # noqa: E402


def _tiles(n: int, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    out = []
    for k in range(n):
        base = np.stack([100 + 80 * np.sin(cols / (9.0 + k)), 120 + 60 * np.cos(rows / 13.0), np.full((size, size), 40.0 * k)], axis=2)
        out.append(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8))
    return out


def _write_tiles(directory, calib: int = 2, evals: int = 2):
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for k, tile in enumerate(_tiles(calib + evals)):
        role = "calib" if k < calib else "eval"
        Image.fromarray(tile).save(directory / f"{role}_{k:02d}.png")
    return directory


def test_tile_reader_feeds_each_tile_once_then_rewinds():
    tiles = _tiles(3)
    seen = []
    reader = q.TileReader(tiles, lambda t: (seen.append(t.shape), t.astype(np.float32).transpose(2, 0, 1)[None])[1])
    feeds = [reader.get_next() for _ in range(4)]
    assert len(reader) == 3 and feeds[3] is None
    for feed, tile in zip(feeds[:3], tiles, strict=True):
        assert list(feed) == ["image"] and feed["image"].shape == (1, 3, 96, 96) and feed["image"].dtype == np.float32
        np.testing.assert_array_equal(feed["image"][0, 1], tile[..., 1])
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["image"], feeds[0]["image"])
    with pytest.raises(InputError, match="at least one tile"):
        q.TileReader([], lambda t: t)


def test_read_tiles_by_role_and_the_shipped_set(tmp_path):
    d = _write_tiles(tmp_path / "tiles", calib=2, evals=3)
    assert len(q.read_tiles("calib", d)) == 2 and len(q.read_tiles("eval", d)) == 3
    assert q.read_tiles("eval", d)[0].shape == (96, 96, 3)
    with pytest.raises(InputError, match="no calib_"):
        q.read_tiles("calib", tmp_path)
    # the shipped real tiles: 6 to calibrate, 10 held out, all 512 x 512 RGB
    calib, held = q.read_tiles("calib"), q.read_tiles("eval")
    assert len(calib) == 6 and len(held) == 10
    assert {t.shape for t in calib + held} == {(512, 512, 3)}


def test_weight_nodes_are_products_with_constant_weights():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    k = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "k")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="linear"),
        helper.make_node("MatMul", ["a", "a"], ["b"], name="attention"),  # activation x activation
        helper.make_node("Reshape", ["b", "shape"], ["c"], name="reshape"),
        helper.make_node("Conv", ["c", "k"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, k, numpy_helper.from_array(np.array([1, 1, 4, 4], np.int64), "shape")],
    )
    model = helper.make_model(graph)
    assert q.weight_nodes(model) == ["linear", "conv"]
    # ranges needed: the data inputs of both, and the convolution's output (QLinearConv)
    assert q.calibrated_tensors(model, ["linear", "conv"]) == ["x", "c", "y"]


def test_collect_ranges_are_min_max_over_every_tile():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[2.0], [-1.0], [0.5]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w"], ["y"], name="linear")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rows = [np.array([[-3.0, 1.0, 2.0]], np.float32), np.array([[4.0, -5.0, 0.5]], np.float32)]
    reader = q.TileReader(rows, lambda t: t, input_name="x")
    ranges = q.collect_ranges(model, ["r", "y"], reader, threads=1)
    assert ranges["r"] == (0.0, 4.0)  # relu of both rows
    assert ranges["y"] == pytest.approx((0.0, 8.25))  # [0, 1, 2] @ w = 0, [4, 0, .5] @ w = 8.25
    assert len(model.graph.output) == 1  # the model given is not changed


def test_has_vnni_is_a_flag_of_this_cpu():
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert q.has_vnni() == any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _maskset(masks, scores):
    return MaskSet(np.asarray(masks, bool), np.asarray(scores, np.float32))


class _FakeBackend:
    """Encodes nothing; predict returns fixed candidates; ``shift`` moves its top mask."""

    def __init__(self, shift: int, threads: int = 3, delay: float = 0.0):
        self.shift, self.threads, self.delay, self.encoded = shift, threads, delay, 0

    def set_image(self, image):
        self.encoded += 1
        time.sleep(self.delay)
        return image.shape

    def predict(self, embedding, prompts, multimask=True):
        top = np.zeros(embedding[:2], bool)
        top[10 : 30 + self.shift, 10:30] = True  # 20 x 20, or 20 x (20 + shift) rows
        other = np.ones(embedding[:2], bool)
        return _maskset([other, top], [0.1, 0.9])  # the top-scored candidate is not the first


def test_measure_int8_compares_top_candidates_over_fixed_clicks():
    tiles = [np.zeros((64, 80, 3), np.uint8)] * 3
    fb, qb = _FakeBackend(0, delay=0.03), _FakeBackend(5, delay=0.01)
    check = q.measure_int8(fb, qb, tiles, clicks_per_image=4)
    assert check.images == 3 and check.clicks == 12 and check.threads == 3
    assert check.mean_iou == pytest.approx(400 / 500) and check.min_iou == pytest.approx(0.8)
    assert fb.encoded == qb.encoded == 4  # one warm-up each, then every tile
    assert check.float_seconds >= 0.03 and check.int8_seconds >= 0.01 and check.speedup > 1.5
    assert q.Int8Check.from_dict(json.loads(json.dumps(check.to_dict()))) == check
    same = q.measure_int8(_FakeBackend(0), _FakeBackend(0), tiles[:1])
    assert same.mean_iou == 1.0 and same.clicks == q.CLICKS_PER_IMAGE
    clicks = q.fixed_clicks(64, 80)
    np.testing.assert_array_equal(clicks, q.fixed_clicks(64, 80))
    assert clicks.shape == (10, 2) and (clicks[:, 0] < 76).all() and (clicks[:, 1] < 61).all() and (clicks >= 3).all()
    assert q.mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    with pytest.raises(InputError, match="different shapes"):
        q.mask_iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def _check(speedup: float, iou: float) -> q.Int8Check:
    return q.Int8Check(float_seconds=2.0, int8_seconds=2.0 / speedup, speedup=speedup, mean_iou=iou, min_iou=iou - 0.1,
                       images=10, clicks=100, threads=2)


def test_refusal_needs_both_faster_and_agreeing():
    assert q.refusal("mobilesam", _check(1.4, 0.99)) is None
    slow = q.refusal("mobilesam", _check(0.93, 0.99))
    assert slow is not None and "\n" not in slow and "0.93x" in slow and "mobilesam" in slow and "--runtime onnx" in slow
    assert "agree" not in slow
    wrong = q.refusal("sam-vit-b", _check(1.6, 0.95))
    assert wrong is not None and "0.950 mean IoU" in wrong and "speed" not in wrong
    both = q.refusal("x", _check(1.0, 0.5))  # equal speed is not faster
    assert both is not None and "1.00x" in both and "0.500" in both
    assert "never checked" in q.refusal("x", None)


def _fake_export(tmp_path, check):
    from terramask.models.onnx.export import FORMAT_VERSION, METADATA

    d = tmp_path / "export"
    d.mkdir(parents=True)
    meta = {"format": FORMAT_VERSION, "model": "mobilesam", "files": {"encoder_int8": "encoder.int8.onnx"},
            "encoder_int8_quantisation": {"method": q.METHOD}, "int8_check": check}
    (d / METADATA).write_text(json.dumps(meta))
    return d


def test_offer_int8_reads_the_stored_check(tmp_path):
    d = _fake_export(tmp_path, _check(0.8, 0.99).to_dict())
    with pytest.raises(ModelError, match="not offered for mobilesam: .*0.80x"):
        q.offer_int8(d, "mobilesam")
    from terramask.models import resolve

    with pytest.raises(ModelError, match="not offered"):  # before any ONNX file is opened
        resolve.load_backend("mobilesam", checkpoint=d, runtime="onnx-int8")
    ok = _fake_export(tmp_path / "ok", _check(1.3, 0.99).to_dict())
    q.offer_int8(ok, "mobilesam")
    old = _fake_export(tmp_path / "old", None)  # an export from before the check existed
    with pytest.raises(ModelError, match="never checked"):
        q.offer_int8(old, "mobilesam")


@pytest.mark.slow
def test_quantised_tiny_sam_loads_runs_and_is_checked(tiny_sam_checkpoint, tmp_path):
    from terramask.models.onnx.backend import OnnxSamBackend
    from terramask.models.onnx.export import ENCODER_INT8, export_onnx, read_metadata

    exp = export_onnx(tiny_sam_checkpoint, tmp_path / "tiny")
    tiles = _write_tiles(tmp_path / "tiles", calib=2, evals=2)
    meta = q.ensure_int8(exp.directory, threads=1, tiles_dir=tiles)
    assert meta == read_metadata(exp.directory) and meta["files"]["encoder_int8"] == ENCODER_INT8
    settings = meta["encoder_int8_quantisation"]
    assert settings["calibration_tiles"] == 2 and settings["reduce_range"] == (not q.has_vnni())
    graph = onnx.load(str(exp.directory / ENCODER_INT8))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    per_channel = [n for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.attribute]
    assert per_channel  # weight scales along the output-channel axis
    check = q.Int8Check.from_dict(meta["int8_check"])
    assert check.images == 2 and check.clicks == 20 and 0.0 <= check.mean_iou <= 1.0 and check.speedup > 0
    fp = OnnxSamBackend(exp.directory, threads=1)
    qb = OnnxSamBackend(exp.directory, threads=1, quantized=True)
    img = _tiles(1, size=128)[0]
    ef, eq = fp.set_image(img), qb.set_image(img)
    assert eq.features.shape == ef.features.shape == (1, 256, 64, 64) and eq.extras["runtime"] == "onnx-int8"
    assert qb.weights_id.endswith(":onnx-int8-static")
    assert np.corrcoef(eq.features.ravel(), ef.features.ravel())[0, 1] > 0.95
    assert len(qb.predict(eq, Prompts(points=[[60, 60]], labels=[1]))) == 3
    # measured once: a second call changes nothing
    before = (exp.directory / ENCODER_INT8).stat().st_mtime_ns
    assert q.ensure_int8(exp.directory, tiles_dir=tiles) == meta
    assert (exp.directory / ENCODER_INT8).stat().st_mtime_ns == before
