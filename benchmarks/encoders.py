"""Encoder seconds per 1024 x 1024 tile per runtime, against the fp32 floor of this machine
measured in the same run (issue 14).

For each model (random weights in the official architectures; speed does not depend on
weight values) and each runtime (torch, onnx, onnx-int8, openvino when installed) and
thread count:

- seconds per encode of one 1024 x 1024 real NAIP tile: median of ``--repeats`` after a
  warm-up, each (model, runtime, threads) in a fresh process, with its peak RSS;
- FLOPs of the encoder counted on the real architecture (``models/flops.count_flops``;
  SAM and MobileSAM on PyTorch's meta device, so ViT-L/H need no compute);
- the achievable dense float32 GFLOP/s at encoder-like matmul shapes with the same
  thread count (``models/flops.matmul_rate``), measured at the start of the run;
- floor = FLOPs / GFLOP/s, and the ratio seconds / floor (goal <= 1.5x).

``onnx-int8`` is the static int8 encoder (``models/onnx/quantize.py``); preparing it
(``--prepare``) quantises it on the shipped real calibration tiles and measures it against
the float encoder on the 10 held-out real tiles x 10 clicks (speed and mean IoU of the
top candidate); the table prints that check and whether int8 is offered. The decoders'
last layers are scaled as in the tests (DESIGN.md) so random-weight masks are not noise.

Usage (from the repository root; exports are kept in ``--work`` between invocations)::

    W=/tmp/tm-encoders
    .venv/bin/python benchmarks/encoders.py --work $W --models mobilesam,sam2.1-hiera-tiny,sam-vit-b --prepare
    .venv/bin/python benchmarks/encoders.py --work $W --models mobilesam,sam2.1-hiera-tiny
    .venv/bin/python benchmarks/encoders.py --work $W --models sam-vit-b --repeats 2
    .venv/bin/python benchmarks/encoders.py --flops-only --models sam-vit-b,sam-vit-l,sam-vit-h,mobilesam,sam2.1-hiera-tiny
    .venv/bin/python benchmarks/encoders.py --quick      # tiny SAM, smoke test

Numbers go to ``benchmarks/README.md`` with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

MODELS = ("sam-vit-b", "mobilesam", "sam2.1-hiera-tiny")
SAM_ARCHS = {"sam-vit-b": "vit_b", "sam-vit-l": "vit_l", "sam-vit-h": "vit_h"}
RUNTIMES = ("torch", "onnx", "onnx-int8", "openvino")
NAIP = Path("/work/shared/data/rs/naip_fields_agoro/images")


# -- models -----------------------------------------------------------------------------


def _scale_sam_decoder(decoder) -> None:
    import torch

    with torch.no_grad():  # logits far from zero, scores apart (DESIGN.md, random weights)
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(400.0)
            mlp.layers[-1].bias.mul_(400.0)
        decoder.iou_prediction_head.layers[-1].weight.mul_(8.0)
        decoder.iou_prediction_head.layers[-1].bias.mul_(8.0)


def build_model(name: str, quick: bool = False):
    """The random-weight torch model of ``name`` (seeded), decoder scaled."""
    import torch

    torch.manual_seed(0)
    if name in SAM_ARCHS or quick:
        from segment_anything.build_sam import _build_sam

        sys.path.insert(0, str(REPO / "tests"))
        from helpers.tiny_sam import ARCHS

        model = _build_sam(**ARCHS["tiny" if quick else SAM_ARCHS[name]])
        _scale_sam_decoder(model.mask_decoder)
        return model
    if name == "mobilesam":
        from terramask.models.sam.mobilesam import build_mobilesam_model

        model = build_mobilesam_model()
        _scale_sam_decoder(model.mask_decoder)
        return model
    from terramask.models.sam2.backend import build_sam2_model, config_text

    model = build_sam2_model(config_text("sam2.1_hiera_t"))
    _scale_sam_decoder(model.sam_mask_decoder)
    return model


def checkpoint(work: Path, name: str, quick: bool) -> Path:
    import torch

    path = work / f"{name}.pt"
    if not path.exists():
        model = build_model(name, quick)
        state = {"model": model.state_dict()} if name.startswith("sam2") else model.state_dict()
        torch.save(state, path)
    return path


def encoder_flops(name: str, quick: bool = False) -> int:
    """FLOPs of one 1024 x 1024 encode, counted on the architecture."""
    import torch

    from terramask.models.flops import count_flops

    if name.startswith("sam2"):  # the sam2 package does not build on the meta device
        return count_flops(build_model(name, quick).eval().forward_image, torch.zeros(1, 3, 1024, 1024))
    with torch.device("meta"):  # shapes only: ViT-H is counted in seconds, without its memory
        model = build_model(name, quick).eval()
        return count_flops(model.image_encoder, torch.zeros(1, 3, 1024, 1024))


def export_dir(work: Path, name: str) -> Path:
    return work / f"onnx-{name}"


def prepare(work: Path, name: str, quick: bool) -> dict:
    """Export (once) and give it the checked static int8 encoder; returns the metadata."""
    from terramask.models.onnx.export import export_onnx, read_metadata
    from terramask.models.onnx.quantize import ensure_int8

    out = export_dir(work, name)
    ckpt = checkpoint(work, name, quick)
    try:
        read_metadata(out)
    except Exception:
        t0 = time.perf_counter()
        if name in SAM_ARCHS or quick:
            export_onnx(ckpt, out, overwrite=True)
        else:
            export_onnx(name, out, checkpoint=ckpt, overwrite=True)
        print(f"  exported {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    meta = ensure_int8(out)
    print(f"  int8 for {name} ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return meta


# -- one timing, in its own process --------------------------------------------------------------------


def tile() -> np.ndarray:
    from PIL import Image

    files = sorted(NAIP.glob("*.png")) if NAIP.is_dir() else []
    if files:
        return np.asarray(Image.open(files[0]).convert("RGB"))
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)


def load(work: Path, name: str, runtime: str, threads: int, quick: bool):
    if runtime == "torch":
        import torch

        torch.set_num_threads(threads)
        path = checkpoint(work, name, quick)
        if name == "mobilesam":
            from terramask.models.sam.mobilesam import MobileSamBackend

            return MobileSamBackend.from_checkpoint(path)
        if name.startswith("sam2"):
            from terramask.models.sam2.backend import Sam2Backend

            return Sam2Backend.from_checkpoint(path, config="sam2.1_hiera_t")
        from terramask.models.sam.backend import SamBackend

        return SamBackend.from_checkpoint(path)
    if runtime == "openvino":
        from terramask.models.openvino.backend import open_openvino_backend

        return open_openvino_backend(export_dir(work, name), threads=threads)
    from terramask.models.onnx.backend import open_onnx_backend

    return open_onnx_backend(export_dir(work, name), threads=threads, quantized=runtime == "onnx-int8")


def child(work: Path, name: str, runtime: str, threads: int, repeats: int, quick: bool) -> dict:
    img = tile()
    backend = load(work, name, runtime, threads, quick)
    backend.set_image(img)  # warm-up: first-call allocation, kernel selection
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.set_image(img)
        seconds.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return {"model": name, "runtime": runtime, "threads": threads, "seconds": seconds, "peak_rss_mb": rss}


def run_child(args, name: str, runtime: str, threads: int) -> dict:
    cmd = [sys.executable, "-W", "ignore", __file__, "--child", name, runtime, str(threads), "--work", str(args.work),
           "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TERRAMASK_ONNX_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if out.returncode != 0:
        return {"model": name, "runtime": runtime, "threads": threads, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------------


def have_openvino() -> bool:
    try:
        import openvino  # noqa: F401

        from terramask.models.openvino import backend  # noqa: F401
    except ImportError:
        return False
    return True


def print_tables(rows: list[dict], flops: dict[str, int], rates: dict, checks: dict) -> None:
    from terramask.models.flops import floor_seconds

    print("\n## Achievable dense float32 matmul rate (best median over encoder-like shapes)\n")
    print("| threads | GFLOP/s | best shape | all shapes (GFLOP/s) |")
    print("| --- | --- | --- | --- |")
    for t, r in sorted(rates.items()):
        shapes = ", ".join(f"{k} {v:.0f}" for k, v in r.per_shape.items())
        print(f"| {t} | {r.gflops:.1f} | {r.best} | {shapes} |")
    print("\n## Encoder FLOPs per 1024 x 1024 tile (counted)\n")
    for name, f in flops.items():
        print(f"- {name}: {f / 1e9:.1f} GFLOP")
    print("\n## Encoder seconds per 1024 x 1024 tile vs the fp32 floor (median; ratio = seconds / floor)\n")
    print("| model | runtime | threads | seconds (median, runs) | floor s | ratio to floor | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['runtime']} | {r['threads']} | error: {r['error'][:120]} | | | |")
            continue
        med = statistics.median(r["seconds"])
        fl = floor_seconds(flops[r["model"]], rates[r["threads"]]) if r["model"] in flops and r["threads"] in rates else float("nan")
        runs = " ".join(f"{s:.2f}" for s in r["seconds"])
        print(f"| {r['model']} | {r['runtime']} | {r['threads']} | {med:.2f} ({runs}) | {fl:.2f} | {med / fl:.2f}x | {r['peak_rss_mb']:.0f} |")
    if checks:
        from terramask.models.onnx.quantize import MIN_AGREEMENT, int8_check, refusal

        print(f"\n## Static int8 vs float encoder (ONNX Runtime), held-out real tiles; offered if faster and >= {MIN_AGREEMENT} mean IoU\n")
        print("| model | float s | int8 s | speed-up | mean IoU (top candidate) | min IoU | clicks | threads | offered |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, meta in checks.items():
            c = int8_check(meta)
            if c is None:
                print(f"| {name} | not measured | | | | | | | no |")
                continue
            why = refusal(name, c)
            print(f"| {name} | {c.float_seconds:.2f} | {c.int8_seconds:.2f} | {c.speedup:.2f}x | {c.mean_iou:.3f} | {c.min_iou:.3f} | "
                  f"{c.clicks} | {c.threads} | {'yes' if why is None else 'no'} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/tm-encoders"), help="weights and exports, kept between runs")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="timed encodes per (model, runtime, threads) after a warm-up")
    ap.add_argument("--prepare", action="store_true", help="only export, quantise and check int8 (timed check: run alone)")
    ap.add_argument("--flops-only", action="store_true", help="only count FLOPs (any SAM size, no timing)")
    ap.add_argument("--quick", action="store_true", help="tiny SAM instead of the named models (smoke test)")
    ap.add_argument("--json", type=Path, help="also write all numbers here")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "RUNTIME", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.work = args.work.expanduser().resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    models = ["sam-tiny"] if args.quick else [m.strip() for m in args.models.split(",") if m.strip()]

    if args.child:
        name, runtime, threads = args.child
        print(json.dumps(child(args.work, name, runtime, int(threads), args.repeats, args.quick)))
        return 0

    import torch

    from terramask.models.flops import matmul_rate

    print(f"# encoders vs the fp32 floor: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}", flush=True)
    flops = {}
    for name in models:
        flops[name] = encoder_flops(name, args.quick)
        print(f"- {name}: {flops[name] / 1e9:.1f} GFLOP", flush=True)
    if args.flops_only:
        return 0
    if args.prepare:
        for name in models:
            meta = prepare(args.work, name, args.quick)
            print(f"- {name}: int8 check {json.dumps(meta.get('int8_check'))}", flush=True)
        print_tables([], {}, {}, {n: prepare(args.work, n, args.quick) for n in models})
        return 0
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    rates = {t: matmul_rate(t) for t in threads}
    for t, r in rates.items():
        print(f"- matmul, {t} thread(s): {r.gflops:.1f} GFLOP/s ({r.best})", flush=True)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if "openvino" in runtimes and not have_openvino():
        runtimes.remove("openvino")
        print("- openvino: not installed here, skipped", flush=True)
    checks = {}
    rows = []
    for name in models:
        if any(r != "torch" for r in runtimes):
            checks[name] = prepare(args.work, name, args.quick)
        for runtime in runtimes:
            for t in threads:
                row = run_child(args, name, runtime, t)
                rows.append(row)
                print(f"- {name} {runtime} {t} thread(s): {row.get('seconds', row.get('error'))}", flush=True)
    print_tables(rows, flops, rates, checks)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "flops": flops, "rates": {t: r.__dict__ for t, r in rates.items()},
                                         "int8": {n: m.get("int8_check") for n, m in checks.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
