"""Export SAM-family checkpoints (SAM ViT-B/L/H, MobileSAM, SAM 2 / 2.1) to ONNX: an image
encoder and a prompt decoder, plus a metadata file.

Files written to ``out_dir`` (SAM and MobileSAM; SAM 2 differs as noted at the end):

- ``encoder.onnx``: ``image (1, 3, S, S)`` float32 -> ``image_embeddings (1, 256, S/16, S/16)``.
  The input is the model-frame image: resized so the longest side is ``S`` (1024),
  normalised with SAM's pixel mean/std and zero-padded at the bottom/right to ``S x S``
  (:func:`terramask.models.onnx.backend.preprocess` does this in numpy).
- ``decoder.onnx``: ``image_embeddings (1, 256, 64, 64)``, ``point_coords (B, N, 2)``
  (model frame, ``x, y``), ``point_labels (B, N)`` float (1 object, 0 background,
  2/3 box corners, -1 padding), ``mask_input (1|B, 1, 256, 256)``, ``has_mask_input (1,)``
  -> ``low_res_logits (B, 4, 256, 256)`` and ``iou_predictions (B, 4)`` for all four mask
  tokens (index 0 is SAM's single-mask output, 1-3 its multimask outputs). ``B`` and ``N``
  are dynamic, so one model serves single clicks, several boxes and the batched point
  grids of automatic generation.
- ``decoder_state.onnx``, ``decoder_tokens.onnx``, ``decoder_masks.onnx`` (SAM and
  MobileSAM): the same decoder cut into stages as terramask's PyTorch backend runs it
  (per-image work once, prompt tokens, masks of the chosen outputs only;
  :mod:`terramask.models.onnx.staged_graphs`). The backends decode prompts without a prior
  mask with these; ``decoder.onnx`` stays the one-graph decoder other tools can take.
- ``encoder.int8.onnx`` (only with ``quantize=True``): the encoder with static per-channel
  int8 quantisation calibrated on real remote-sensing tiles
  (:mod:`terramask.models.onnx.quantize`). **It changes results**; the export measures it
  against the float encoder on held-out real tiles (speed and mask agreement, metadata
  ``int8_check``) and ``--runtime onnx-int8`` is refused where it is not both faster and
  >= 0.98 mean IoU.
- ``terramask-onnx.json``: source checkpoint path and SHA-256, model name and family,
  input size, opset, pixel mean/std, versions, file list. Written last: a directory
  without it is an interrupted export.

SAM 2: the encoder takes the official ``SAM2Transforms`` output (the image stretched to
``S x S``, ImageNet normalisation) and returns ``image_embed``, ``high_res_0`` and
``high_res_1``; the decoder takes those three plus the prompt inputs above (the caller
appends SAM 2's padding point, also after boxes) and returns the same two outputs, IoU
already through SAM 2's sigmoid.

The decoder ends at the low-resolution logits on purpose. Upscaling to the image size
is done outside the graph with SAM's exact resize rule for the image at hand, so the
export does not depend on any image size. (SAM's own ONNX example bakes the resize into
the graph with an ``orig_im_size`` input; an export traced at one size then gave wrong
logits at another: mask IoU 0.59 against PyTorch, issue 6.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terramask.core.errors import InputError, ModelError, OutputError
from terramask.core.lazy import require
from terramask.models.onnx.graphs import sam2_decoder_graph, sam2_encoder_graph, sam_decoder_graph
from terramask.models.onnx.staged_graphs import sam_masks_graph, sam_state_graph, sam_tokens_graph
from terramask.models.sam.encoder_attention import official_attention

log = logging.getLogger(__name__)

METADATA = "terramask-onnx.json"
ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
ENCODER_INT8 = "encoder.int8.onnx"
#: the staged SAM / MobileSAM decoder (metadata ``files`` keys -> file names)
STAGED = {"decoder_state": "decoder_state.onnx", "decoder_tokens": "decoder_tokens.onnx", "decoder_masks": "decoder_masks.onnx"}
FORMAT_VERSION = 1
DEFAULT_OPSET = 17
EXPORTABLE_FAMILIES = ("sam", "mobilesam", "sam2")


@dataclass(frozen=True)
class OnnxExport:
    """Paths of an export and its metadata dict."""

    directory: Path
    encoder: Path
    decoder: Path
    encoder_int8: Path | None
    metadata: dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _export(module, args: tuple, path: Path, input_names, output_names, dynamic_axes, opset: int) -> None:
    torch = require("torch", "onnx")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # tracing warns about Python-level shape arithmetic in upstream modules; the
            # shapes involved are fixed for a model (image size, grid), so it is harmless
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc}") from exc
        raise ModelError(f"ONNX export of {path.name} failed: {str(exc).splitlines()[0][:300]}") from exc


def write_metadata(directory: Path, meta: dict[str, Any]) -> None:
    """Write an export's metadata file (staged, then renamed: readers see old or new)."""
    tmp = directory / f".{METADATA}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, directory / METADATA)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {directory / METADATA}: {exc}") from exc


