"""ONNX Runtime and OpenVINO against PyTorch, per model family, in one process (issue 14).

For MobileSAM and SAM 2.1 Hiera-T (random weights in the official architectures, decoder
output layers scaled as in the tests; speed does not depend on the values) and each
runtime -- ``torch``, ``onnx``, ``openvino`` (when installed), and for SAM v1 families
also ``onnx (one-graph)`` / ``openvino (one-graph)``: the same export decoding every
prompt through the official decoder graph, i.e. what those runtimes did before the
staged decoder -- it measures on one 1024 x 1024 tile:

- ``encoder``: seconds per ``set_image``;
- ``click``: milliseconds per ``predict`` of one click (3 candidates upscaled to the tile);
- ``amg``: seconds of automatic generation's point decoding for ``--batches`` batches of
  64 points of the default 32 x 32 grid, as the generator runs it (``decode_selected``
  where the backend has it, else ``decode_points``), with the default IoU filter
  (``pred_iou_thresh`` 0.88) and with every output kept (threshold 0, the worst case);
  ``per tile`` scales it to the grid's 16 batches.

Runtimes take turns within each repeat (round robin), and the table shows medians and the
ratio torch / runtime (> 1: faster than torch), so load from other processes affects
every runtime alike. Usage (repository root)::

    .venv/bin/python -W ignore benchmarks/runtime_ratios.py --repeats 5
    .venv/bin/python -W ignore benchmarks/runtime_ratios.py --models mobilesam --repeats 3 --batches 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))  # helpers: the random-weight checkpoint builders

GRID_BATCHES = 16  # the default 32 x 32 grid in batches of 64 points
THRESHOLDS = {"amg (iou 0.88)": 0.88, "amg (all kept)": 0.0}


def checkpoint(name: str, work: Path) -> Path:
    if name == "mobilesam":
        from helpers.tiny_mobilesam import write_mobilesam_checkpoint

        return write_mobilesam_checkpoint(work / "mobile_sam.pt")
    from helpers.tiny_sam2 import write_sam2_checkpoint

    return write_sam2_checkpoint(work / "sam2.1_hiera_tiny.pt", arch="hiera_t")


def backends(name: str, ckpt: Path, work: Path, threads: int) -> dict[str, Any]:
    """``runtime label -> backend`` over the same weights (one ONNX export shared)."""
    from terramask.models.onnx.backend import open_onnx_backend
    from terramask.models.onnx.export import export_onnx

    if name == "mobilesam":
        from terramask.models.sam.mobilesam import MobileSamBackend

        torch_backend: Any = MobileSamBackend.from_checkpoint(ckpt, name=name)
    else:
        from terramask.models.sam2.backend import Sam2Backend

        torch_backend = Sam2Backend.from_checkpoint(ckpt, name=name)
    t0 = time.perf_counter()
    export = export_onnx(name, work / f"onnx-{name}", checkpoint=ckpt, overwrite=True)
    print(f"  exported {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    out: dict[str, Any] = {"torch": torch_backend, "onnx": open_onnx_backend(export.directory, name=name, threads=threads)}
    try:
        from terramask.models.openvino.backend import open_openvino_backend

        out["openvino"] = open_openvino_backend(export.directory, name=name, threads=threads)
    except Exception as exc:  # openvino not installed: report without it
        print(f"  openvino skipped: {str(exc).splitlines()[0]}", flush=True)
    for label in ("onnx", "openvino"):
        staged = out.get(label)
        if staged is not None and getattr(staged, "_staged", None) is not None:
            one_graph = open_onnx_backend(export.directory, name=name, threads=threads) if label == "onnx" else \
                open_openvino_backend(export.directory, name=name, threads=threads)
            one_graph._staged = None  # every prompt through decoder.onnx, as before the staged export
            out[f"{label} (one-graph)"] = one_graph
    return out


def tile(seed: int = 0, size: int = 1024) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    base = np.stack([128 + 100 * np.sin(cols / 37.0), 128 + 90 * np.cos((rows + cols) / 51.0), 128 + 60 * np.sin(rows / 19.0)], axis=2)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def amg_decode(backend: Any, embedding: Any, points: np.ndarray, threshold: float) -> int:
    """The generator's decoding of ``points`` in batches of 64; returns the outputs kept."""
    from terramask.pipelines.amg.generator import _decoder_for

    decoder = _decoder_for(backend, "auto")

    def select(iou: np.ndarray) -> np.ndarray:
        return iou > threshold if threshold > 0 else np.ones(iou.shape, dtype=bool)

    kept = 0
    for start in range(0, len(points), 64):
        _, rows, _, _ = decoder.decode(embedding, points[start : start + 64], select)
        kept += len(rows)
    return kept


