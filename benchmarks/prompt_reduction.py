"""Prompt reduction (``--prompts objects``) against the full grid on the classic-structure case.

For each real NAIP image (``../shared/data/rs/naip_fields_agoro/images``), automatic mask
generation runs twice on the same region model as ``benchmarks/amg.py``'s ``classic``
case (a point's three candidates are the classic engine's regions containing it at three
merge levels, as SAM-layout low-res logits; thresholds pred_iou 0.5, stability 0.7):
once with the reference grid (``points_per_side``, default 32: 1,024 prompts) and once
with one prompt per weight-free object proposal (``prompts="objects"``). Reported per
image and in total: prompts decoded, masks, **recall of the grid's masks** (a grid mask
is found when an object-prompt mask has IoU >= 0.5 with it), and the generator's time
(the region model's answers are computed before timing, so the time is the generator's
own work plus, for ``objects``, finding the proposals). On a real SAM decoder time grows
with the prompts (``large_scene.py`` measures MobileSAM's).

Usage (repository root)::

    python benchmarks/prompt_reduction.py --images 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from amg import CASES, RegionBackend, RegionDecoder  # noqa: E402

RS = HERE.parents[2] / "shared" / "data" / "rs" / "naip_fields_agoro" / "images"


def recall(grid, objects, thresh: float = 0.5) -> float:
    if len(grid) == 0:
        return 1.0
    if len(objects) == 0:
        return 0.0
    a = grid.masks.to_dense().reshape(len(grid), -1).astype(np.float32)
    b = objects.masks.to_dense().reshape(len(objects), -1).astype(np.float32)
    inter = a @ b.T
    iou = inter / (a.sum(1)[:, None] + b.sum(1)[None, :] - inter)
    return float((iou.max(axis=1) >= thresh).mean())


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    from terramask.pipelines.amg.generator import generate_compact
    from terramask.pipelines.amg.params import AmgParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    thresholds = CASES["classic"]["params"]
    regions = RegionDecoder()
    rows = []
    for path in sorted(RS.glob("*.png"))[: args.images]:
        rgb = np.array(Image.open(path).convert("RGB"))
        regions.prepare(rgb)  # the region model's answers, before timing
        row: dict = {"image": path.name}
        results = {}
        for prompts in ("grid", "objects"):
            backend = RegionBackend(regions)
            decoded = []
            original = backend.decode_points

            def counting(embedding, coords, labels, original=original, decoded=decoded):
                decoded.append(len(coords))
                return original(embedding, coords, labels)

            backend.decode_points = counting  # type: ignore[method-assign]
            params = AmgParams(points_per_side=args.points_per_side, prompts=prompts, **thresholds)
            started = time.perf_counter()
            result = generate_compact(backend, rgb, params)
            seconds = time.perf_counter() - started
            results[prompts] = result
            row[prompts] = {"prompts": int(sum(decoded)), "masks": len(result), "seconds": round(seconds, 2),
                            "proposals_s": round(result.timings.get("prompts", 0.0), 3)}
        row["recall"] = round(recall(results["grid"], results["objects"]), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = {k: sum(r[k]["prompts"] for r in rows) for k in ("grid", "objects")}
    masks = sum(r["grid"]["masks"] for r in rows)
    found = sum(r["recall"] * r["grid"]["masks"] for r in rows)
    summary = {"images": len(rows), "grid_prompts": total["grid"], "object_prompts": total["objects"],
               "prompt_ratio": round(total["objects"] / total["grid"], 3), "grid_masks": masks,
               "recall": round(found / max(1, masks), 3),
               "grid_s": round(sum(r["grid"]["seconds"] for r in rows), 1),
               "objects_s": round(sum(r["objects"]["seconds"] for r in rows), 1)}
    print(json.dumps(summary), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
