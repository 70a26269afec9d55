"""A 10,000 x 10,000 px scene end to end: ``terramask auto`` with MobileSAM (issue 14).

The scene is a mosaic of the 30 real NAIP tiles of ``../shared/data/rs/naip_fields_agoro``
(1024 x 1024 RGB, about 1 m/px; blocks rotated and flipped so neighbours differ), written
block by block as a tiled (512 px), DEFLATE-compressed GeoTIFF in EPSG:32616 with 1 m
pixels (``scene_memory.build_scene``), once, into ``--work`` (reused when present).

The model is MobileSAM's official architecture (TinyViT encoder + SAM decoder) with
**random weights**, built by ``tests/helpers/tiny_mobilesam.py`` with the official
``mobile_sam`` code (decoder output layers scaled so masks and scores are not all alike)
and saved as ``mobile_sam.pt`` in ``--work``: no network here, and the time of every stage
is that of the real model. The masks are not meaningful objects; their number and sizes
are what random weights give.

Every run is the real CLI (``terramask auto SCENE --model mobilesam --checkpoint ...``) in
its own process, launched through a small process that reports
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (that run's peak RSS alone). Cases:

- ``default``: the reference parameters (32 x 32 points, pred_iou_thresh 0.88,
  stability_score_thresh 0.95);
- ``all``: thresholds 0 (``--pred-iou-thresh 0 --stability-score-thresh 0``): every
  candidate survives the filters, the worst case for post-processing and merging;
- ``objects``: the default parameters with ``--prompts objects`` (prompt reduction).

Each run starts with an empty embedding cache (``auto`` caches tile embeddings on disk;
writing them is part of the run). Where the time goes comes from ``summary.json`` ``timings_s`` (read, encode, decode,
postprocess, parts, merge, write, quicklook).

Usage (repository root; time it through the machine's benchmark lock)::

    python benchmarks/large_scene.py --size 1920 --runtimes torch,onnx --cases default   # probe: 4 tiles
    python benchmarks/large_scene.py --size 10000 --runtimes onnx --cases default,all
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(REPO / "tests"))

CASES = {
    "default": [],
    "all": ["--pred-iou-thresh", "0", "--stability-score-thresh", "0"],
    "objects": ["--prompts", "objects"],
    "objects-all": ["--prompts", "objects", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"],
}
STAGES = ("read", "encode", "decode", "postprocess", "parts", "merge", "write", "quicklook")


def checkpoint(work: Path) -> Path:
    """The random-weight MobileSAM checkpoint (official architecture), written once."""
    from helpers.tiny_mobilesam import write_mobilesam_checkpoint

    path = work / "mobile_sam.pt"
    if not path.exists():
        write_mobilesam_checkpoint(path.with_suffix(".tmp"), seed=0)
        os.replace(path.with_suffix(".tmp"), path)
    return path


def terramask_cli() -> list[str]:
    exe = shutil.which("terramask", path=str(Path(sys.executable).parent)) or shutil.which("terramask")
    return [exe] if exe else [sys.executable, "-m", "terramask.cli.main"]


def measure(cmd: list[str]) -> dict:
    """Run ``cmd`` (this launcher's only child); its wall time, peak RSS and exit status."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "peak_rss_mb": round(peak_mb, 1),
            "stdout": proc.stdout[-2000:], "stderr": proc.stderr[-4000:]}


def run_case(scene: Path, out: Path, ckpt: Path, runtime: str, case: str, env: dict, extra: list[str]) -> dict:
    cmd = [*terramask_cli(), "auto", str(scene), "--model", "mobilesam", "--checkpoint", str(ckpt),
           "--runtime", runtime, "--quiet", "--out", str(out), *CASES[case], *extra]
    # `auto` caches tile embeddings on disk: start cold, or a rerun would skip the encoder
    shutil.rmtree(Path(env["TERRAMASK_CACHE"]) / "embeddings", ignore_errors=True)
    launcher = [sys.executable, str(HERE), "_measure", "--", *cmd]
    proc = subprocess.run(launcher, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"launcher failed: {proc.stderr[-2000:]}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    if m["rc"] != 0:
        raise SystemExit(f"terramask auto failed ({' '.join(cmd)}):\n{m['stderr']}")
    s = json.loads((out / "summary.json").read_text())
    t = s["timings_s"]
    return {
        "case": case, "runtime": runtime, "size": s["scene"]["width"], "tiles": s["tiles"]["total"],
        "segmented": s["tiles"]["segmented"], "masks": s["counts"]["masks"], "objects": s["objects"],
        "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"], "total_s": t["total"], "tiles_s": t["tiles"],
        "stages_s": {k: t.get(k) for k in STAGES}, "command": " ".join(cmd),
    }


def tiles_for(size: int, tile: int = 1024, overlap: int = 128) -> int:
    from terramask.core.geometry import plan_tiles

    return len(plan_tiles("x", size, size, tile, overlap))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "terramask_large_scene"))
    parser.add_argument("--size", type=int, default=10000, help="scene side in pixels (default 10000)")
    parser.add_argument("--runtimes", default="onnx", help="comma-separated: torch, onnx, openvino")
    parser.add_argument("--cases", default="default,all", help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--extra", default="", help="further options for terramask auto, space-separated")
    parser.add_argument("--json", help="append the results here (JSON lines)")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_measure"]:
        rest = argv[1:]
        print(json.dumps(measure(rest[1:] if rest[:1] == ["--"] else rest)))
        return
    args = parser.parse_args(argv)
    from scene_memory import build_scene

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = build_scene(work / f"naip_mosaic_{args.size}.tif", args.size)
    ckpt = checkpoint(work)
    env = {**os.environ, "TERRAMASK_CACHE": str(work / "cache")}
    warmed: set[str] = set()
    for runtime in args.runtimes.split(","):
        if runtime != "torch" and runtime not in warmed:  # export the ONNX graphs once, untimed
            small = build_scene(work / "naip_mosaic_512.tif", 512)
            run_case(small, work / f"warm_{runtime}", ckpt, runtime, "default", env, [])
            warmed.add(runtime)
        for case in args.cases.split(","):
            out = work / f"out_{args.size}_{runtime}_{case}"
            row = run_case(scene, out, ckpt, runtime, case, env, args.extra.split())
            per_tile = row["tiles_s"] / max(1, row["segmented"])
            row["s_per_tile"] = round(per_tile, 2)
            row["extrapolated_10000_s"] = round(per_tile * tiles_for(10000), 0)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
