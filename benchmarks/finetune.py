"""Decoder fine-tuning of SAM ViT-B on ``naip_fields_agoro``: time, peak RSS and the gain.

Issue 13's goals: 30 images of 1024², embeddings cached, 5 epochs in <= 10 min on the
project's 2-core machine with peak RSS <= 3 GB; val mIoU@1 click after fine-tuning
substantially above the untrained model's, with the weight-free ``classic`` engine beside
them. The only ViT-B weights here are random (official architecture, ``tests/helpers``),
so "before" is an untrained model, as the issue says.

Runs :func:`terramask.pipelines.finetune.run.run_finetune` (the code of ``terramask
finetune``) in this process and reports: embedding time (encoder, once per image, through
the embedding cache), training time per epoch, val mIoU@1/@3/@5 before and after,
``classic`` on the same val images with the same click protocol, and the process's peak
RSS (``ru_maxrss``). Pass ``--cache`` to keep the embedding cache between runs (a second
run then skips the encoder).

Usage::

    python benchmarks/finetune.py                                  # the issue's setting (slow on 2 cores)
    python benchmarks/finetune.py --limit 6 --epochs 2 --instances-per-image 8   # reduced
    python benchmarks/finetune.py --json results.json --work /tmp/tm_ft
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TERRAMASK_RS_DATA", REPO.parent / "shared" / "data" / "rs")) / "naip_fields_agoro"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--work", default="/tmp/tm_finetune_bench", help="checkpoint, run directory, embedding cache")
    ap.add_argument("--limit", type=int, default=None, help="images (evenly spaced); default all 30")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--val", type=float, default=0.2)
    ap.add_argument("--instances-per-image", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--prompts", default="both")
    ap.add_argument("--eval-clicks", type=int, default=5)
    ap.add_argument("--arch", default="vit_b", help="random-weight architecture of tests/helpers/tiny_sam.py")
    ap.add_argument("--no-classic", action="store_true")
    ap.add_argument("--cache", action="store_true", help="keep the embedding cache in --work between runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TERRAMASK_CACHE"] = str(work / ("cache" if args.cache else f"cache-{os.getpid()}"))
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.tiny_sam import write_sam_checkpoint
    from terramask.pipelines.finetune.config import FinetuneConfig
    from terramask.pipelines.finetune.run import run_finetune

    ckpt = work / f"random_{args.arch}.pth"
    if not ckpt.is_file():
        write_sam_checkpoint(ckpt, arch=args.arch, seed=0, scale_decoder=False)
    run_dir = work / f"run-{os.getpid()}"
    config = FinetuneConfig(
        args.data, model=None, checkpoint=str(ckpt), epochs=args.epochs, val=args.val, lr=args.lr,
        batch_size=args.batch_size, prompts=args.prompts, instances_per_image=args.instances_per_image,
        limit=args.limit, eval_clicks=args.eval_clicks, patience=args.epochs,
    )
    t0 = time.perf_counter()
    info = run_finetune(config, run_dir, progress=None)
    total = time.perf_counter() - t0
    train_s = sum(h["seconds"] for h in info["history"])
    result = {
        "config": config.to_dict(), "run_dir": str(run_dir), "seconds_total": round(total, 1),
        "seconds_training": round(train_s, 1), "seconds_per_epoch": [h["seconds"] for h in info["history"]],
        "objects_per_epoch": info["history"][0]["objects"] if info["history"] else 0,
        "history": info["history"], "before": info["metrics"]["before"], "after": info["metrics"]["after"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average": os.getloadavg(),
    }
    if not args.no_classic and info["metrics"]["after"] is not None:
        result["classic"] = _classic(config, info)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _classic(config, info) -> dict:
    """The weight-free engine on the same val images with the same click protocol."""
    from terramask.models.resolve import load_backend
    from terramask.pipelines.finetune.data import subset
    from terramask.pipelines.finetune.report import TABLE_METRICS
    from terramask.pipelines.finetune.run import click_eval, open_dataset

    ds = open_dataset(config)
    val = set(info["data"]["split"]["val"])
    val_ds = subset(ds, [i for i, p in enumerate(ds.pairs) if p.stem in val])
    summary = click_eval(load_backend("classic"), val_ds, config.eval_clicks, "classic")
    return {k: summary.get(k) for k in TABLE_METRICS if k in summary}


if __name__ == "__main__":
    sys.exit(main())
