"""Scale-out measured: the Ray engine with 1 and 2 local workers on the same scene (issue 14),
and the documented multi-node set-up exercised with two Ray nodes on this machine.

``scale`` (default): ``terramask auto SCENE --engine ray --workers N`` for each N of
``--workers`` (default 1,2) on a mosaic of real NAIP tiles (``large_scene.py``'s scene,
``--size`` pixels a side) with the random-weight MobileSAM of ``large_scene.py``; each
Ray worker reserves one CPU and runs one thread (Ray sets ``OMP_NUM_THREADS`` to the
worker's CPUs). Throughput is segmented tiles per second of the tile loop after the
engine's start-up (``summary.json`` ``engine.startup_s``: starting Ray, the actors and
their models), and also over the whole tile loop. Outputs must be identical: the
``labels.tif`` pixels equal and the objects equal (``objects.gpkg`` geometries and
attributes, ``masks.json``).

``two-nodes``: the README's cluster commands on loopback, with a private temp dir and
ports so nothing else on the machine is touched::

    ray start --head --port PORT --num-cpus 1 ...          # node 1
    ray start --address 127.0.0.1:PORT --num-cpus 1 ...     # node 2
    terramask auto SCENE --engine ray --address 127.0.0.1:PORT --out ...

then checks that both nodes did tiles (``engine.processes_used`` = 2, one per node) and
that the outputs equal a local run's; the Ray processes it started are ended by their
process ids (never ``ray stop``, which would end every Ray on the machine).

Usage (repository root; time through the machine's benchmark lock)::

    python benchmarks/ray_scale.py --size 2816 --workers 1,2
    python benchmarks/ray_scale.py two-nodes --size 1920
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from large_scene import checkpoint, terramask_cli  # noqa: E402


def auto(scene: Path, out: Path, ckpt: Path, env: dict, *options: str) -> dict:
    """Run ``terramask auto`` with ``options``; its summary (exits on failure)."""
    cmd = [*terramask_cli(), "auto", str(scene), "--model", "mobilesam", "--checkpoint", str(ckpt), "--quiet",
           "--out", str(out), *options]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    summary["_wall_s"] = time.perf_counter() - started
    summary["_command"] = " ".join(cmd)
    return summary


def same_outputs(a: Path, b: Path) -> dict:
    """Labels pixel-equal, objects (geometries and attributes) and masks.json records equal."""
    import numpy as np
    import pyogrio
    import rasterio

    with rasterio.open(a / "labels.tif") as da, rasterio.open(b / "labels.tif") as db:
        labels = bool(np.array_equal(da.read(1), db.read(1)))
    def rows(path: Path):
        meta, _, geoms, cols = pyogrio.raw.read(path)
        return list(meta["fields"]), [np.asarray(c).tolist() for c in cols], [bytes(g) for g in geoms]

    fa, fb = rows(a / "objects.gpkg"), rows(b / "objects.gpkg")
    masks = json.loads((a / "masks.json").read_text()) == json.loads((b / "masks.json").read_text())
    return {"labels_equal": labels, "objects_equal": fa == fb, "masks_equal": masks, "objects": len(fa[2])}


def scale(args, work: Path, scene: Path, ckpt: Path, env: dict) -> None:
    rows = []
    for n in (int(v) for v in args.workers.split(",")):
        out = work / f"ray_{args.size}_{n}w"
        s = auto(scene, out, ckpt, env, "--engine", "ray", "--workers", str(n), *args.extra.split())
        tiles, loop, startup = s["tiles"]["segmented"], s["timings_s"]["tiles"], s["engine"]["startup_s"]
        row = {"workers": n, "tiles": tiles, "objects": s["objects"], "tiles_s": loop, "startup_s": startup,
               "tiles_per_s": round(tiles / (loop - startup), 4), "tiles_per_s_with_startup": round(tiles / loop, 4),
               "processes_used": s["engine"]["processes_used"], "wall_s": round(s["_wall_s"], 1),
               "command": s["_command"], "out": str(out)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]
    for row in rows[1:]:
        result = {"workers": f"{base['workers']} -> {row['workers']}",
                  "throughput_ratio": round(row["tiles_per_s"] / base["tiles_per_s"], 3),
                  "throughput_ratio_with_startup": round(row["tiles_per_s_with_startup"] / base["tiles_per_s_with_startup"], 3),
                  **same_outputs(Path(base["out"]), Path(row["out"]))}
        print(json.dumps(result), flush=True)


def _ray_pids(temp_dir: Path) -> list[int]:
    """Process ids of the Ray processes started with ``temp_dir`` (ours alone)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(temp_dir) in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def _node_ports(base: int) -> list[str]:
    """Fixed, distinct ports for one node's services (two nodes share this machine and
    must not meet another Ray's defaults)."""
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    return [arg for i, name in enumerate(names) for arg in (name, str(base + i))]


