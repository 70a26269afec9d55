"""int8 encoders that pay and stay right: static per-channel quantisation calibrated on
real remote-sensing tiles, and the measurement that decides whether int8 is offered.

- :func:`quantize_encoder`: onnxruntime's ``quantize_static`` in QDQ format on the
  encoder's weight products only (``MatMul``/``Gemm`` with a constant weight, ``Conv``):
  weights int8 per output channel, activations uint8 per tensor (U8S8) with ranges from
  :class:`TileReader` (min/max over the calibration tiles). Attention's activation x
  activation products and everything else stay float32. ``reduce_range`` (7-bit
  weights) is used on CPUs without VNNI, whose U8S8 kernels can saturate.
- :func:`measure_int8`: the float and int8 encoders side by side on held-out real tiles:
  seconds per encode (median, alternating) and mask agreement = mean IoU, over a fixed
  click set, of the top-scored candidate of each (what a user sees), decoder float32 in
  both.
- :class:`Int8Check` / :func:`refusal`: int8 is offered only when it is faster than the
  float encoder (speed-up > :data:`MIN_SPEEDUP`) and agrees >= :data:`MIN_AGREEMENT`.
  The check is measured once per export on the machine that quantises (the export
  directory lives in the user's cache) and stored in its metadata (``int8_check``).

The shipped tiles are in ``calibration/`` (512 x 512 RGB crops of the project's real data,
provenance in its README): ``calib_*`` calibrate, ``eval_*`` are held out for the check.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import InputError, ModelError
from terramask.core.lazy import require

log = logging.getLogger(__name__)

CALIBRATION_DIR = Path(__file__).with_name("calibration")
MIN_AGREEMENT = 0.98
MIN_SPEEDUP = 1.0
CLICKS_PER_IMAGE = 10
METHOD = "static QDQ, per-channel int8 weights (MatMul/Gemm/Conv), uint8 activations, min/max calibration"


# -- tiles -------------------------------------------------------------------------------


def read_tiles(role: str, directory: str | os.PathLike[str] = CALIBRATION_DIR) -> list[np.ndarray]:
    """The ``(H, W, 3)`` uint8 tiles ``<role>_*.jpg|png`` of ``directory``, sorted by name
    (``role``: ``"calib"`` or ``"eval"``)."""
    from PIL import Image

    files = sorted(p for p in Path(directory).glob(f"{role}_*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise InputError(f"{directory} has no {role}_*.jpg|png tiles")
    out = []
    for path in files:
        try:
            with Image.open(path) as im:
                out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        except OSError as exc:
            raise InputError(f"{path}: unreadable tile ({exc})") from None
    return out


class TileReader:
    """onnxruntime calibration data reader (``get_next``/``rewind``): the encoder input
    ``{input_name: to_input(tile)}`` of each tile, computed when asked, then ``None``."""

    def __init__(self, tiles: Sequence[np.ndarray], to_input: Callable[[np.ndarray], np.ndarray], input_name: str = "image") -> None:
        if not tiles:
            raise InputError("calibration needs at least one tile")
        self.tiles = list(tiles)
        self.to_input = to_input
        self.input_name = input_name
        self._next = 0

    def __len__(self) -> int:
        return len(self.tiles)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.tiles):
            return None
        x = np.ascontiguousarray(self.to_input(self.tiles[self._next]), dtype=np.float32)
        self._next += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self._next = 0


# -- quantisation ----------------------------------------------------------------------------


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def weight_nodes(model: Any) -> list[str]:
    """Names of the nodes of an ONNX ``ModelProto`` whose product has a constant weight:
    ``Conv``, and ``MatMul``/``Gemm`` whose second input is an initializer."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv" or (node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in consts):
            names.append(node.name)
    return names


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs through the root logger (which would otherwise call
    basicConfig on the user's process) and warns about shape inference on valid graphs."""
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    previous = root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        if guard is not None:
            root.removeHandler(guard)


def calibrated_tensors(model: Any, nodes: Sequence[str]) -> list[str]:
    """The activations whose ranges quantising ``nodes`` needs: the data input of each,
    and the output of each ``Conv`` (quantised too, so onnxruntime fuses it into
    ``QLinearConv``; weight ``MatMul``/``Gemm`` outputs stay float: ``MatMulIntegerToFloat``)."""
    consts = {t.name for t in model.graph.initializer}
    wanted = set(nodes)
    out: list[str] = []
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        names = [node.input[0]] + ([node.output[0]] if node.op_type == "Conv" else [])
        out += [n for n in names if n not in consts and n not in out]
    return out


def collect_ranges(model: Any, tensors: Sequence[str], reader: TileReader, threads: int) -> dict[str, tuple[float, float]]:
    """``(min, max)`` of each of ``tensors`` over every tile of ``reader``, by running the
    model with those tensors as extra outputs (only they are kept per tile, not every
    activation of the graph as onnxruntime's own calibrator does: ViT-B ran out of 24 GB)."""
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in present)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del probe
    ranges: dict[str, tuple[float, float]] = {}
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        for name, value in zip(tensors, session.run(list(tensors), feed), strict=True):
            lo, hi = float(np.min(value)), float(np.max(value))
            old = ranges.get(name)
            ranges[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return ranges


def quantize_encoder(src: Path, dst: Path, reader: TileReader, reduce_range: bool | None = None, threads: int = 1) -> dict[str, Any]:
    """Write the static int8 encoder of ``src`` to ``dst`` (staged, renamed when complete);
    returns the settings used (for the export's metadata)."""
    import tempfile

    onnx = require("onnx", "onnx")
    quant = require("onnxruntime.quantization", "onnx", "onnxruntime")
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    reduce = (not has_vnni()) if reduce_range is None else bool(reduce_range)
    t0 = time.perf_counter()
    model = onnx.load(str(src))
    nodes = weight_nodes(model)
    if not nodes:
        raise ModelError(f"{src.name} has no weight MatMul/Gemm/Conv to quantise")
    ranges = collect_ranges(model, calibrated_tensors(model, nodes), reader, threads)
    del model
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with tempfile.TemporaryDirectory(prefix="terramask-int8-") as work, _quiet_quantizer():
            cache = Path(work) / "ranges.json"
            as_f32 = {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()}
            save_tensors_data(TensorsData(quant.CalibrationMethod.MinMax, as_f32), cache)
            quant.quantize_static(
                str(src),
                str(tmp),
                None,
                quant_format=quant.QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce,
                activation_type=quant.QuantType.QUInt8,
                weight_type=quant.QuantType.QInt8,
                nodes_to_quantize=nodes,
                calibrate_method=quant.CalibrationMethod.MinMax,
                extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
                calibration_cache_path=cache,
            )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "method": METHOD,
        "reduce_range": reduce,
        "vnni": has_vnni(),
        "quantised_nodes": len(nodes),
        "calibration_tiles": len(reader),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# -- agreement and speed -------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Check:
    """int8 vs float encoder, measured on ``images`` held-out tiles with ``threads`` threads:
    median seconds per encode, their ratio, and the mean IoU of the top-scored candidates
    over ``clicks`` clicks."""

    float_seconds: float
    int8_seconds: float
    speedup: float
    mean_iou: float
    min_iou: float
    images: int
    clicks: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Check:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def fixed_clicks(rows: int, cols: int, n: int = CLICKS_PER_IMAGE, seed: int = 0) -> np.ndarray:
    """``(n, 2)`` float ``x, y`` pixel clicks, the same for every run on an image of this
    size: uniform inside the image away from a 5% border."""
    rng = np.random.default_rng(seed)
    lo = np.array([cols, rows]) * 0.05
    hi = np.array([cols, rows]) * 0.95
    return rng.uniform(lo, hi, (n, 2))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (1.0 when both are empty)."""
    if a.shape != b.shape:
        raise InputError(f"masks of different shapes {a.shape} and {b.shape}")
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def top_mask(result: Any) -> np.ndarray:
    """The top-scored candidate of a :class:`~terramask.core.maskset.MaskSet`."""
    return np.asarray(result.masks[int(np.argmax(result.scores))])


def measure_int8(float_backend: Any, int8_backend: Any, tiles: Sequence[np.ndarray], clicks_per_image: int = CLICKS_PER_IMAGE) -> Int8Check:
    """Encode every tile with both backends (alternating, after one warm-up each) and
    decode :func:`fixed_clicks` on both embeddings; see :class:`Int8Check`."""
    from terramask.core.prompts import Prompts

    if not tiles:
        raise InputError("the int8 check needs at least one tile")
    float_backend.set_image(tiles[0])
    int8_backend.set_image(tiles[0])
    t_float, t_int8, ious = [], [], []
    for tile in tiles:
        t0 = time.perf_counter()
        ef = float_backend.set_image(tile)
        t1 = time.perf_counter()
        eq = int8_backend.set_image(tile)
        t2 = time.perf_counter()
        t_float.append(t1 - t0)
        t_int8.append(t2 - t1)
        for x, y in fixed_clicks(tile.shape[0], tile.shape[1], clicks_per_image):
            prompts = Prompts(points=np.array([[x, y]]), labels=np.array([1]))
            ious.append(mask_iou(top_mask(float_backend.predict(ef, prompts)), top_mask(int8_backend.predict(eq, prompts))))
    fs, qs = statistics.median(t_float), statistics.median(t_int8)
    return Int8Check(
        float_seconds=round(fs, 4),
        int8_seconds=round(qs, 4),
        speedup=round(fs / max(qs, 1e-9), 3),
        mean_iou=round(float(np.mean(ious)), 4),
        min_iou=round(float(np.min(ious)), 4),
        images=len(tiles),
        clicks=len(ious),
        threads=int(getattr(float_backend, "threads", 0) or 0),
    )


def refusal(model: str, check: Int8Check | None) -> str | None:
    """Why ``--runtime onnx-int8`` is not offered for ``model`` (one line), or ``None``."""
    if check is None:
        return (
            f"--runtime onnx-int8 is not offered for {model}: its int8 encoder was never checked against the float one "
            "(an export from an older terramask); re-export with --quantize"
        )
    slow = check.speedup <= MIN_SPEEDUP
    wrong = check.mean_iou < MIN_AGREEMENT
    if not (slow or wrong):
        return None
    why = []
    if slow:
        why.append(f"it runs at {check.speedup:.2f}x the float encoder's speed ({check.int8_seconds:.2f} s vs {check.float_seconds:.2f} s)")
    if wrong:
        why.append(f"its masks agree only {check.mean_iou:.3f} mean IoU with the float model's (needs >= {MIN_AGREEMENT})")
    return (
        f"--runtime onnx-int8 is not offered for {model}: measured on {check.images} real tiles, {check.clicks} clicks, "
        f"{check.threads} thread(s) here, {' and '.join(why)}; use --runtime onnx"
    )


# -- an export's int8 encoder ----------------------------------------------------------------------


def ensure_int8(directory: str | os.PathLike[str], threads: int | None = None, tiles_dir: str | os.PathLike[str] = CALIBRATION_DIR) -> dict[str, Any]:
    """Give the ONNX export in ``directory`` a checked static int8 encoder: quantise it
    (unless a static one is there; an older dynamic one is replaced), then measure it
    against the float encoder (unless measured). Returns the updated metadata."""
    from terramask.models.onnx.backend import open_onnx_backend
    from terramask.models.onnx.export import ENCODER, ENCODER_INT8, read_metadata, write_metadata

    out = Path(directory).expanduser()
    meta = read_metadata(out)
    quantised = bool((meta.get("files") or {}).get("encoder_int8") and meta.get("encoder_int8_quantisation"))
    if quantised and meta.get("int8_check"):
        return meta
    float_backend = open_onnx_backend(out, threads=threads)
    if not quantised:
        reader = TileReader(read_tiles("calib", tiles_dir), float_backend.model_input)
        settings = quantize_encoder(out / ENCODER, out / ENCODER_INT8, reader, threads=float_backend.threads)
        meta["files"] = {**meta["files"], "encoder_int8": ENCODER_INT8}
        meta["encoder_int8_quantisation"] = settings
        meta["encoder_int8_note"] = "static int8 (calibrated on real tiles): results differ from the float model; see int8_check"
        meta["int8_check"] = None
        write_metadata(out, meta)
    if not meta.get("int8_check"):
        int8_backend = open_onnx_backend(out, threads=threads, quantized=True)
        check = measure_int8(float_backend, int8_backend, read_tiles("eval", tiles_dir))
        log.info("int8 check of %s: %.2fx the float speed, mean IoU %.3f", meta.get("model"), check.speedup, check.mean_iou)
        meta["int8_check"] = check.to_dict()
        write_metadata(out, meta)
    return meta


def int8_check(meta: dict[str, Any]) -> Int8Check | None:
    """The stored :class:`Int8Check` of an export's metadata, or ``None``."""
    data = meta.get("int8_check")
    if not isinstance(data, dict) or not meta.get("encoder_int8_quantisation"):
        return None
    try:
        return Int8Check.from_dict(data)
    except (KeyError, TypeError):
        return None


def offer_int8(directory: str | os.PathLike[str], model: str) -> None:
    """Raise :class:`ModelError` with :func:`refusal`'s line when the export's int8
    encoder is not offered."""
    from terramask.models.onnx.export import read_metadata

    reason = refusal(model, int8_check(read_metadata(directory)))
    if reason is not None:
        raise ModelError(reason)
