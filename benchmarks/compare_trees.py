"""Before/after a change: click decoding and automatic generation of two source trees, one run.

Runs the same workload on two checkouts of terramask (``--base`` and ``--head``, each a
repository root whose ``src/`` is put first on ``PYTHONPATH``) in alternating child
processes (base, head, base, head, ...), so both see the same machine state, and prints
per tree the medians over rounds and the ratio head / base:

- ``click_ms``: one ``backend.predict`` (3 candidates at full resolution) on a cached
  ViT-B embedding of a 1024 x 1024 NAIP image, median over ``--clicks`` random object points;
- ``amg_fast_s`` / ``amg_exact_s``: ``terramask.pipelines.amg.generate_compact`` on the
  same image in ``fast`` and ``exact`` mode (``--points-per-side``), excluding the encoder
  (random weights: no candidate passes the default thresholds, so this is decoding and
  filtering); ``amg_*_all_s`` with ``--all-candidates N``: thresholds 0 at N points per
  side, so every candidate is upsampled, deduplicated and encoded;
- ``peak_rss_mb``: the child's RSS high-water mark (``VmHWM``; includes the encoder).

ViT-B has random weights (seeded, written once into ``--cache``); speed does not depend on
weight values. Usage (repository root, nothing else running)::

    git worktree add /tmp/base <commit-before>
    .venv/bin/python benchmarks/compare_trees.py --base /tmp/base --head . --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "rs" / "naip_fields_agoro" / "images" / "37.2292207864713--86.8936640526172.png"

CHILD = r"""
import json, sys, time
import numpy as np
from PIL import Image
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from terramask.core.prompts import Prompts
from terramask.models.resolve import load_backend
from terramask.pipelines.amg import generate_compact
try:
    from terramask.pipelines.amg.params import AmgParams
except ImportError:
    from terramask.pipelines.amg_params import AmgParams
image = np.asarray(Image.open(args["image"]).convert("RGB"))[:1024, :1024]
backend = load_backend("sam-vit-b", checkpoint=args["checkpoint"], device="cpu")
out = {}
t = time.perf_counter(); emb = backend.set_image(image); out["encode_s"] = time.perf_counter() - t
rng = np.random.default_rng(0)
pts = rng.uniform(0, image.shape[0] - 1, size=(args["clicks"] + 3, 2))
times = []
for i, p in enumerate(pts):
    t = time.perf_counter()
    backend.predict(emb, Prompts(points=p[None], labels=np.array([1])), multimask=True)
    if i >= 3:
        times.append(time.perf_counter() - t)
out["click_ms"] = 1000 * float(np.median(times))
cases = {"": AmgParams(points_per_side=args["points_per_side"])}
if args["all_candidates"]:  # thresholds 0: every candidate survives (upsampling, NMS, RLE all work)
    cases["_all"] = AmgParams(points_per_side=args["all_candidates"], pred_iou_thresh=0.0, stability_score_thresh=0.0)
for suffix, params in cases.items():
    for mode in ("fast", "exact"):
        t = time.perf_counter()
        res = generate_compact(backend, image, params, mode)
        total = time.perf_counter() - t
        enc = float(res.timings.get("encode", res.timings.get("encoder", 0.0)))
        out[f"amg_{mode}{suffix}_s"] = total - enc
        out[f"amg_{mode}{suffix}_masks"] = len(res)
with open("/proc/self/status") as fh:
    out["peak_rss_mb"] = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
print("RESULT " + json.dumps(out))
"""


def make_checkpoint(cache: Path) -> Path:
    path = cache / "sam_vit_b_random.pth"
    if not path.exists():
        import torch
        from segment_anything import sam_model_registry

        cache.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = sam_model_registry["vit_b"](checkpoint=None)
        torch.save(model.state_dict(), path.with_suffix(".part"))
        path.with_suffix(".part").rename(path)
    return path


def run_child(tree: Path, payload: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), TERRAMASK_EMBEDDING_CACHE_MB="0")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], env=env,
                          capture_output=True, text=True, cwd=tree)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"child in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="repository root of the tree before the change")
    ap.add_argument("--head", type=Path, default=REPO, help="repository root of the tree after the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--all-candidates", type=int, default=0, metavar="N",
                    help="also run AMG with thresholds 0 (every candidate survives) at N points per side")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "terramask-bench")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    payload = {"checkpoint": str(make_checkpoint(args.cache)), "image": str(args.image), "clicks": args.clicks,
               "points_per_side": args.points_per_side, "threads": args.threads,
               "all_candidates": args.all_candidates}
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    for r in range(args.rounds):
        for name, tree in (("base", args.base), ("head", args.head)):
            res = run_child(tree.resolve(), payload)
            runs[name].append(res)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in res.items()), flush=True)
    keys = [k for k in runs["base"][0] if k in runs["head"][0]]
    print(f"\n| metric | base (median of {args.rounds}) | head | head / base |\n| --- | --- | --- | --- |")
    summary = {}
    for k in keys:
        b = statistics.median(x[k] for x in runs["base"])
        h = statistics.median(x[k] for x in runs["head"])
        summary[k] = {"base": b, "head": h, "ratio": h / b if b else None}
        print(f"| {k} | {b:.4g} | {h:.4g} | {h / b:.3f} |" if b else f"| {k} | {b} | {h} | - |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary, "args": payload}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
