"""Mask, candidate and label rasters re-read with rasterio: grid, dtype, values, layout."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from terramask.core.errors import InputError, OutputError
from terramask.core.geometry import Window
from terramask.core.maskset import MaskSet
from terramask.core.rle import mask_to_coco_rle
from terramask.io.mask_rasters import MASK_NODATA, WindowMaskWriter, write_candidates, write_mask
from terramask.io.rasters import LabelRasterWriter, labels_from_maskset, labels_from_records, write_labels

UTM = "EPSG:32618"
T = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)


def _blob(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape) > 0.6


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def test_write_mask_grid_dtype_values_and_layout(tmp_path):
    mask = _blob((300, 520))
    path = write_mask(tmp_path / "mask.tif", mask, T, UTM)
    with rasterio.open(path) as src:
        assert src.crs == CRS.from_epsg(32618)
        assert src.transform == T
        assert (src.count, src.dtypes[0], src.shape) == (1, "uint8", (300, 520))
        assert src.block_shapes == [(256, 256)]
        assert src.profile["tiled"] is True
        assert src.compression.name.lower() == "deflate"
        assert src.nodata is None
        np.testing.assert_array_equal(src.read(1), mask.astype(np.uint8))
    assert _files(tmp_path) == ["mask.tif"]


def test_write_mask_marks_nodata(tmp_path):
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    nodata = np.zeros_like(mask)
    nodata[:, :3] = True
    with rasterio.open(write_mask(tmp_path / "m.tif", mask, T, UTM, nodata_mask=nodata)) as src:
        data = src.read(1)
        assert src.nodata == MASK_NODATA
    assert (data[:, :3] == MASK_NODATA).all()
    assert data[6, 6] == 1 and data[0, 10] == 0


def test_write_mask_with_wkt_crs_and_without_crs(tmp_path):
    wkt = CRS.from_epsg(3857).to_wkt()
    with rasterio.open(write_mask(tmp_path / "a.tif", np.ones((8, 8), bool), T, wkt)) as src:
        assert src.crs == CRS.from_epsg(3857)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_mask(tmp_path / "b.tif", np.ones((8, 8), np.uint8), None, None)
    with rasterio.open(path) as src:
        assert src.crs is None


@pytest.mark.parametrize(
    "mask, message",
    [(np.ones((2, 3, 4), bool), "must be \\(H, W\\)"), (np.full((4, 4), 2, np.uint8), "0/1")],
)
def test_write_mask_rejects_bad_input(tmp_path, mask, message):
    with pytest.raises(InputError, match=message):
        write_mask(tmp_path / "m.tif", mask, T, UTM)
    assert _files(tmp_path) == []


def test_write_mask_bad_crs(tmp_path):
    with pytest.raises(InputError, match="invalid CRS"):
        write_mask(tmp_path / "m.tif", np.ones((4, 4), bool), T, "EPSG:not-a-code")


def test_write_candidates_bands_and_scores(tmp_path):
    masks = np.stack([_blob((40, 60), s) for s in range(3)])
    scores = [0.98, 0.87654, 0.5]
    path = write_candidates(tmp_path / "candidates.tif", masks, scores, T, UTM)
    with rasterio.open(path) as src:
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.crs == CRS.from_epsg(32618) and src.transform == T
        assert src.descriptions == ("candidate 1 score=0.9800", "candidate 2 score=0.8765", "candidate 3 score=0.5000")
        assert [float(src.tags(k)["score"]) for k in (1, 2, 3)] == scores
        np.testing.assert_array_equal(src.read(), masks.astype(np.uint8))


def test_write_candidates_score_count_must_match(tmp_path):
    with pytest.raises(InputError, match="3 candidate masks but 2 scores"):
        write_candidates(tmp_path / "c.tif", np.zeros((3, 4, 4), bool), [0.1, 0.2], T, UTM)


def test_window_mask_writer_zero_outside_windows_and_union_where_they_overlap(tmp_path):
    """Only the written windows hold data; elsewhere 0 (not nodata), though 255 is the nodata."""
    a = np.zeros((2, 300, 300), bool)
    a[0, 10:20, 10:20] = True
    b = np.zeros((2, 300, 300), bool)
    b[0, 0:5, 0:5] = True
    b[1, 50:60, 50:60] = True
    nodata = np.zeros((300, 300), bool)
    nodata[:, :2] = True
    path = tmp_path / "m.tif"
    with WindowMaskWriter(path, 2000, 1500, 2, T, UTM, nodata=True, descriptions=["a", "b"]) as w:
        w.write_window(Window(500, 400, 300, 300), a, nodata)
        w.write_window(Window(510, 410, 300, 300), b)
        assert not path.exists(), "nothing under the final name before the file is complete"
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count, src.transform, src.nodata) == (2000, 1500, 2, T, MASK_NODATA)
        assert src.descriptions == ("a", "b")
        data = src.read()
    expected = np.zeros((2, 1500, 2000), np.uint8)
    expected[0, 410:420, 510:520] = 1  # a's square
    expected[0, 410:415, 510:515] = 1  # b's square, on top of a's: union
    expected[1, 460:470, 560:570] = 1
    expected[:, 400:700, 500:502] = MASK_NODATA
    np.testing.assert_array_equal(data, expected)
    assert _files(tmp_path) == ["m.tif"]


def test_window_mask_writer_rejects_bad_windows_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="outside"):
        with WindowMaskWriter(tmp_path / "m.tif", 100, 100, 1, T, UTM) as w:
            w.write_window(Window(90, 0, 20, 20), np.zeros((1, 20, 20), bool))
    with pytest.raises(InputError, match="does not match"):
        with WindowMaskWriter(tmp_path / "m.tif", 100, 100, 2, T, UTM) as w:
            w.write_window(Window(0, 0, 20, 20), np.zeros((1, 20, 20), bool))
    assert _files(tmp_path) == []


def _expected_labels(h, w, windows):
    out = np.zeros((h, w), np.uint32)
    for win, data in windows:
        out[win.slices()] = data
    return out


def test_label_writer_produces_cog_with_overviews(tmp_path):
    h, w = 700, 900
    rng = np.random.default_rng(1)
    windows = []
    # Windows in arbitrary order, not aligned to tiles, with IDs beyond 16 bits.
    for col_off, row_off in [(500, 300), (0, 0), (300, 0), (0, 400), (640, 20)]:
        win = Window(col_off, row_off, min(300, w - col_off), min(300, h - row_off))
        data = rng.integers(70_000, 70_010, size=win.shape, dtype=np.uint32)
        data[::7] = 0
        windows.append((win, data))
    path = tmp_path / "labels.tif"
    with LabelRasterWriter(path, w, h, T, UTM) as writer:
        for win, data in windows:
            writer.write_window(win, data)
        assert not path.exists()
    expected = _expected_labels(h, w, windows)
    with rasterio.open(path) as src:
        assert src.crs == CRS.from_epsg(32618) and src.transform == T
        assert (src.dtypes[0], src.shape, src.nodata) == ("uint32", (h, w), 0)
        assert src.block_shapes == [(256, 256)] and src.profile["tiled"]
        assert src.compression.name.lower() == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), expected)
        # Nearest-neighbour overviews never invent IDs.
        small = src.read(1, out_shape=(h // 4, w // 4))
        assert set(np.unique(small)) <= set(np.unique(expected))
    assert _files(tmp_path) == ["labels.tif"]


def test_label_writer_exception_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with LabelRasterWriter(tmp_path / "labels.tif", 600, 600, T, UTM) as writer:
            writer.write_window(Window(0, 0, 10, 10), np.ones((10, 10), np.uint32))
            raise RuntimeError("tile failed")
    assert _files(tmp_path) == []


def test_label_writer_only_nonzero_keeps_neighbours(tmp_path):
    with LabelRasterWriter(tmp_path / "l.tif", 50, 40, T, UTM, cog=False) as writer:
        writer.write_window(Window(0, 0, 30, 40), np.full((40, 30), 5, np.uint32))
        overlap = np.zeros((40, 30), np.uint32)
        overlap[:, 20:] = 9
        writer.write_window(Window(20, 0, 30, 40), overlap, only_nonzero=True)
        back = writer.read_window(Window(0, 0, 50, 40))
    assert (back[:, :20] == 5).all()  # the neighbour's zeros did not erase ID 5
    assert (back[:, 20:30] == 5).all()
    assert (back[:, 40:] == 9).all()
    with rasterio.open(tmp_path / "l.tif") as src:
        np.testing.assert_array_equal(src.read(1), back)


def test_label_writer_rejects_bad_windows(tmp_path):
    with LabelRasterWriter(tmp_path / "l.tif", 50, 40, T, UTM) as writer:
        with pytest.raises(InputError, match="outside"):
            writer.write_window(Window(40, 0, 20, 10), np.zeros((10, 20), np.uint32))
        with pytest.raises(InputError, match="does not match window"):
            writer.write_window(Window(0, 0, 20, 10), np.zeros((20, 10), np.uint32))
        with pytest.raises(InputError, match="integers"):
            writer.write_window((0, 0, 2, 2), np.zeros((2, 2), np.float32))
        with pytest.raises(InputError, match="do not fit"):
            writer.write_window((0, 0, 2, 2), np.full((2, 2), -1, np.int64))


def test_label_writer_missing_directory(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        LabelRasterWriter(tmp_path / "no" / "l.tif", 10, 10, T, UTM).open()


def test_write_labels_round_trip(tmp_path):
    labels = np.arange(600 * 520, dtype=np.uint32).reshape(600, 520) % 100_003
    path = write_labels(tmp_path / "labels.tif", labels, T, UTM)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), labels)
        assert src.overviews(1) == [2, 4]


def test_labels_keep_the_smaller_object_visible():
    big = np.zeros((30, 30), bool)
    big[0:20, 0:20] = True
    small = np.zeros_like(big)
    small[5:10, 5:10] = True
    other = np.zeros_like(big)
    other[25:28, 25:28] = True
    # The small one comes first: painting must not follow input order.
    labels = labels_from_maskset(MaskSet(np.stack([small, big, other])))
    assert labels.dtype == np.uint32
    assert labels[7, 7] == 1
    assert labels[15, 15] == 2
    assert labels[26, 26] == 3
    assert labels[29, 0] == 0
    with_ids = labels_from_maskset(np.stack([small, big, other]), ids=[10, 20, 4_000_000_000])
    assert (with_ids[7, 7], with_ids[15, 15], with_ids[26, 26]) == (10, 20, 4_000_000_000)


def test_labels_reject_bad_ids():
    masks = np.ones((2, 3, 3), bool)
    with pytest.raises(InputError, match="0 means no object"):
        labels_from_maskset(masks, ids=[0, 1])
    with pytest.raises(InputError, match="got 1 ids for 2 masks"):
        labels_from_maskset(masks, ids=[1])


def test_labels_from_records_matches_maskset():
    masks = np.stack([_blob((25, 35), s) for s in range(4)])
    masks[3] = False
    records = [{"segmentation": mask_to_coco_rle(m)} for m in masks[:2]] + [{"segmentation": m} for m in masks[2:]]
    np.testing.assert_array_equal(labels_from_records(records, (25, 35)), labels_from_maskset(masks))


def test_labels_from_real_instances_survive_cog_round_trip(rs_data, tmp_path):
    """Real SpaceNet building instances (EPSG:32616): labels.tif keeps IDs and georeference."""
    src_path = rs_data / "spacenet_atlanta_buildings" / "full" / "sample_geotiff_buildings_instances.tif"
    with rasterio.open(src_path) as src:
        inst, transform, crs = src.read(1), src.transform, src.crs
    ids = np.unique(inst)
    ids = ids[ids > 0]
    masks = inst[None] == ids[:, None, None]
    labels = labels_from_maskset(MaskSet(masks, transform=transform, crs=crs.to_string()), ids=ids)
    np.testing.assert_array_equal(labels, inst)  # disjoint instances: identity
    with rasterio.open(write_labels(tmp_path / "labels.tif", labels, transform, crs.to_string())) as out:
        assert out.crs == crs and out.transform == transform
        np.testing.assert_array_equal(out.read(1), inst)
        assert out.overviews(1)


_MEMORY_SCRIPT = """
import sys
import numpy as np
from affine import Affine
from terramask.core.geometry import Window
from terramask.io.rasters import LabelRasterWriter
n, step = 10_000, 1024
with LabelRasterWriter(sys.argv[1], n, n, Affine(1, 0, 0, 0, -1, n), "EPSG:32618") as w:
    for y in range(0, n, step):
        for x in range(0, n, step):
            win = Window(x, y, min(step, n - x), min(step, n - y))
            data = np.zeros(win.shape, np.uint32)
            data[10:200, 10:300] = (y // step) * 1000 + x // step + 1
            w.write_window(win, data)
# VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a
# large pytest process would report the parent's size; VmHWM starts afresh with the new program.
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


@pytest.mark.slow
def test_label_writer_memory_does_not_grow_with_raster(tmp_path):
    """A 10,000 x 10,000 uint32 raster (400 MB in memory) written with a bounded peak RSS."""
    import subprocess
    import sys

    path = tmp_path / "big.tif"
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path)], capture_output=True, text=True,
                         check=True, timeout=120)
    peak_mb = int(out.stdout.strip()) / 1024
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB for a 400 MB raster"
    with rasterio.open(path) as src:
        assert src.shape == (10_000, 10_000) and src.overviews(1)
        assert src.read(1, window=((1034, 1036), (2058, 2060))).tolist() == [[1003, 1003], [1003, 1003]]
