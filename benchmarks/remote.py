"""Bytes read and time of ``predict`` and ``auto`` on a local COG vs the same COG served over
HTTP by a loopback server (``tests/helpers/remote_server.py``: range requests, counted).

The scene is a mosaic of the real NAIP tiles of ``../shared/data/rs/naip_fields_agoro``
(1024² RGB), ``--size`` pixels square, written as a Cloud-Optimized GeoTIFF (512 px blocks,
DEFLATE, overviews). Each command runs in this process through ``terramask.cli.main``,
local first, then remote, with the weight-free ``classic`` model:

- ``predict``: one point at the scene centre (one 1024 px window is read);
- ``auto``: every tile of the scene (``--tile-size 1024``).

Bytes: for the remote runs, the response bodies the server sent; for the local runs,
``rchar`` of ``/proc/self/io`` (bytes the process read through system calls, the file's
blocks and little else once modules are loaded). Usage::

    .venv/bin/python benchmarks/remote.py --work /tmp/tm_remote [--size 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
RS_DATA = Path(os.environ.get("TERRAMASK_RS_DATA", REPO.parent / "shared" / "data" / "rs"))
sys.path.insert(0, str(REPO / "tests"))


def build_cog(path: Path, size: int) -> Path:
    """``size``² RGB COG of NAIP tiles (EPSG:32616, 1 m pixels), written once."""
    import cv2
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    files = sorted((RS_DATA / "naip_fields_agoro" / "images").glob("*.png"))
    if not files:
        sys.exit(f"no NAIP images under {RS_DATA}; set TERRAMASK_RS_DATA")
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32616",
                   transform=from_origin(600_000, 4_000_000, 1.0, 1.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", photometric="RGB")
    with rasterio.open(tmp, "w", **profile) as dst:
        k = 0
        for y in range(0, size, 1024):
            for x in range(0, size, 1024):
                img = cv2.cvtColor(cv2.imread(str(files[k % len(files)])), cv2.COLOR_BGR2RGB)
                img = np.rot90(img, k // len(files))
                k += 1
                h, w = min(1024, size - y), min(1024, size - x)
                dst.write(np.moveaxis(img[:h, :w], -1, 0), window=Window(x, y, w, h))
    with rasterio.open(tmp) as src:
        rasterio.shutil.copy(src, path, driver="COG", compress="deflate", blocksize=512, overview_resampling="average")
    tmp.unlink()
    return path


def rchar() -> int:
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar")).split()[1])


def run(args: list[str]) -> float:
    from terramask.cli.main import main

    started = time.perf_counter()
    code = main([str(a) for a in args])
    if code != 0:
        sys.exit(f"terramask {' '.join(map(str, args))} failed ({code})")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--size", type=int, default=4096)
    opts = ap.parse_args()
    import rasterio.shutil  # noqa: F401 (build_cog)

    from helpers.remote_server import RemoteServer

    opts.work.mkdir(parents=True, exist_ok=True)
    cog = build_cog(opts.work / f"naip_{opts.size}.tif", opts.size)
    size = cog.stat().st_size
    centre = f"{opts.size // 2},{opts.size // 2}"
    commands = {
        "predict": lambda scene, out: ["predict", scene, "--point", centre, "--model", "classic", "--out", out],
        "auto": lambda scene, out: ["auto", scene, "--model", "classic", "--tile-size", "1024", "-q", "--out", out],
    }
    rows = []
    with RemoteServer(cog.parent) as server:
        for name, make in commands.items():
            before = rchar()
            local_s = run(make(cog, opts.work / f"{name}_local"))
            local_bytes = rchar() - before
            server.set(reset=True)
            remote_s = run(make(server.url(cog.name), opts.work / f"{name}_remote"))
            remote_bytes = server.stats()["bytes_sent"]
            requests = server.stats()["requests"]
            rows.append({"command": name, "file_mb": round(size / 1e6, 1),
                         "local_s": round(local_s, 2), "remote_s": round(remote_s, 2),
                         "time_ratio": round(remote_s / local_s, 2),
                         "local_read_mb": round(local_bytes / 1e6, 2), "remote_read_mb": round(remote_bytes / 1e6, 2),
                         "remote_fraction_of_file": round(remote_bytes / size, 4), "requests": requests})
    print(json.dumps({"size": opts.size, "rows": rows}, indent=2))
    print("| command | file | local | remote | remote/local | read local | read remote (% of file) | requests |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['command']} | {r['file_mb']} MB | {r['local_s']} s | {r['remote_s']} s | {r['time_ratio']} | "
              f"{r['local_read_mb']} MB | {r['remote_read_mb']} MB ({100 * r['remote_fraction_of_file']:.1f} %) | "
              f"{r['requests']} |")


if __name__ == "__main__":
    main()
