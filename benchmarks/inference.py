"""Inference speed, side by side on the same inputs and weights (issue 6).

Prints, for random-weight models in the official architectures (no real weights are
needed; speed does not depend on the weight values):

1. encoder seconds per 1024 x 1024 tile: the official predictor's ``set_image`` vs
   terramask's PyTorch backend, ONNX Runtime and ONNX Runtime with the int8 encoder,
   for SAM ViT-B, MobileSAM and SAM 2.1 Hiera-T (deviation = max difference of the
   image embedding from terramask's PyTorch path);
2. the same encoders with glibc's default malloc vs terramask's tuned malloc
   (separate processes, since malloc settings are process-wide);
3. decoder milliseconds per click (median, p95) on a cached embedding, full-resolution
   candidate masks: official ``SamPredictor.predict`` vs ``SamBackend.predict`` vs the
   ONNX backend;
4. ``set_image`` + ``predict`` end to end with the embedding cache cold vs warm.

Usage (from the repository root)::

    .venv/bin/python benchmarks/inference.py                 # everything, ~15 min on 2 cores
    .venv/bin/python benchmarks/inference.py --quick         # tiny models, smoke test
    .venv/bin/python benchmarks/inference.py --json out.json # also write the numbers

Numbers go to ``benchmarks/README.md`` with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


# -- weights ---------------------------------------------------------------------------


def make_weights(out: Path, quick: bool) -> dict[str, Path]:
    """Random-weight checkpoints in the official formats (seeded)."""
    import torch

    paths = {}
    torch.manual_seed(0)
    if quick:
        from segment_anything.build_sam import _build_sam

        sam = _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry["vit_b"]()
    paths["sam-vit-b"] = out / "sam_vit_b.pth"
    torch.save(sam.state_dict(), paths["sam-vit-b"])

    from terramask.models.sam.mobilesam import build_mobilesam_model

    paths["mobilesam"] = out / "mobile_sam.pt"
    torch.save(build_mobilesam_model().state_dict(), paths["mobilesam"])

    from terramask.models.sam2.backend import build_sam2_model, config_text

    model = build_sam2_model(config_text("sam2.1_hiera_t"))
    paths["sam2.1-hiera-tiny"] = out / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, paths["sam2.1-hiera-tiny"])
    return paths


# -- backends ----------------------------------------------------------------------------


def ours(name: str, path: Path):
    if name == "sam-vit-b":
        from terramask.models.sam.backend import SamBackend

        return SamBackend.from_checkpoint(path)
    if name == "mobilesam":
        from terramask.models.sam.mobilesam import MobileSamBackend

        return MobileSamBackend.from_checkpoint(path)
    from terramask.models.sam2.backend import Sam2Backend

    return Sam2Backend.from_checkpoint(path, config="sam2.1_hiera_t")


def official(name: str, path: Path):
    """The upstream predictor over the same file, or None when not installed."""
    import torch

    if name == "sam-vit-b":
        from segment_anything import SamPredictor

        from terramask.models.sam.backend import build_sam_model, infer_arch

        state = torch.load(path, map_location="cpu", weights_only=True)
        # build_sam_model builds the official segment_anything modules for the file's arch
        return SamPredictor(build_sam_model(infer_arch(state), state))
    if name == "mobilesam":
        try:
            from mobile_sam import SamPredictor, sam_model_registry
        except ImportError:
            return None
        sam = sam_model_registry["vit_t"]()
        sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return SamPredictor(sam.eval())
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from terramask.models.sam2.backend import build_sam2_model, config_text

    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return SAM2ImagePredictor(build_sam2_model(config_text("sam2.1_hiera_t"), state))


def onnx_backends(name: str, path: Path, work: Path, threads: int):
    from terramask.models.onnx.backend import open_onnx_backend
    from terramask.models.onnx.export import export_onnx

    t0 = time.perf_counter()
    if name == "sam-vit-b":  # by path: the architecture is read from the file (tiny with --quick)
        export_onnx(path, work / f"onnx-{name}", quantize=True, overwrite=True)
    else:
        export_onnx(name, work / f"onnx-{name}", checkpoint=path, quantize=True, overwrite=True)
    print(f"  exported {name} to ONNX (+int8) in {time.perf_counter() - t0:.0f} s", flush=True)
    return (
        open_onnx_backend(work / f"onnx-{name}", threads=threads),
        open_onnx_backend(work / f"onnx-{name}", threads=threads, quantized=True),
    )


# -- timing ------------------------------------------------------------------------------


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def tile(seed: int = 0, size: int = 1024) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    base = np.stack([128 + 100 * np.sin(cols / 37.0), 128 + 90 * np.cos((rows + cols) / 51.0), 128 + 60 * np.sin(rows / 19.0)], axis=2)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def encoder_rows(name: str, path: Path, work: Path, args) -> list[dict]:
    img = tile()
    rows = []
    off = official(name, path)
    if off is not None:
        off.set_image(img)  # warm-up (first call allocates)
        rows.append({"model": name, "impl": "official torch", "seconds": timed(lambda: off.set_image(img), args.repeats)})
        del off
    ob = ours(name, path)
    ob.set_image(img)
    rows.append({"model": name, "impl": "terramask torch", "seconds": timed(lambda: ob.set_image(img), args.repeats)})
    if not args.no_onnx:
        fp32, int8 = onnx_backends(name, path, work, args.threads)
        if fp32 is not None:
            main_map = lambda f: f["image_embed"] if isinstance(f, dict) else f  # noqa: E731
            ref = main_map(ob.set_image(img).features)
            for label, b in (("terramask onnx", fp32), ("terramask onnx int8", int8)):
                emb = b.set_image(img)
                dev = float(np.abs(main_map(emb.features) - ref).max())
                rel = dev / float(np.abs(ref).max())
                rows.append({"model": name, "impl": label, "seconds": timed(lambda: b.set_image(img), args.repeats),
                             "max_abs_dev_vs_torch": dev, "max_rel_dev_vs_torch": rel})
    return rows


def decoder_rows(path: Path, work: Path, args) -> list[dict]:
    """Per-click decode on a cached ViT-B embedding, 3 full-resolution candidates."""
    from terramask.core.prompts import Prompts

    img = tile(1)
    rng = np.random.default_rng(5)
    clicks = rng.uniform(16, 1008, (args.clicks, 2))
    rows = []
    off = official("sam-vit-b", path)
    off.set_image(img)
    t = [timed(lambda p=p: off.predict(point_coords=p[None], point_labels=np.array([1]), multimask_output=True), 1)[0] for p in clicks]
    rows.append({"impl": "official SamPredictor.predict", "ms": [1000 * v for v in t]})
    del off
    ob = ours("sam-vit-b", path)
    emb = ob.set_image(img)
    t = [timed(lambda p=p: ob.predict(emb, Prompts(points=p[None], labels=[1])), 1)[0] for p in clicks]
    rows.append({"impl": "terramask SamBackend.predict", "ms": [1000 * v for v in t]})
    if not args.no_onnx:
        from terramask.models.onnx.backend import OnnxSamBackend

        d = work / "onnx-sam-vit-b"
        if (d / "terramask-onnx.json").exists():
            onx = OnnxSamBackend(d, threads=args.threads)
            e2 = onx.set_image(img)
            t = [timed(lambda p=p: onx.predict(e2, Prompts(points=p[None], labels=[1])), 1)[0] for p in clicks]
            rows.append({"impl": "terramask onnx predict", "ms": [1000 * v for v in t]})
    return rows


def profile_clicks(path: Path, args) -> None:
    """cProfile of terramask's per-click decode (where the milliseconds go)."""
    import cProfile
    import pstats

    from terramask.core.prompts import Prompts

    ob = ours("sam-vit-b", path)
    img = tile(1)
    emb = ob.set_image(img)
    clicks = np.random.default_rng(5).uniform(16, 1008, (max(20, args.clicks // 10), 2))
    ob.predict(emb, Prompts(points=clicks[:1], labels=[1]))  # warm-up (per-image state)
    prof = cProfile.Profile()
    prof.enable()
    for p in clicks:
        ob.predict(emb, Prompts(points=p[None], labels=[1]))
    prof.disable()
    print(f"## cProfile of SamBackend.predict, {len(clicks)} clicks, ms per click = cumtime / {len(clicks)}\n")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(18)


def cache_rows(path: Path, work: Path, args) -> list[dict]:
    from terramask.core.prompts import Prompts
    from terramask.models.embedding_cache import CachedBackend, EmbeddingCache

    img = tile(2)
    cached = CachedBackend(ours("sam-vit-b", path), EmbeddingCache(work / "emb-cache", cap_bytes=2**30))
    p = Prompts(points=[[500.0, 480.0]], labels=[1])

    def run():
        cached.predict(cached.set_image(img), p)

    cold = timed(run, 1)
    warm = timed(run, max(3, args.repeats))
    return [{"impl": "set_image + predict, cache cold", "seconds": cold}, {"impl": "set_image + predict, cache warm", "seconds": warm}]


def allocator_rows(args) -> list[dict]:
    """The ViT-B (or tiny) encoders under both malloc settings, each in a fresh process."""
    rows = []
    for mode in ("default", "tuned"):
        cmd = [sys.executable, __file__, "--encoder-only", "--malloc", mode, "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--no-onnx"] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        for row in json.loads(out.stdout.strip().splitlines()[-1]):
            row["malloc"] = mode
            rows.append(row)
    return rows


def fmt_s(values: list[float]) -> str:
    return f"{min(values):.2f}" if len(values) == 1 else f"{min(values):.2f} (median {statistics.median(values):.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny SAM encoder instead of ViT-B (smoke test)")
    ap.add_argument("--repeats", type=int, default=2, help="timed encoder runs per implementation (after a warm-up)")
    ap.add_argument("--clicks", type=int, default=200, help="clicks for the decoder timing")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and onnxruntime threads")
    ap.add_argument("--malloc", default="default", choices=["default", "tuned", "aggressive"], help="malloc mode of this process (the library default is off)")
    ap.add_argument("--models", default="sam-vit-b,mobilesam,sam2.1-hiera-tiny")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--profile", action="store_true", help="only profile SamBackend.predict per click (cProfile, top functions)")
    ap.add_argument("--encoder-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write all numbers here")
    args = ap.parse_args(argv)

    from terramask.models.allocator import configure_allocator

    state = configure_allocator(args.malloc)
    import torch

    torch.set_num_threads(args.threads)
    os.environ["TERRAMASK_ONNX_THREADS"] = str(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="tm-bench-") as tmp:
        work = Path(tmp)
        paths = make_weights(work, args.quick)
        if args.profile:
            profile_clicks(paths["sam-vit-b"], args)
            return 0
        if args.encoder_only:
            rows = []
            for name in ("sam-vit-b", "mobilesam"):
                rows += [r for r in encoder_rows(name, paths[name], work, args) if r["impl"] != "terramask onnx"]
            print(json.dumps(rows))
            return 0
        print(f"# terramask inference benchmark: {'tiny SAM (quick)' if args.quick else 'SAM ViT-B'}, "
              f"{args.threads} thread(s), malloc {state.mode}, torch {torch.__version__}", flush=True)
        results: dict = {"threads": args.threads, "malloc": state.mode, "quick": args.quick}
        enc = []
        for name in models:
            print(f"- encoders: {name}", flush=True)
            enc += encoder_rows(name, paths[name], work, args)
        results["encoder"] = enc
        print("- decoder per click", flush=True)
        results["decoder"] = decoder_rows(paths["sam-vit-b"], work, args)
        print("- embedding cache", flush=True)
        results["cache"] = cache_rows(paths["sam-vit-b"], work, args)
        print("- malloc (fresh processes)", flush=True)
        results["allocator"] = allocator_rows(args)

    print("\n## Encoder, seconds per 1024 x 1024 tile (min of runs; ratio = official / this)\n")
    print("| model | implementation | seconds | vs official | deviation vs torch (max abs / rel) |")
    print("| --- | --- | --- | --- | --- |")
    for name in models:
        rows = [r for r in enc if r["model"] == name]
        base = next((min(r["seconds"]) for r in rows if r["impl"] == "official torch"), None)
        for r in rows:
            ratio = f"{base / min(r['seconds']):.2f}x" if base else "-"
            dev = f"{r['max_abs_dev_vs_torch']:.2g} / {r['max_rel_dev_vs_torch']:.2g}" if "max_abs_dev_vs_torch" in r else "-"
            print(f"| {name} | {r['impl']} | {fmt_s(r['seconds'])} | {ratio} | {dev} |")
    print("\n## Encoder under glibc's default malloc vs terramask's tuned malloc (seconds, fresh processes)\n")
    print("| model | implementation | default malloc | tuned malloc | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    alloc = results["allocator"]
    for r in [r for r in alloc if r["malloc"] == "default"]:
        t = next(x for x in alloc if x["malloc"] == "tuned" and x["model"] == r["model"] and x["impl"] == r["impl"])
        print(f"| {r['model']} | {r['impl']} | {min(r['seconds']):.2f} | {min(t['seconds']):.2f} | {min(r['seconds']) / min(t['seconds']):.2f}x |")
    print(f"\n## Decoder per click, ms ({args.clicks} clicks, cached embedding, 3 full-resolution 1024 x 1024 masks)\n")
    print("| implementation | median | p95 | vs official (median) |")
    print("| --- | --- | --- | --- |")
    base = statistics.median(results["decoder"][0]["ms"])
    for r in results["decoder"]:
        med = statistics.median(r["ms"])
        print(f"| {r['impl']} | {med:.1f} | {float(np.percentile(r['ms'], 95)):.1f} | {base / med:.2f}x |")
    print("\n## Embedding cache: set_image + predict, seconds\n")
    cold = min(results["cache"][0]["seconds"])
    for r in results["cache"]:
        print(f"- {r['impl']}: {fmt_s(r['seconds'])} ({cold / min(r['seconds']):.1f}x faster than cold)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
