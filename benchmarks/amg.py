"""Automatic mask generation: the official ``SamAutomaticMaskGenerator`` vs terramask.

For each case, the official generator and terramask's ``exact`` and ``fast`` modes run on
the same image with the same weights and parameters, each in its own subprocess, and the
script prints wall time, CPU time, time excluding the image encoder, peak memory above
the loaded model (RSS high-water mark, reset after loading), the ratios to the official
generator, and mask agreement (count difference, mean and minimum matched mask IoU).

Cases (``--cases``):

- ``default``: ViT-B with random weights, the reference defaults (32x32 points).
- ``small-objects``: the same model, the reference notebook's remote-sensing tuning
  (64x64 points, one crop layer, ...).
- ``all-candidates``: ViT-B, thresholds at 0 so every candidate survives the filters
  (what real objects do to the post-processing; random logits give full-image masks).
- ``classic``: masks with real structure from the weight-free ``classic`` backend: a
  point's three candidates are the classic regions containing it at three merge levels
  (fine, medium, coarse), as signed-distance low-res logits, with thresholds lowered.
  Both generators see identical logits (cached before timing), so the times compare the
  generators' own work (filtering, upsampling, NMS, RLE).

Usage (from the repository root)::

    .venv/bin/python benchmarks/amg.py                      # every case, ~1 h on 2 cores
    .venv/bin/python benchmarks/amg.py --quick              # 512 px crop, small grids
    .venv/bin/python benchmarks/amg.py --cases default,classic --json results.json

The random ViT-B checkpoint (375 MB) is written once into ``--cache`` (default
``$TMPDIR/terramask-bench``). Images: ``../shared/data/rs/naip_fields_agoro/images/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "rs" / "naip_fields_agoro" / "images" / "37.2292207864713--86.8936640526172.png"
GENERATORS = ("official", "exact", "fast")
CASES = {
    "default": {"model": "vit_b", "preset": "default", "params": {}},
    "small-objects": {"model": "vit_b", "preset": "small-objects", "params": {}},
    "all-candidates": {"model": "vit_b", "preset": "default", "params": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}},
    "classic": {"model": "classic", "preset": "default", "params": {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}},
}
QUICK_PARAMS = {
    "default": {"points_per_side": 8},
    "small-objects": {"points_per_side": 16},
    "all-candidates": {"points_per_side": 8},
    "classic": {"points_per_side": 8},
}


# -- memory ------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    """Reset the RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# -- the classic structure model ------------------------------------------------------------------


class RegionDecoder:
    """Three candidate masks per point from classic regions at three merge levels.

    For a crop (uint8 RGB) the classic backend's ``generate`` is run with three
    ``merge_thresh`` values; a point's candidates are the regions containing it (empty
    when it is in none), as low-res logits in SAM's layout (signed distance,
    ``mask_to_low_res_logits``), predicted IoU ``0.6 + 0.4 * region score``.
    Everything is cached per crop, so :meth:`prepare` can pay it before timing.
    """

    LEVELS = (6.0, 12.0, 24.0)

    def __init__(self) -> None:
        from terramask.models.classic.backend import ClassicBackend

        self.classic = ClassicBackend()
        self._crops: dict = {}

    def _key(self, crop: np.ndarray):
        return (crop.shape, hash(crop[::7, ::7].tobytes()))

    def prepare(self, crop: np.ndarray):
        from terramask.models.classic.features import mask_to_low_res_logits

        key = self._key(crop)
        if key in self._crops:
            return self._crops[key]
        levels = []
        for thr in self.LEVELS:
            ms = self.classic.generate(crop, merge_thresh=thr)
            labels = np.full(crop.shape[:2], -1, np.int32)
            order = np.argsort(-ms.areas, kind="stable")
            for i in order:
                labels[ms.masks[i]] = i
            logits = np.stack([mask_to_low_res_logits(m) for m in ms.masks]).astype(np.float32) if len(ms) else None
            scores = 0.6 + 0.4 * np.clip(np.asarray(ms.scores, np.float32), 0, 1)
            levels.append((labels, logits, scores))
        self._crops[key] = levels
        return levels

    def decode(self, crop: np.ndarray, points: np.ndarray):
        """``points (B, 2)`` crop pixels -> ``low (B, 3, 256, 256)``, ``iou (B, 3)``."""
        levels = self.prepare(crop)
        h, w = crop.shape[:2]
        b = len(points)
        low = np.full((b, 3, 256, 256), -20.0, np.float32)
        iou = np.zeros((b, 3), np.float32)
        xs = np.clip(points[:, 0].astype(int), 0, w - 1)
        ys = np.clip(points[:, 1].astype(int), 0, h - 1)
        for k, (labels, logits, scores) in enumerate(levels):
            ids = labels[ys, xs]
            for j, rid in enumerate(ids):
                if rid >= 0:
                    low[j, k] = logits[rid]
                    iou[j, k] = scores[rid]
        return low, iou


