"""Find-similar vs one automatic-generation run, on one 1024 x 1024 tile with a cached embedding.

The goal of issue 11: finding objects like a few exemplars on a tile whose embedding is
already computed costs at most 2x one ``fast`` automatic-generation run at 16 points per
side. Both run in this process on the same embedding (the encoder is excluded from both:
``set_image`` returns the precomputed embedding), interleaved, ``--repeats`` times each;
the script prints medians and their ratio as JSON.

Cases:

- ``find (default)``: ``SimilarFinder`` with its defaults (similarity 0.6, at most 64
  prompts) and prototypes from ``--exemplars`` labelled fields of the image;
- ``find (worst case)``: prototypes without the background negative, similarity -1 and
  all 64 prompts in one batch (``POINT_BATCH = 64``, so no peak is skipped as covered):
  64 prompts decoded, every mask kept, upsampled and NMS'd, the most work find-similar
  does on a tile (random weights give no real objects: one random mask may cover the
  tile, so the default case stops after its first batch of 16);
- ``amg fast 16``: ``generate_compact(points_per_side=16, mode="fast")`` with the reference
  thresholds.

Prototype building (once per scene, not per tile) is timed separately.

``--rss``: detector + SAM memory against scene size. ``terramask find --text`` runs in its
own process on a 2,048^2 and a 10,240^2 scene (a NAIP tile repeated, 3-band uint8 GeoTIFF,
DEFLATE, 1,024 px tiles) with a **tiny random-weight OWLv2** snapshot
(``tests/helpers/tiny_concept.py``, the real ``transformers`` class) and the tiny SAM,
``--box-threshold 0`` so every box of every tile becomes a mask; the script prints each
run's peak RSS (``ru_maxrss`` of the child) and the ratio (goal <= 1.3).

The model is a random-weight SAM with the official prompt encoder and mask decoder and a
tiny ViT image encoder (``tests/helpers/tiny_sam.py``): the decoder, the part both
sides use, is the size of every SAM's, so the ratio holds for ViT-B/L/H; absolute times
do not include any encoder. Image: a 1024 x 1024 NAIP tile of
``../shared/data/rs/naip_fields_agoro`` with its field instances as exemplars.

Usage (from the repository root, through the benchmark lock)::

    /tmp/tm/bench .venv/bin/python benchmarks/find.py --json /tmp/find.json
    /tmp/tm/bench .venv/bin/python benchmarks/find.py --rss --work /tmp/find_rss --json /tmp/find_rss.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

DATA = REPO.parent / "shared" / "data" / "rs" / "naip_fields_agoro"
STEM = "37.2292207864713--86.8936640526172"


class Precomputed:
    """A backend whose ``set_image`` returns one precomputed embedding (a cache hit
    without the cache's hashing and reading); everything else is the wrapped backend's."""

    def __init__(self, backend: Any, embedding: Any) -> None:
        self.backend, self.embedding, self.name = backend, embedding, backend.name
        self.prompts = 0

    def set_image(self, image: Any) -> Any:
        return self.embedding

    def decode_points(self, embedding: Any, coords: Any, labels: Any) -> Any:
        self.prompts += len(coords)
        return self.backend.decode_points(embedding, coords, labels)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.backend, item)


def _one_batch(similar: Any, finder: Any, image: np.ndarray) -> Any:
    """``finder.find(image)`` with every prompt in one batch (nothing skipped as covered)."""
    batch = similar.POINT_BATCH
    similar.POINT_BATCH = finder.max_points
    try:
        return finder.find(image)
    finally:
        similar.POINT_BATCH = batch


def _median_time(fn, repeats: int) -> tuple[float, list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def write_scene(path: Path, side: int) -> Path:
    """``side`` x ``side`` 3-band uint8 GeoTIFF (UTM, 0.6 m) of the NAIP tile repeated,
    tiled and DEFLATE-compressed, written window by window."""
    import rasterio
    from affine import Affine
    from PIL import Image
    from rasterio.windows import Window

    if path.exists():
        return path
    tile = np.asarray(Image.open(DATA / "images" / f"{STEM}.png").convert("RGB")).transpose(2, 0, 1)
    n = tile.shape[1]
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32616",
                   transform=Affine(0.6, 0, 500000.0, 0, -0.6, 3700000.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, n):
            for col in range(0, side, n):
                h, w = min(n, side - row), min(n, side - col)
                dst.write(tile[:, :h, :w], window=Window(col, row, w, h))
    return path


def _child_rss(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh process that reports its child's peak RSS."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t); "
            "print(r.stdout[-400:], r.stderr[-800:], file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
    rc, kb, seconds = out.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr}")
    return {"peak_rss_mb": round(int(kb) / 1024, 1), "seconds": round(float(seconds), 1), "stdout": out.stderr.strip()[:300]}


def rss_case(work: Path) -> dict:
    """Detector + SAM peak RSS on a 2,048^2 and a 10,240^2 scene (see the module docstring)."""
    from helpers.tiny_concept import write_owlv2
    from helpers.tiny_sam import write_sam_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    owl = work / "owlv2"
    if not owl.exists():
        write_owlv2(owl)
    ckpt = work / "tiny_sam.pth"
    if not ckpt.exists():
        write_sam_checkpoint(ckpt, arch="tiny", seed=0)
    terramask = str(Path(sys.executable).with_name("terramask"))
    runs = {}
    for side in (2048, 10240):
        scene = write_scene(work / f"naip_{side}.tif", side)
        out = work / f"out_{side}"
        cmd = [terramask, "find", str(scene), "--text", "building", "--text", "pond", "--detector", "owlv2",
               "--detector-checkpoint", str(owl), "--checkpoint", str(ckpt), "--box-threshold", "0",
               "--out", str(out), "-q"]
        runs[f"{side}x{side}"] = {**_child_rss(cmd), **_objects(out)}
    small, large = runs["2048x2048"]["peak_rss_mb"], runs["10240x10240"]["peak_rss_mb"]
    return {"model": "tiny random-weight OWLv2 (transformers Owlv2ForObjectDetection) + tiny random-weight SAM",
            "runs": runs, "rss_ratio_10k_to_2k": round(large / small, 3), "goal": "<= 1.3"}


def _objects(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {"objects": summary["objects"], "tiles": summary["tiles"]["total"], "masks": summary["counts"]["masks"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exemplars", type=int, default=3, help="labelled fields used as exemplars")
    parser.add_argument("--rss", action="store_true", help="detector + SAM peak RSS on a 2k^2 vs a 10k^2 scene")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "terramask-find-bench")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    if args.rss:
        report = rss_case(args.work)
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return report

    from PIL import Image

    from helpers.tiny_sam import write_sam_checkpoint
    from terramask.models.concept import similar
    from terramask.models.concept.similar import Exemplar, ExemplarImage, SimilarFinder, build_prototypes
    from terramask.models.sam.backend import SamBackend
    from terramask.pipelines.amg.generator import generate_compact
    from terramask.pipelines.amg.params import AmgParams

    image = np.asarray(Image.open(DATA / "images" / f"{STEM}.png").convert("RGB"))
    instances = np.asarray(Image.open(DATA / "masks_instance" / f"{STEM}.png"))
    ids, counts = np.unique(instances[instances > 0], return_counts=True)
    chosen = ids[np.argsort(-counts)][: args.exemplars]
    with tempfile.TemporaryDirectory() as tmp:
        backend = SamBackend.from_checkpoint(write_sam_checkpoint(Path(tmp) / "tiny.pth", arch="tiny", seed=0))
    embedding = backend.set_image(image)
    cached = Precomputed(backend, embedding)
    exemplars = [Exemplar(mask=instances == i, cls="field") for i in chosen]

    t0 = time.perf_counter()
    protos = build_prototypes(cached, [ExemplarImage(image, exemplars)])
    proto_s = time.perf_counter() - t0

    default = SimilarFinder(cached, protos)
    everything = SimilarFinder(cached, build_prototypes(cached, [ExemplarImage(image, exemplars)], background=False),
                               similarity=-1.0)
    params = AmgParams(points_per_side=16)
    cases = {
        "find (default)": lambda: default.find(image),
        "find (worst case)": lambda: _one_batch(similar, everything, image),
        "amg fast 16": lambda: generate_compact(cached, image, params, "fast"),
    }
    for fn in cases.values():  # warm-up: first-call allocations, torch thread pools
        fn()
    results: dict[str, dict] = {name: {"times": []} for name in cases}
    for _ in range(args.repeats):  # interleaved, so drift hits every case alike
        for name, fn in cases.items():
            before = cached.prompts
            _, times, out = _median_time(fn, 1)
            results[name]["times"].extend(times)
            results[name]["objects"] = len(out)
            results[name]["prompts_decoded"] = cached.prompts - before
    for r in results.values():
        r["median_s"] = round(statistics.median(r["times"]), 4)
        r["times"] = [round(t, 4) for t in r["times"]]
    amg = results["amg fast 16"]["median_s"]
    report = {
        "image": f"naip_fields_agoro/{STEM}.png (1024 x 1024)",
        "model": "tiny random-weight SAM (official prompt encoder + mask decoder; encoder excluded: cached embedding)",
        "exemplars": int(len(chosen)),
        "prototypes_s": round(proto_s, 4),
        "cases": results,
        "ratio_find_default_to_amg": round(results["find (default)"]["median_s"] / amg, 3),
        "ratio_find_worst_to_amg": round(results["find (worst case)"]["median_s"] / amg, 3),
        "goal": "find-similar <= 2x amg fast 16",
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
