"""The eval layer is numpy-level: importing it loads no torch, rasterio or CLI/web code."""

import subprocess
import sys


def test_eval_imports_no_heavy_packages():
    code = (
        "import sys, terramask.eval.metrics, terramask.eval.boundary, terramask.eval.streaming,"
        " terramask.eval.clicks, terramask.eval.datasets;"
        "heavy = [m for m in ('torch', 'rasterio', 'fastapi', 'click', 'segment_anything', 'matplotlib')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