class RegionBackend:
    """terramask's backend protocol over :class:`RegionDecoder` (SAM's resize rule)."""

    name = "classic-regions"
    mask_threshold = 0.0
    img_size = 1024

    def __init__(self, regions: RegionDecoder) -> None:
        from terramask.models.upscale import Upscaler

        self.regions = regions
        self.upscaler = Upscaler(256, 1024)
        self._crops: dict = {}

    def set_image(self, image):
        from terramask.models.base import Embedding, as_rgb8
        from terramask.models.sam.backend import preprocess_shape

        rgb = as_rgb8(image)
        key = len(self._crops)
        self._crops[key] = rgb
        return Embedding(self.name, key, rgb.shape[:2], preprocess_shape(*rgb.shape[:2], 1024))

    def decode_points(self, embedding, coords, labels):
        return self.regions.decode(self._crops[embedding.features], np.asarray(coords)[:, 0, :])

    def upscale_logits(self, embedding, low_res, window=None):
        return self.upscaler(np.asarray(low_res, np.float32), embedding.image_size, embedding.input_size, window)


def region_sam(regions: RegionDecoder, tiny_checkpoint: Path):
    """An official ``Sam`` whose prompt path answers from :class:`RegionDecoder`, and a
    hook that tells it which crop the official predictor is working on."""
    import torch
    from helpers.structured_sam import CoordPromptEncoder, PooledEncoder
    from helpers.tiny_sam import build_official_sam

    state = {"crop": None}

    class RegionTorchDecoder(torch.nn.Module):
        def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
            crop = state["crop"]
            h, w = crop.shape[:2]
            s = 1024.0 / max(h, w)
            new_h, new_w = int(h * s + 0.5), int(w * s + 0.5)
            xy = sparse_prompt_embeddings[:, 0, :2].double().numpy() * np.array([w / new_w, h / new_h])
            low, iou = regions.decode(crop, xy)
            return torch.as_tensor(low), torch.as_tensor(iou)

    sam = build_official_sam(tiny_checkpoint)
    sam.image_encoder = PooledEncoder(1024)
    sam.prompt_encoder = CoordPromptEncoder(sam.prompt_encoder)
    sam.mask_decoder = RegionTorchDecoder()
    return sam.eval(), state


# -- one run (child process) ------------------------------------------------------------------


def _crops_and_points(shape, params):
    from terramask.pipelines.amg.params import generate_crop_boxes

    boxes, layers = generate_crop_boxes(shape, params.crop_n_layers, params.crop_overlap_ratio)
    grids = params.layer_grids()
    return [(b, grids[l] * np.array([b[2] - b[0], b[3] - b[1]])[None]) for b, l in zip(boxes, layers)]


class Meter:
    """Encoder time and peak RSS per phase: the whole run, and after the encoder (the
    decoder and post-processing), using the RSS high-water mark reset after each
    encoder call."""

    def __init__(self) -> None:
        self.base_kb = _status_kb("VmRSS")
        self.reset_ok = reset_peak()
        self.total_kb = self.base_kb
        self.post_kb = self.base_kb
        self.encoder_wall = 0.0
        self.encoder_cpu = 0.0
        self.encoder_kb = self.base_kb

    def wrap(self, set_image):
        def timed(*args, **kwargs):
            hwm = _status_kb("VmHWM")
            self.total_kb = max(self.total_kb, hwm)
            self.post_kb = max(self.post_kb, hwm)
            t, c = time.perf_counter(), time.process_time()
            out = set_image(*args, **kwargs)
            self.encoder_wall += time.perf_counter() - t
            self.encoder_cpu += time.process_time() - c
            hwm = _status_kb("VmHWM")
            self.total_kb = max(self.total_kb, hwm)
            self.encoder_kb = max(self.encoder_kb, hwm)
            reset_peak()
            return out

        return timed

    def finish(self) -> None:
        hwm = _status_kb("VmHWM")
        self.total_kb = max(self.total_kb, hwm)
        self.post_kb = max(self.post_kb, hwm)


