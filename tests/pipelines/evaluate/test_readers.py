"""The image reader that pipelines inject into evaluation datasets (GeoTIFFs via io)."""

from __future__ import annotations

import numpy as np

from terramask.eval.datasets import SegmentationDataset
from terramask.pipelines.evaluate.readers import read_image


def test_real_geotiff_set_reads_16bit_pan(rs_data):
    ds = SegmentationDataset(rs_data / "spacenet_atlanta_buildings", limit=1, min_area=1, read_image=read_image)
    s = next(iter(ds))
    assert s.image.shape == (300, 300, 3) and s.image.dtype == np.uint8
    assert s.image.std() > 10  # stretched, not a black 16-bit->8-bit cast
    assert s.n_instances == s.n_total == 7  # index.csv: 7 buildings in atlanta_r0_c0


def test_png_goes_through_pillow(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
