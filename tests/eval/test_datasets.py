"""Dataset folders: pairing, instances, sampling and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terramask.core.errors import DatasetError, InputError
from terramask.eval.datasets import SegmentationDataset, find_pairs, select_evenly


def write_set(root: Path, items: dict, instances: dict | None = None, image_ext: str = ".png") -> Path:
    """``items``: stem -> class mask (H, W) uint8; images are grey gradients of the same size."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, mask in items.items():
        h, w = mask.shape
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
        Image.fromarray(img).save(root / "images" / f"{stem}{image_ext}")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")
    if instances is not None:
        (root / "masks_instance").mkdir()
        for stem, inst in instances.items():
            Image.fromarray(inst.astype(np.uint16)).save(root / "masks_instance" / f"{stem}.png")
    return root


def two_blobs() -> np.ndarray:
    m = np.zeros((40, 50), np.uint8)
    m[2:12, 2:12] = 1  # 100 px
    m[20:30, 30:45] = 1  # 150 px
    m[35:37, 0:2] = 1  # 4 px: below the default min area
    m[0:5, 45:50] = 255  # ignored
    return m


def test_pairs_and_connected_components(tmp_path):
    root = write_set(tmp_path / "ds", {"a": two_blobs(), "b": np.zeros((40, 50), np.uint8)})
    ds = SegmentationDataset(root)
    assert len(ds) == 2 and [p.stem for p in ds.pairs] == ["a", "b"]
    samples = list(ds)
    a, b = samples
    assert a.image.shape == (40, 50, 3) and a.image.dtype == np.uint8
    assert a.n_total == 3 and a.n_small == 1 and a.n_instances == 2
    assert sorted(int(a.instance_mask(i).sum()) for i in range(2)) == [100, 150]
    assert a.ignore.sum() == 25 and not (a.target & a.ignore).any()
    assert b.n_instances == 0
    d = ds.describe()
    assert d["instance_source"].startswith("connected components") and d["target_class"] == 1


def test_target_class_selects_other_labels(tmp_path):
    m = two_blobs()
    m[20:30, 30:45] = 3
    ds = SegmentationDataset(write_set(tmp_path / "ds", {"a": m}), target_class=3)
    s = next(iter(ds))
    assert s.n_instances == 1 and s.instance_mask(0).sum() == 150
    with pytest.raises(InputError, match="ignore label"):
        SegmentationDataset(tmp_path / "ds", target_class=255)


def test_instance_masks_win_over_components(tmp_path):
    m = np.zeros((30, 30), np.uint8)
    m[0:10, 0:20] = 1  # one connected block ...
    inst = np.zeros((30, 30), np.uint16)
    inst[0:10, 0:10] = 7  # ... made of two labelled objects
    inst[0:10, 10:20] = 900
    inst[20:25, 20:25] = 5  # an instance on class-0 pixels: not the target class
    root = write_set(tmp_path / "ds", {"a": m}, {"a": inst})
    s = next(iter(SegmentationDataset(root)))
    assert s.n_instances == 2
    assert s.instance_ids.tolist() == [7, 900]
    assert s.instance_mask(1).sum() == 100 and s.instance_mask(1)[0, 15]


def test_sampling_is_deterministic_and_limit_even(tmp_path):
    m = np.zeros((40, 40), np.uint8)
    for k in range(8):
        m[(k // 4) * 20 + 2 : (k // 4) * 20 + 8, (k % 4) * 10 + 2 : (k % 4) * 10 + 8] = 1
    root = write_set(tmp_path / "ds", {f"s{i}": m for i in range(5)})
    one = [s.instance_ids.tolist() for s in SegmentationDataset(root, instances_per_image=3, seed=1)]
    two = [s.instance_ids.tolist() for s in SegmentationDataset(root, instances_per_image=3, seed=1)]
    assert one == two and all(len(x) == 3 for x in one)
    assert len({tuple(x) for x in one}) > 1  # stems seed the choice: not the same objects everywhere
    assert [p.stem for p in SegmentationDataset(root, limit=3).pairs] == ["s0", "s2", "s4"]
    assert select_evenly(10, None) == list(range(10))
    assert select_evenly(10, 2) == [0, 9]


def test_missing_pairs_are_named(tmp_path):
    root = write_set(tmp_path / "ds", {"a": two_blobs(), "b": two_blobs()})
    (root / "masks" / "b.png").unlink()
    with pytest.raises(DatasetError, match="images without a mask.*b"):
        find_pairs(root)
    root2 = write_set(tmp_path / "ds2", {"a": two_blobs()})
    Image.fromarray(two_blobs()).save(root2 / "masks" / "zzz.png")
    with pytest.raises(DatasetError, match="masks without an image.*zzz"):
        find_pairs(root2)


def test_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="masks/"):
        find_pairs(tmp_path / "empty")
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        find_pairs(tmp_path / "empty")
    root = write_set(tmp_path / "dup", {"a": two_blobs()})
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "images" / "a.jpg")
    with pytest.raises(DatasetError, match="share the stem"):
        find_pairs(root)


def test_size_mismatch_is_an_error(tmp_path):
    root = write_set(tmp_path / "ds", {"a": two_blobs()})
    Image.fromarray(np.zeros((41, 50), np.uint8)).save(root / "masks" / "a.png")
    ds = SegmentationDataset(root)
    with pytest.raises(DatasetError, match="sizes differ.*50x40.*50x41"):
        ds.check_sizes()
    with pytest.raises(DatasetError, match="sizes differ"):
        next(iter(ds))


def test_missing_instance_mask_and_bad_mask(tmp_path):
    inst = np.zeros((40, 50), np.uint16)
    root = write_set(tmp_path / "ds", {"a": two_blobs(), "b": two_blobs()}, {"a": inst})
    with pytest.raises(DatasetError, match="instance mask.*b"):
        find_pairs(root)
    root2 = write_set(tmp_path / "ds2", {"a": two_blobs()})
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root2 / "masks" / "a.png")
    with pytest.raises(DatasetError, match="single-band"):
        next(iter(SegmentationDataset(root2)))


def test_geotiff_without_an_injected_reader_says_which_reader(rs_data):
    """The eval layer does not import io: GeoTIFFs need the reader the pipelines inject."""
    ds = SegmentationDataset(rs_data / "spacenet_atlanta_buildings", limit=1, min_area=1)
    with pytest.raises(DatasetError, match="atlanta_r0_c0.tif: GeoTIFF images need a GeoTIFF reader"):
        next(iter(ds))


def test_16bit_png_images_are_stretched(tmp_path):
    from terramask.eval.datasets import read_rgb8

    arr = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 20 + 1000).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "pan.png")
    rgb = read_rgb8(tmp_path / "pan.png")
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255  # 2-98 % stretch, not a cast
    assert (rgb[..., 0] == rgb[..., 2]).all()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png"):
        read_rgb8(tmp_path / "bad.png")