def child(args) -> None:
    import torch

    from terramask.pipelines.amg.presets import resolve_params

    case = CASES[args.case]
    image = np.load(args.image_npy)
    params = resolve_params(case["preset"], output_mode="coco_rle", **case["params"], **json.loads(args.extra))
    error = None
    if case["model"] == "vit_b":
        if args.generator == "official":
            from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

            model = sam_model_registry["vit_b"](checkpoint=args.checkpoint).eval()
        else:
            from terramask.models.sam.backend import SamBackend

            model = SamBackend.from_checkpoint(args.checkpoint)
    else:
        regions = RegionDecoder()
        for box, _ in _crops_and_points(image.shape[:2], params):
            regions.prepare(np.ascontiguousarray(image[box[1] : box[3], box[0] : box[2]]))
        if args.generator == "official":
            from segment_anything import SamAutomaticMaskGenerator

            model, state = region_sam(regions, Path(args.tiny_checkpoint))
        else:
            model = RegionBackend(regions)
    torch.set_grad_enabled(False)
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    meter = Meter()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if args.generator == "official":
        gen = SamAutomaticMaskGenerator(model, **params.reference_kwargs())
        original = gen.predictor.set_image

        def set_image(img, image_format="RGB"):
            if case["model"] != "vit_b":
                state["crop"] = np.ascontiguousarray(img)
            return original(img, image_format)

        gen.predictor.set_image = meter.wrap(set_image)
        try:
            recs = gen.generate(image)
        except IndexError as exc:
            # segment_anything fails after all its work when crop layers keep no mask at all
            # (box_area of an empty crop_boxes tensor); the time until then is its cost
            error = f"official generator raised {type(exc).__name__}: {exc} (no masks kept with crop layers)"
            recs = []
    else:
        from terramask.pipelines.amg.generator import generate_compact, records

        model.set_image = meter.wrap(model.set_image)
        result = generate_compact(model, image, params, mode=args.generator)
        recs = records(result, "coco_rle")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    meter.finish()
    out = {
        "error": error,
        "case": args.case,
        "generator": args.generator,
        "wall_s": wall,
        "cpu_s": cpu,
        "encoder_s": meter.encoder_wall,
        "encoder_cpu_s": meter.encoder_cpu,
        "base_rss_mb": meter.base_kb / 1024,
        "peak_extra_mb": max(0, meter.total_kb - meter.base_kb) / 1024,
        "peak_after_encoder_mb": max(0, meter.post_kb - meter.base_kb) / 1024,
        "peak_encoder_mb": max(0, meter.encoder_kb - meter.base_kb) / 1024,
        "peak_reset": meter.reset_ok,
        "count": len(recs),
        "segmentations": [r["segmentation"] for r in recs],
        "threads": torch.get_num_threads(),
    }
    Path(args.result).write_text(json.dumps(out))


# -- agreement and the driver ---------------------------------------------------------------------


def agreement(ref: list[dict], ours: list[dict]) -> dict:
    """Count difference and, for every reference mask, the IoU of its best match."""
    from pycocotools import mask as mask_utils

    out = {"count_ref": len(ref), "count": len(ours), "count_diff": len(ours) - len(ref)}
    if not ref or not ours:
        out.update(mean_iou=None if (ref or ours) else 1.0, min_iou=None if (ref or ours) else 1.0)
        return out
    enc = lambda segs: [{"size": s["size"], "counts": s["counts"].encode()} for s in segs]  # noqa: E731
    iou = mask_utils.iou(enc(ref), enc(ours), [0] * len(ours))
    best = np.asarray(iou).reshape(len(ref), len(ours)).max(axis=1)
    out.update(mean_iou=float(best.mean()), min_iou=float(best.min()))
    return out


def ensure_checkpoints(cache: Path) -> tuple[Path, Path]:
    from helpers.tiny_sam import write_sam_checkpoint

    cache.mkdir(parents=True, exist_ok=True)
    vit_b = cache / "sam_vit_b_random_seed0.pth"
    tiny = cache / "sam_tiny_random_seed0.pth"
    if not vit_b.exists():
        print(f"writing a random-weight ViT-B checkpoint to {vit_b} ...", flush=True)
        write_sam_checkpoint(vit_b.with_suffix(".tmp"), arch="vit_b", seed=0, scale_decoder=False)
        vit_b.with_suffix(".tmp").rename(vit_b)
    if not tiny.exists():
        write_sam_checkpoint(tiny, arch="tiny", seed=0)
    return vit_b, tiny


