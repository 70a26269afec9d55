from __future__ import annotations

import pytest

from helpers.scenes import blob_scene, write_geotiff


@pytest.fixture()
def blob_tif(tmp_path):
    return write_geotiff(tmp_path / "blob.tif", blob_scene(), nodata=0)