def export_onnx(
    name_or_checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
    overwrite: bool = False,
    download: bool = False,
) -> OnnxExport:
    """Export a SAM or MobileSAM checkpoint to ``out_dir`` (see the module docstring).

    ``name_or_checkpoint`` is a registry name (its cached official checkpoint, or
    ``checkpoint`` when given) or a checkpoint path (a SAM checkpoint; name MobileSAM
    files by the registry name ``mobilesam``), or a fine-tuning run directory (its base
    model's family with the fine-tuned ``model.pth``). ``quantize`` also writes the int8 encoder.
    An existing export is refused unless ``overwrite``.
    """
    require("onnx", "onnx")
    from terramask.models import resolve
    from terramask.models.finetune.run_dir import run_model
    from terramask.models.registry import get_spec

    arg = str(name_or_checkpoint)
    ckpt = Path(checkpoint).expanduser() if checkpoint is not None else None
    run = run_model(arg)  # a fine-tuning run directory: its base model and fine-tuned checkpoint
    if run is not None:
        if ckpt is not None:
            raise InputError(f"{arg} is a fine-tuning run with its own checkpoint; drop --checkpoint")
        ckpt, spec = run.checkpoint, run.spec
    elif ckpt is None and (os.sep in arg or Path(arg).suffix in (".pth", ".pt")) and Path(arg).expanduser().exists():
        ckpt = Path(arg).expanduser()
        spec = resolve.spec_for_checkpoint(ckpt)
    else:
        spec = get_spec(arg)
    return export_spec(spec, out_dir, ckpt, opset=opset, quantize=quantize, overwrite=overwrite, download=download)