def run_case(name: str, image_npy: Path, vit_b: Path, tiny: Path, extra: dict, tmp: Path, threads: int | None) -> dict:
    runs = {}
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    for gen in GENERATORS:
        res = tmp / f"{name}-{gen}.json"
        cmd = [sys.executable, __file__, "--child", "--case", name, "--generator", gen, "--image-npy", str(image_npy),
               "--checkpoint", str(vit_b), "--tiny-checkpoint", str(tiny), "--extra", json.dumps(extra), "--result", str(res)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{name}/{gen} failed ({time.perf_counter() - t:.0f}s):\n{proc.stderr[-3000:]}")
        runs[gen] = json.loads(res.read_text())
        r = runs[gen]
        print(f"  {name:15s} {gen:9s} wall {r['wall_s']:8.1f}s  cpu {r['cpu_s']:8.1f}s  encoder {r['encoder_s']:6.1f}s "
              f"(cpu {r['encoder_cpu_s']:6.1f}s)  peak +{r['peak_extra_mb']:6.0f} MB, after encoder +{r['peak_after_encoder_mb']:6.0f} MB  "
              f"masks {r['count']}" + (f"  [{r['error']}]" if r.get("error") else ""), flush=True)
    ref = runs["official"]
    summary = {"case": name, "params": {**CASES[name]["params"], **extra}, "preset": CASES[name]["preset"], "runs": {}}
    for gen, r in runs.items():
        row = {k: r.get(k) for k in ("wall_s", "cpu_s", "encoder_s", "encoder_cpu_s", "peak_extra_mb", "peak_after_encoder_mb",
                                      "peak_encoder_mb",
                                      "count", "base_rss_mb", "threads", "error")}
        row["wall_ex_encoder_s"] = r["wall_s"] - r["encoder_s"]
        row["cpu_ex_encoder_s"] = r["cpu_s"] - r["encoder_cpu_s"]
        if gen != "official":
            row["speedup_wall"] = ref["wall_s"] / max(r["wall_s"], 1e-9)
            row["speedup_ex_encoder"] = (ref["wall_s"] - ref["encoder_s"]) / max(r["wall_s"] - r["encoder_s"], 1e-9)
            row["speedup_cpu"] = ref["cpu_s"] / max(r["cpu_s"], 1e-9)
            row["speedup_cpu_ex_encoder"] = (ref["cpu_s"] - ref["encoder_cpu_s"]) / max(r["cpu_s"] - r["encoder_cpu_s"], 1e-9)
            row["memory_ratio"] = r["peak_extra_mb"] / max(ref["peak_extra_mb"], 1e-9)
            row["memory_ratio_after_encoder"] = r["peak_after_encoder_mb"] / max(ref["peak_after_encoder_mb"], 1e-9)
            row["agreement_vs_official"] = agreement(ref["segmentations"], r["segmentations"])
        summary["runs"][gen] = row
    summary["runs"]["fast"]["agreement_vs_exact"] = agreement(runs["exact"]["segmentations"], runs["fast"]["segmentations"])
    return summary


def agreement_over_images(images: list[Path], points: int, threads: int | None) -> list[dict]:
    """``fast`` vs ``exact`` on several real images with the classic region model
    (in this process; agreement and times only)."""
    import torch
    from PIL import Image

    from terramask.pipelines.amg.generator import generate_compact, records
    from terramask.pipelines.amg.presets import resolve_params

    if threads:
        torch.set_num_threads(threads)
    params = resolve_params("default", points_per_side=points, **CASES["classic"]["params"])
    rows = []
    for path in images:
        image = np.array(Image.open(path).convert("RGB"))
        regions = RegionDecoder()
        regions.prepare(image)
        backend = RegionBackend(regions)
        out = {"image": path.name}
        recs = {}
        for mode in ("exact", "fast"):
            t = time.perf_counter()
            res = generate_compact(backend, image, params, mode=mode)
            out[f"{mode}_s"] = time.perf_counter() - t
            recs[mode] = [r["segmentation"] for r in records(res, "coco_rle")]
        out.update(agreement(recs["exact"], recs["fast"]))
        print(f"  {path.name:45s} exact {out['exact_s']:6.1f}s fast {out['fast_s']:6.1f}s  masks {out['count']} vs {out['count_ref']}  "
              f"IoU mean {out['mean_iou']:.4f} min {out['min_iou']:.4f}", flush=True)
        rows.append(out)
    return rows


def print_table(results: list[dict]) -> None:
    print()
    print("times in seconds (wall / CPU), 'ex-enc' = without the image encoder; peak = RSS above the loaded model "
          "(whole run / after the encoder); 'x' = official / ours")
    print(f"{'case':15s} {'generator':9s} {'wall':>7s} {'cpu':>7s} {'wall ex-enc':>11s} {'cpu ex-enc':>10s} "
          f"{'peak MB':>8s} {'post MB':>8s} {'x wall':>7s} {'x ex-enc':>8s} {'x cpu ex':>8s} {'mem':>5s} {'post':>5s} "
          f"{'masks':>5s}  IoU mean/min vs official")
    for s in results:
        for gen, r in s["runs"].items():
            ag = r.get("agreement_vs_official")
            agt = "" if ag is None else (
                f"{ag['mean_iou']:.4f}/{ag['min_iou']:.4f} (count {ag['count_diff']:+d})" if ag["mean_iou"] is not None
                else f"(count {ag['count_diff']:+d})")
            print(f"{s['case']:15s} {gen:9s} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['wall_ex_encoder_s']:11.1f} "
                  f"{r['cpu_ex_encoder_s']:10.1f} {r['peak_extra_mb']:8.0f} {r['peak_after_encoder_mb']:8.0f} "
                  f"{r.get('speedup_wall', 1):7.2f} {r.get('speedup_ex_encoder', 1):8.2f} {r.get('speedup_cpu_ex_encoder', 1):8.2f} "
                  f"{r.get('memory_ratio', 1):5.2f} {r.get('memory_ratio_after_encoder', 1):5.2f} {r['count']:5d}  {agt}")
        fa = s["runs"]["fast"]["agreement_vs_exact"]
        if fa["mean_iou"] is not None:
            print(f"{'':15s} fast vs exact: masks {fa['count']} vs {fa['count_ref']}, matched IoU mean {fa['mean_iou']:.4f} "
                  f"min {fa['min_iou']:.4f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--quick", action="store_true", help="512x512 crop and small grids (development)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "terramask-bench")
    ap.add_argument("--json", type=Path, help="write the results (without masks) here")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for torch/BLAS in every run (default: the libraries' own choice)")
    ap.add_argument("--agreement-images", type=int, default=0, metavar="N",
                    help="also compare fast with exact on the first N images of the image's folder (classic regions)")
    ap.add_argument("--agreement-points", type=int, default=32, help="points per side for --agreement-images")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="CASE:NAME=VALUE",
                    help="override a parameter of one case, e.g. small-objects:points_per_side=32 (repeatable)")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--generator", help=argparse.SUPPRESS)
    ap.add_argument("--image-npy", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--tiny-checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    from PIL import Image

    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    image = np.array(Image.open(args.image).convert("RGB"))
    if args.quick:
        image = np.ascontiguousarray(image[:512, :512])
    vit_b, tiny = ensure_checkpoints(args.cache)
    print(f"image {args.image.name} {image.shape[1]}x{image.shape[0]}; cpu count {os.cpu_count()}; threads {args.threads or 'default'}; "
          f"load average {os.getloadavg()[0]:.1f}; started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        npy = tmp / "image.npy"
        np.save(npy, image)
        for name in names:
            extra = dict(QUICK_PARAMS[name]) if args.quick else {}
            for item in args.overrides:
                case, _, assignment = item.partition(":")
                key, _, value = assignment.partition("=")
                if case == name:
                    extra[key] = json.loads(value)
            results.append(run_case(name, npy, vit_b, tiny, extra, tmp, args.threads))
    print_table(results)
    agreement_rows = []
    if args.agreement_images:
        print(f"\nfast vs exact on {args.agreement_images} images (classic regions, {args.agreement_points}x{args.agreement_points} points):")
        paths = sorted(args.image.parent.glob("*.png"))[: args.agreement_images]
        agreement_rows = agreement_over_images(paths, args.agreement_points, args.threads)
        ious = [r["mean_iou"] for r in agreement_rows if r["mean_iou"] is not None]
        mins = [r["min_iou"] for r in agreement_rows if r["min_iou"] is not None]
        diffs = [r["count_diff"] for r in agreement_rows]
        if ious:
            print(f"  overall: mean matched IoU {np.mean(ious):.4f}, lowest {min(mins):.4f}, count difference {min(diffs):+d}..{max(diffs):+d}")
    if args.json:
        args.json.write_text(json.dumps({"image": str(args.image), "size": list(image.shape[:2]), "quick": args.quick,
                                         "threads": args.threads, "load_average_end": os.getloadavg(),
                                         "results": results, "agreement": agreement_rows}, indent=2))


if __name__ == "__main__":
    main()
