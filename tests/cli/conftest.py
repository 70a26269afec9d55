from __future__ import annotations

import pytest

from helpers.scenes import blob_scene, write_geotiff


@pytest.fixture()
def blob_tif(tmp_path):
    return write_geotiff(tmp_path / "blob.tif", blob_scene(), nodata=0)


@pytest.fixture()
def run_cli(capsys):
    """Run ``terramask ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from terramask.cli.main import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