def export_spec(
    spec,
    out_dir: str | os.PathLike[str],
    checkpoint: Path | None = None,
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
    overwrite: bool = False,
    download: bool = False,
) -> OnnxExport:
    """:func:`export_onnx` for a :class:`~terramask.models.registry.ModelSpec` (also one
    made for a user checkpoint by ``resolve.spec_for_checkpoint``)."""
    torch = require("torch", "onnx")
    from terramask.models import resolve
    from terramask.models.sam.backend import SamBackend
    from terramask.models.sam2.backend import Sam2Backend

    ckpt = checkpoint
    if spec.family not in EXPORTABLE_FAMILIES:
        raise ModelError(
            f"ONNX export supports the {' and '.join(EXPORTABLE_FAMILIES)} families; {spec.name} is {spec.family}"
        )
    out = Path(out_dir).expanduser()
    if (out / METADATA).exists() and not overwrite:
        raise OutputError(f"{out} already holds an ONNX export; pass overwrite=True (--force) to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc}") from exc
    (out / METADATA).unlink(missing_ok=True)

    t0 = time.perf_counter()
    source = resolve.ensure_checkpoint(spec, ckpt, download_missing=download)
    backend = resolve.LOADERS[spec.family](spec, ckpt, "cpu", download)
    # the exportable families load torch backends (MobileSamBackend is a SamBackend),
    # whose ``model`` and ``img_size`` the export reads
    if not isinstance(backend, (SamBackend, Sam2Backend)):
        raise AssertionError(f"the {spec.family} loader gave {type(backend).__name__}, not a torch SAM backend")
    sam = backend.model.eval()
    img = int(backend.img_size)
    grid, low = img // 16, img // 4
    prompts = (
        torch.tensor([[[100.0, 200.0], [0.0, 0.0]], [[300.0, 400.0], [0.0, 0.0]]]),
        torch.tensor([[1.0, -1.0], [1.0, -1.0]]),
        torch.zeros(1, 1, low, low),
        torch.zeros(1),
    )
    prompt_names = ["point_coords", "point_labels", "mask_input", "has_mask_input"]
    dynamic = {
        "point_coords": {0: "batch", 1: "points"},
        "point_labels": {0: "batch", 1: "points"},
        "mask_input": {0: "mask_batch"},
        "low_res_logits": {0: "batch"},
        "iou_predictions": {0: "batch"},
    }
    extra_meta: dict[str, Any] = {}
    dec_args: tuple[Any, ...]
    if spec.family == "sam2":
        feat_sizes = [(grid * 4, grid * 4), (grid * 2, grid * 2), (grid, grid)]
        enc_module = sam2_encoder_graph(sam, feat_sizes)
        enc_outputs = ["image_embed", "high_res_0", "high_res_1"]
        dec_module = sam2_decoder_graph(sam)
        dec_args = (torch.randn(1, 256, grid, grid), torch.randn(1, 32, grid * 4, grid * 4), torch.randn(1, 64, grid * 2, grid * 2), *prompts)
        dec_inputs = enc_outputs + prompt_names
        dec = sam.sam_mask_decoder
        extra_meta = {
            "config": getattr(backend, "config", None),
            "input_transform": "SAM2Transforms: stretch to SxS (torchvision Resize), ImageNet mean/std",
            "dynamic_multimask_via_stability": bool(dec.dynamic_multimask_via_stability),
            "stability_delta": float(dec.dynamic_multimask_stability_delta),
            "stability_thresh": float(dec.dynamic_multimask_stability_thresh),
            "low_res_clamp": 32.0,
        }
    else:
        enc_module, enc_outputs = sam.image_encoder, ["image_embeddings"]
        dec_module = sam_decoder_graph(sam)
        dec_args = (torch.randn(1, 256, grid, grid), *prompts)
        dec_inputs = ["image_embeddings"] + prompt_names
        extra_meta = {
            "input_transform": "ResizeLongestSide (PIL bilinear), SAM pixel mean/std, zero pad to SxS",
            "pixel_mean": [float(v) for v in sam.pixel_mean.flatten().tolist()],
            "pixel_std": [float(v) for v in sam.pixel_std.flatten().tolist()],
        }

    encoder, decoder = out / ENCODER, out / DECODER
    log.info("exporting %s encoder to %s", spec.name, encoder)
    with official_attention(getattr(sam, "image_encoder", None)):  # the official graph, not the chunked loop
        _export(enc_module, (torch.zeros(1, 3, img, img),), encoder, ["image"], enc_outputs, None, opset)
    log.info("exporting %s decoder to %s", spec.name, decoder)
    _export(dec_module, dec_args, decoder, dec_inputs, ["low_res_logits", "iou_predictions"], dynamic, opset)
    staged: dict[str, str] = {}
    if spec.family != "sam2":
        log.info("exporting %s staged decoder", spec.name)
        export_staged_decoder(sam, out, opset)
        staged = dict(STAGED)

    onnx_mod = require("onnx", "onnx")
    meta = {
        "format": FORMAT_VERSION,
        "model": spec.name,
        "family": spec.family,
        "arch": getattr(getattr(backend, "arch", None), "name", spec.arch),
        "source_checkpoint": str(source),
        "source_sha256": _sha256(Path(source)),
        "input_size": img,
        "embedding_grid": grid,
        "low_res_size": low,
        "opset": opset,
        "mask_threshold": float(getattr(backend, "mask_threshold", 0.0)),
        **extra_meta,
        "files": {"encoder": ENCODER, "decoder": DECODER, "encoder_int8": None, **staged},
        "decoder_outputs": "low_res_logits (B, 4, 256, 256) and iou_predictions (B, 4) of all mask tokens; "
        "upscale to the image with SAM's resize rule outside the graph",
        "versions": {"torch": torch.__version__, "onnx": onnx_mod.__version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_metadata(out, meta)
    int8 = None
    if quantize:
        from terramask.models.onnx.quantize import ensure_int8

        log.info("quantising %s encoder to int8 and checking it against the float one", spec.name)
        meta = ensure_int8(out)
        int8 = out / ENCODER_INT8
    log.info("exported %s to %s in %.1fs", spec.name, out, time.perf_counter() - t0)
    return OnnxExport(out, encoder, decoder, int8, meta)


def export_staged_decoder(sam: Any, out: Path, opset: int = DEFAULT_OPSET) -> None:
    """Write the three staged decoder graphs of a SAM v1 model (SAM, MobileSAM) into ``out``
    (:mod:`terramask.models.onnx.staged_graphs`): traced with two prompts of a click and
    SAM's padding point, prompt, point and mask counts dynamic."""
    torch = require("torch", "onnx")
    rows, cols = (int(v) for v in sam.prompt_encoder.image_embedding_size)
    grid = (rows, cols)
    state_module = sam_state_graph(sam)
    features = torch.randn(1, 256, *grid)
    with torch.no_grad():
        src, k0, v0, q0 = state_module(features)
    _export(state_module, (features,), out / STAGED["decoder_state"], ["image_embeddings"], ["src", "k0", "v0", "q0"], None, opset)
    coords = torch.tensor([[[100.0, 200.0], [0.0, 0.0]], [[300.0, 400.0], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    tokens_module = sam_tokens_graph(sam, grid)
    with torch.no_grad():
        _, hyper, keys = tokens_module(src, k0, v0, q0, coords, labels)
    batch = {0: "batch"}
    _export(tokens_module, (src, k0, v0, q0, coords, labels), out / STAGED["decoder_tokens"],
            ["src", "k0", "v0", "q0", "point_coords", "point_labels"], ["iou_predictions", "hyper", "keys"],
            {"point_coords": {0: "batch", 1: "points"}, "point_labels": {0: "batch", 1: "points"},
             "iou_predictions": batch, "hyper": batch, "keys": batch}, opset)
    _export(sam_masks_graph(sam, grid), (keys, hyper[:, 1:3]), out / STAGED["decoder_masks"], ["keys", "hyper"],
            ["low_res_logits"], {"keys": {0: "prompts"}, "hyper": {0: "prompts", 1: "masks"},
                                 "low_res_logits": {0: "prompts", 1: "masks"}}, opset)


def ensure_staged(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Add the staged decoder graphs to a SAM / MobileSAM export written before they existed
    (once; a no-op for exports that have them and for SAM 2), from the source checkpoint
    recorded in its metadata when that file is still there and unchanged. Returns the
    (possibly updated) metadata; without the source the export keeps its one-graph decoder."""
    out = Path(directory).expanduser()
    meta = read_metadata(out)
    files = meta.get("files") or {}
    if meta.get("family") not in ("sam", "mobilesam") or all(files.get(key) for key in STAGED):
        return meta
    from terramask.models.sam.backend import SamBackend
    from terramask.models.sam.mobilesam import MobileSamBackend

    source = Path(str(meta.get("source_checkpoint", "")))
    if not source.is_file() or _sha256(source) != meta.get("source_sha256"):
        log.warning("%s predates the staged decoder and its source checkpoint %s is gone or changed: "
                    "prompts run the slower one-graph decoder (export again to fix)", out, source)
        return meta
    log.info("adding the staged decoder to the ONNX export %s", out)
    loader = MobileSamBackend if meta["family"] == "mobilesam" else SamBackend
    export_staged_decoder(loader.from_checkpoint(source).model.eval(), out, int(meta.get("opset", DEFAULT_OPSET)))
    meta = {**meta, "files": {**files, **STAGED}}
    write_metadata(out, meta)
    return meta


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of an export directory; :class:`InputError` when it is not a
    (complete) terramask ONNX export."""
    path = Path(directory).expanduser() / METADATA
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{Path(directory)} is not a terramask ONNX export (no {METADATA}; interrupted or never exported)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ONNX export metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise InputError(f"{path}: unsupported ONNX export format {meta.get('format') if isinstance(meta, dict) else '?'}")
    return meta


def remove_export(directory: str | os.PathLike[str]) -> None:
    """Delete an export directory written by :func:`export_onnx`."""
    shutil.rmtree(Path(directory), ignore_errors=True)
