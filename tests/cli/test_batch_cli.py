"""``terramask batch``: outputs, a bad file in the batch, and resuming after ``kill -9``
of a real process with exactly the outputs of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

ARGS = ["--model", "classic", "--tile-size", "192", "--overlap", "32", "-q"]


@pytest.fixture()
def scenes(rs_data, tmp_path):
    """Six real 300 x 300 16-bit GeoTIFFs (SpaceNet Atlanta tiles)."""
    src = rs_data / "spacenet_atlanta_buildings" / "images"
    folder = tmp_path / "scenes"
    folder.mkdir()
    for path in sorted(src.glob("atlanta_r*_c*.tif"))[:6]:
        shutil.copy(path, folder / path.name)
    return folder


def test_batch_command_reports_a_bad_file(run_cli, scenes, tmp_path):
    for extra in sorted(scenes.iterdir())[2:]:
        extra.unlink()
    (scenes / "zz_corrupt.tif").write_bytes(os.urandom(4096))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("batch", scenes, "--out", out, *ARGS)
    assert code == 1
    assert "3 scene(s): 2 done, 1 failed" in stdout
    assert "zz_corrupt.tif" in stderr and "failed" in stderr
    rows = list(csv.DictReader(open(out / "index.csv", newline="")))
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert (out / "gallery.png").is_file()
    with rasterio.open(out / rows[0]["name"] / "labels.tif") as ds:
        assert ds.crs.to_epsg() == 32616


def test_batch_param_parsing(run_cli, scenes, tmp_path):
    code, _, stderr = run_cli("batch", scenes, "--out", tmp_path / "o", "--param", "nonsense", *ARGS)
    assert code == 2 and "KEY=VALUE" in stderr
    code, _, stderr = run_cli("batch", scenes, "--out", tmp_path / "o", "--param", "bogus=1", *ARGS)
    assert code == 2 and "bogus" in stderr


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "terramask.cli.main", "batch", *map(str, args)]


def _done_lines(journal: Path) -> int:
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_bytes().split(b"\n") if b'"status": "done"' in line)


def _comparable(out: Path) -> dict:
    """Everything a user gets, minus wall-clock timings."""
    rows = list(csv.DictReader(open(out / "index.csv", newline="")))
    for r in rows:
        r.pop("seconds")
    index = json.loads((out / "index.json").read_text())
    for r in index["images"]:
        r.pop("seconds")
    scenes = {}
    for r in rows:
        d = out / r["name"]
        with rasterio.open(d / "labels.tif") as ds:
            labels = ds.read(1)
        meta, _, geoms, cols = pyogrio.raw.read(d / "objects.gpkg")
        summary = json.loads((d / "summary.json").read_text())
        for key in ("timings_s", "throughput", "peak_rss_mb"):
            summary.pop(key)
        scenes[r["name"]] = {
            "labels": labels.tobytes(),
            "fields": list(meta["fields"]),
            "columns": [np.asarray(c).tolist() for c in cols],
            "geoms": [bytes(g) for g in geoms],
            "overlay": (d / "overlay.png").read_bytes(),
            "masks": (d / "masks.json").read_bytes(),
            "summary": summary,
        }
    return {"rows": rows, "index": index, "gallery": (out / "gallery.png").read_bytes(), "scenes": scenes}


@pytest.mark.slow
def test_kill_9_and_resume_gives_the_uninterrupted_outputs(scenes, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli(scenes, "--out", ref, *ARGS), env=env, check=True, capture_output=True, timeout=600)

    out = tmp_path / "out"
    journal = out / "journal.jsonl"
    proc = subprocess.Popen(_cli(scenes, "--out", out, *ARGS), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while _done_lines(journal) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    first = [json.loads(line) for line in journal.read_text().splitlines()]
    assert 2 <= len(first) < 6
    assert not (out / "index.csv").exists()

    done = subprocess.run(_cli(scenes, "--out", out, *ARGS), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"({len(first)} already done)" in done.stdout
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys)) == 6, "a finished scene was computed again"
    assert entries[: len(first)] == first
    assert len({e["run"] for e in entries}) == 2
    assert not list(out.rglob(".*tmp-*")), "temporaries of the killed run were left behind"
    assert _comparable(out) == _comparable(ref)


def test_batch_takes_the_generation_options_of_auto(run_cli, blob_tif, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("batch", blob_tif, "--out", out, "--model", "classic", "--preset", "quick",
                                   "--points-per-side", "8", "--output-mode", "uncompressed_rle", "-q")
    assert code == 0, stderr
    index = json.loads((out / "index.json").read_text())
    params = index["settings"]["segmenter"]["params"]
    assert params["points_per_side"] == 8 and index["settings"]["preset"] == "quick"
    assert index["settings"]["output_mode"] == "uncompressed_rle"
    recs = json.loads((out / "blob" / "masks.json").read_text())
    assert recs and isinstance(recs[0]["segmentation"]["counts"], list)
    summary = json.loads((out / "blob" / "summary.json").read_text())
    assert summary["preset"] == "quick" and summary["parameters"]["points_per_side"] == 8
    # classic options through --param cannot be mixed with the generation options
    code, _, stderr = run_cli("batch", blob_tif, "--out", tmp_path / "o2", "--model", "classic",
                              "--points-per-side", "8", "--param", "superpixels=slic", "-q")
    assert code == 2 and "cannot be combined" in stderr