def two_nodes(args, work: Path, scene: Path, ckpt: Path, env: dict) -> None:
    ray = str(Path(sys.executable).parent / "ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="ray_", dir="/tmp"))  # Ray's socket paths must stay short
    port = str(args.port)
    common = ["--num-cpus", "1", "--object-store-memory", str(150 * 1024 * 1024), "--disable-usage-stats",
              "--node-ip-address", "127.0.0.1"]
    head = [ray, "start", "--head", "--port", port, "--include-dashboard=false", "--temp-dir", str(temp_dir),
            *common, *_node_ports(args.port + 10)]
    node = [ray, "start", "--address", f"127.0.0.1:{port}", *common, *_node_ports(args.port + 20)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # so the Ray processes are still ended
    # Ray 2.5x: `ray start --head` turns token authentication on by itself when ~/.ray/auth_token
    # exists, while `ray start --address` does not send it; one explicit mode for every process
    env = {**env, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    try:
        for cmd in (head, node):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
            print(f"$ {' '.join(cmd)}  -> exit {proc.returncode}", flush=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
        status = subprocess.run([ray, "status", "--address", f"127.0.0.1:{port}"], capture_output=True, text=True,
                                env=env, timeout=120)
        print(status.stdout[-1500:], flush=True)
        # thresholds 0: random weights pass nothing at the defaults, and empty outputs would compare equal trivially
        extra = ["--pred-iou-thresh", "0", "--stability-score-thresh", "0", *args.extra.split()]
        cluster = auto(scene, work / "two_nodes", ckpt, env, "--engine", "ray", "--address", f"127.0.0.1:{port}",
                       *extra)
        local = auto(scene, work / "two_nodes_local", ckpt, {**env, "OMP_NUM_THREADS": "1"}, *extra)
        result = {"command": cluster["_command"], "workers": cluster["engine"]["workers"],
                  "processes_used": cluster["engine"]["processes_used"], "tiles": cluster["tiles"]["segmented"],
                  "wall_s": round(cluster["_wall_s"], 1), "local_wall_s": round(local["_wall_s"], 1),
                  **same_outputs(work / "two_nodes", work / "two_nodes_local")}
        print(json.dumps(result), flush=True)
    finally:
        pids = _ray_pids(temp_dir)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(3)
        for pid in _ray_pids(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(f"ended {len(pids)} Ray processes of {temp_dir}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="scale", choices=["scale", "two-nodes"])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "terramask_large_scene"))
    parser.add_argument("--size", type=int, default=2816, help="scene side in pixels (2816: 3 x 3 tiles)")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--port", type=int, default=6391)
    parser.add_argument("--extra", default="", help="further options for terramask auto, space-separated")
    args = parser.parse_args(argv)
    from scene_memory import build_scene

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = build_scene(work / f"naip_mosaic_{args.size}.tif", args.size)
    ckpt = checkpoint(work)
    env = {**os.environ, "TERRAMASK_CACHE": str(work / "cache"), "RAY_DISABLE_IMPORT_WARNING": "1"}
    (scale if args.what == "scale" else two_nodes)(args, work, scene, ckpt, env)


if __name__ == "__main__":
    main()
