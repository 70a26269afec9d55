"""Peak memory and throughput of tiled automatic segmentation on a 2,000² and a 20,000² scene.

The scenes are mosaics of real NAIP aerial imagery (``../shared/data/rs/naip_fields_agoro``,
1024 x 1024 RGB, about 1 m/px), flipped and rotated so neighbouring blocks differ, written
block by block as tiled, DEFLATE-compressed GeoTIFFs (EPSG:32616, 1 m pixels) in a work
folder (about 1 GB for 20,000²; reused when present).

Each run happens in its own process (through a small launcher process, so
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that run's peak alone) and writes every output
(labels.tif COG, objects.gpkg, overlay.png, summary.json). Segmenters:

- ``fast``: a cheap stand-in with real structure (grey levels of the blurred tile, each
  4-connected region of at least 256 px one mask, the 200 largest per tile) returning
  compact masks like automatic generation does; it keeps the 20,000² run to minutes on a
  small machine while exercising reading, merging and writing at full object density;
- ``classic``: terramask's weight-free superpixel engine (about 1 s per 1024² tile here);
- any registry model name (``sam-vit-b`` …) runs automatic mask generation per tile.

Usage::

    python benchmarks/scene_memory.py                       # fast segmenter, 2000 and 20000
    python benchmarks/scene_memory.py --segmenter classic --sizes 2000
    python benchmarks/scene_memory.py --work /tmp/tm_bench --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
RS_DATA = Path(os.environ.get("TERRAMASK_RS_DATA", REPO.parent / "shared" / "data" / "rs"))
BLOCK = 1024


# -- the scene -----------------------------------------------------------------------------
def _sources() -> list[np.ndarray]:
    import cv2

    files = sorted((RS_DATA / "naip_fields_agoro" / "images").glob("*.png"))
    if not files:
        sys.exit(f"no NAIP images found under {RS_DATA}; set TERRAMASK_RS_DATA")
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]


def build_scene(path: Path, size: int) -> Path:
    """Write a ``size`` x ``size`` RGB mosaic block by block (never whole in memory)."""
    import rasterio
    from affine import Affine

    if path.exists():
        with rasterio.open(path) as ds:
            if ds.width == size and ds.height == size:
                return path
    sources = _sources()
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32616",
                   transform=Affine(1.0, 0, 500000.0, 0, -1.0, 3750000.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", predictor=2, zlevel=1, bigtiff="if_safer")
    started = time.perf_counter()
    with rasterio.open(tmp, "w", **profile) as dst:
        for r, y in enumerate(range(0, size, BLOCK)):
            for c, x in enumerate(range(0, size, BLOCK)):
                k = (r * 7 + c * 3) % len(sources)
                block = np.rot90(sources[k], (r + c) % 4)
                if (r * 3 + c) % 2:
                    block = block[:, ::-1]
                h, w = min(BLOCK, size - y), min(BLOCK, size - x)
                dst.write(np.moveaxis(block[:h, :w], 2, 0), window=rasterio.windows.Window(x, y, w, h))
    os.replace(tmp, path)
    print(f"built {path} ({size}x{size}, {path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s",
          flush=True)
    return path


# -- a cheap segmenter with real structure ------------------------------------------------------
class _CompactMasks:
    def __init__(self, items):
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def window(self, i):
        origin, win, _ = self._items[i]
        return origin, win


class _TileResult:
    """Compact per-tile result in the shape of automatic generation's ``AmgResult``."""

    def __init__(self, shape, items):
        self.shape = shape
        self.masks = _CompactMasks(items)
        self.scores = np.full(len(items), 0.9, dtype=np.float32)
        self.stability = np.array([min(1.0, a / 10000) for _, _, a in items], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class FastSegmenter:
    levels: int = 4
    min_area: int = 256
    max_masks: int = 200

    def __call__(self):
        return self.segment

    def segment(self, image):
        import cv2

        grey = cv2.cvtColor(image.to_rgb8(), cv2.COLOR_RGB2GRAY)
        grey = cv2.GaussianBlur(grey, (0, 0), 2.0)
        q = (grey.astype(np.uint16) * self.levels // 256).astype(np.uint8)
        items = []
        for level in range(self.levels):
            n, lab, stats, _ = cv2.connectedComponentsWithStats((q == level).astype(np.uint8), connectivity=4)
            for k in range(1, n):
                x, y, w, h, area = (int(v) for v in stats[k])
                if area >= self.min_area:
                    items.append(((x, y), lab[y : y + h, x : x + w] == k, area))
        items.sort(key=lambda it: -it[2])
        return _TileResult(grey.shape, items[: self.max_masks])

    def describe(self) -> dict:
        return {"model": "fast-benchmark", "params": {"levels": self.levels, "min_area": self.min_area,
                                                      "max_masks": self.max_masks}}


# -- one run (child process) ----------------------------------------------------------------
def run_one(args) -> None:
    from terramask.pipelines.scene.config import SceneRunConfig
    from terramask.pipelines.scene.run import run_scene
    from terramask.pipelines.scene.segmenters import AutoSegmenter

    seg = FastSegmenter() if args.segmenter == "fast" else AutoSegmenter(args.segmenter)
    config = SceneRunConfig(tile_size=args.tile_size, overlap=args.overlap, progress=False)
    result = run_scene(args.scene, args.out, seg, config)
    print(json.dumps(result.summary))


def measure(cmd: list[str]) -> dict:
    """Run ``cmd``; report its peak RSS (only child of this launcher) and wall time."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_rss_mb": round(peak_mb, 1), "wall_s": round(wall, 1), "summary": summary}


# -- driver --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    one = sub.add_parser("_run")
    one.add_argument("--scene", required=True)
    one.add_argument("--out", required=True)
    one.add_argument("--segmenter", default="fast")
    one.add_argument("--tile-size", type=int, default=1024)
    one.add_argument("--overlap", type=int, default=128)
    launcher = sub.add_parser("_measure")
    launcher.add_argument("rest", nargs=argparse.REMAINDER)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "terramask_scene_memory"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--segmenter", default="fast")
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.cmd == "_run":
        return run_one(args)
    if args.cmd == "_measure":
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        print(json.dumps(measure(rest)))
        return None

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        scene = build_scene(work / f"naip_mosaic_{size}.tif", size)
        out = work / f"out_{args.segmenter}_{size}"
        run = [sys.executable, str(HERE), "_run", "--scene", str(scene), "--out", str(out), "--segmenter",
               args.segmenter, "--tile-size", str(args.tile_size), "--overlap", str(args.overlap)]
        proc = subprocess.run([sys.executable, str(HERE), "_measure", "--", *run], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"run on {size}x{size} failed")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        s = m["summary"]
        row = {
            "size": size,
            "segmenter": args.segmenter,
            "tiles": s["tiles"]["total"],
            "masks": s["counts"]["masks"],
            "objects": s["objects"],
            "peak_rss_mb": m["peak_rss_mb"],
            "wall_s": m["wall_s"],
            "tiles_s": s["timings_s"]["tiles"],
            "tiles_per_s": s["throughput"]["tiles_per_s"],
            "km2_per_h": s["throughput"]["km2_per_h"],
            "pending_peak": s["merge"]["pending_peak"],
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'scene':>13} {'tiles':>6} {'objects':>8} {'peak RSS':>10} {'wall':>8} {'tiles/s':>8} {'km2/h':>8}")
    for r in results:
        print(f"{r['size']:>6}x{r['size']:<6} {r['tiles']:>6} {r['objects']:>8} {r['peak_rss_mb']:>7.0f} MB "
              f"{r['wall_s']:>6.0f} s {r['tiles_per_s']:>8.2f} {r['km2_per_h']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