def measure(name: str, runtimes: dict[str, Any], args) -> dict[str, dict[str, list[float]]]:
    from terramask.core.prompts import Prompts

    img = tile()
    grid = (np.stack(np.meshgrid(np.arange(32), np.arange(32)), -1).reshape(-1, 2) + 0.5) / 32 * 1024
    points = grid[: 64 * args.batches]
    clicks = np.random.default_rng(5).uniform(16, 1008, (args.clicks, 2))
    embeddings = {label: b.set_image(img) for label, b in runtimes.items()}  # warm-up
    times: dict[str, dict[str, list[float]]] = {label: {} for label in runtimes}
    kept: dict[str, dict[str, int]] = {label: {} for label in runtimes}

    def timed(label: str, what: str, fn: Callable[[], Any], per: float = 1.0) -> Any:
        t0 = time.perf_counter()
        result = fn()
        times[label].setdefault(what, []).append((time.perf_counter() - t0) / per)
        return result

    for rep in range(args.repeats):
        for label, b in runtimes.items():
            emb = embeddings[label]
            if rep < args.encoder_repeats and not label.endswith("(one-graph)"):
                timed(label, "encoder s", lambda b=b: b.set_image(img))
            timed(label, "click ms", lambda b=b, emb=emb: [b.predict(emb, Prompts(points=c[None], labels=[1])) for c in clicks],
                  per=len(clicks) / 1000.0)
            for what, thr in THRESHOLDS.items():
                n = timed(label, f"{what} s/tile", lambda b=b, emb=emb, thr=thr: amg_decode(b, emb, points, thr),
                          per=args.batches / GRID_BATCHES)
                kept[label][what] = n
        print(f"  repeat {rep + 1}/{args.repeats} done", flush=True)
    print(f"  outputs kept per {len(points)} points: " + ", ".join(f"{k}: {v}" for k, v in kept.items()), flush=True)
    return times


def table(name: str, times: dict[str, dict[str, list[float]]]) -> list[str]:
    columns = list(next(iter(times.values())).keys())
    lines = [f"\n### {name}: median (torch / runtime)\n", "| runtime | " + " | ".join(columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    base = times["torch"]
    for label, row in times.items():
        cells = []
        for col in columns:
            if col not in row:
                cells.append("-")
                continue
            med = statistics.median(row[col])
            ratio = statistics.median(base[col]) / med
            cells.append(f"{med:.3g} ({ratio:.2f}x)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilesam,sam2.1-hiera-tiny")
    ap.add_argument("--repeats", type=int, default=5, help="rounds over the runtimes (medians)")
    ap.add_argument("--encoder-repeats", type=int, default=3, help="rounds that also time the encoder")
    ap.add_argument("--clicks", type=int, default=10, help="clicks timed per round")
    ap.add_argument("--batches", type=int, default=2, help="64-point batches of automatic generation per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch, onnxruntime and OpenVINO threads")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    from terramask.models.allocator import configure_allocator

    configure_allocator()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"# runtime ratios: {args.threads} thread(s), torch {torch.__version__}, load average {load:.1f} at start", flush=True)
    results: dict[str, Any] = {"threads": args.threads, "load_start": load}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tm-ratios-") as tmp:
        work = Path(tmp)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            print(f"- {name}", flush=True)
            runtimes = backends(name, checkpoint(name, work), work, args.threads)
            times = measure(name, runtimes, args)
            results[name] = times
            print("\n".join(table(name, times)), flush=True)  # as soon as it is known
            lines += table(name, times)
            del runtimes
    results["load_end"] = os.getloadavg()[0]
    print("\n## all models" + "\n".join(lines))
    print(f"\nload average {load:.1f} at start, {results['load_end']:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
