"""The weight-free classic backend: prompted GrabCut / random walker, corrective clicks,
low-res logits round trip, automatic regions, errors — on generated scenes with known
objects and one real aerial image."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from terramask.core.errors import InputError, ModelError, PromptError
from terramask.core.image import GeoImage
from terramask.core.prompts import Prompts
from terramask.models.base import Backend, Embedding, Generator
from terramask.models.classic.backend import ClassicBackend

METHODS = ["grabcut", "random_walker"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def textured_background(rows: int, cols: int, seed: int) -> np.ndarray:
    """Smooth colour blotches plus pixel noise around a greenish grey, float (rows, cols, 3)."""
    import cv2

    rng = np.random.default_rng(seed)
    blotches = cv2.resize(rng.normal(0, 1, (rows // 8 + 1, cols // 8 + 1, 3)).astype(np.float32), (cols, rows))
    return np.array([110, 120, 100], np.float32) + 22 * blotches + rng.normal(0, 7, (rows, cols, 3))


@pytest.fixture(scope="module")
def shapes_scene():
    """320x320 textured scene with a red disk (centre (100, 110), r 50) and a blue
    rectangle (cols 190-290, rows 200-280), both with pixel noise."""
    rows = cols = 320
    img = textured_background(rows, cols, seed=1)
    yy, xx = np.mgrid[:rows, :cols]
    disk = (yy - 110) ** 2 + (xx - 100) ** 2 < 50**2
    rect = np.zeros((rows, cols), bool)
    rect[200:280, 190:290] = True
    rng = np.random.default_rng(2)
    img[disk] = np.array([200, 80, 70]) + rng.normal(0, 7, (disk.sum(), 3))
    img[rect] = np.array([60, 80, 190]) + rng.normal(0, 7, (rect.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8), disk, rect


@pytest.fixture(scope="module")
def twin_scene():
    """Two touching rectangles of similar orange (A: cols 60-140, B: cols 140-220, rows
    80-180) on a textured ground: a box around both takes both; a background click in B
    must remove B."""
    rows, cols = 260, 280
    img = textured_background(rows, cols, seed=3)
    a = np.zeros((rows, cols), bool)
    b = np.zeros((rows, cols), bool)
    a[80:180, 60:140] = True
    b[80:180, 140:220] = True
    rng = np.random.default_rng(4)
    img[a] = np.array([215, 140, 60]) + rng.normal(0, 6, (a.sum(), 3))
    img[b] = np.array([190, 150, 90]) + rng.normal(0, 6, (b.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8), a, b


@pytest.fixture(scope="module", params=METHODS)
def backend(request):
    return ClassicBackend(request.param)


@pytest.fixture(scope="module")
def shapes_embedding(backend, shapes_scene):
    return backend.set_image(shapes_scene[0])


def test_backend_follows_the_protocols():
    b = ClassicBackend()
    assert isinstance(b, Backend) and isinstance(b, Generator)
    assert b.name == "classic" and b.method == "grabcut"
    assert ClassicBackend("random_walker", name="classic-rw").name == "classic-rw"


def test_set_image_precomputes_features_on_the_image_grid(shapes_scene):
    emb = ClassicBackend().set_image(shapes_scene[0])
    assert isinstance(emb, Embedding)
    assert emb.image_size == emb.input_size == (320, 320)
    assert emb.features.lab.shape == (320, 320, 3) and emb.features.lab.dtype == np.float32
    assert emb.features.grad.shape == (320, 320) and emb.features.valid.all()


@pytest.mark.parametrize("which", ["disk", "rect"])
def test_one_object_click_finds_the_object(backend, shapes_embedding, shapes_scene, which):
    img, disk, rect = shapes_scene
    gt, point = (disk, (100, 110)) if which == "disk" else (rect, (240, 240))
    result = backend.predict(shapes_embedding, Prompts(points=[point], labels=[1]))
    assert 1 <= len(result) <= 3
    assert result.masks.shape[1:] == img.shape[:2]
    assert np.all(np.diff(result.scores) <= 0), "candidates are sorted by score"
    assert np.all((result.scores >= 0) & (result.scores <= 1))
    assert iou(result.masks[0], gt) >= 0.9
    single = backend.predict(shapes_embedding, Prompts(points=[point], labels=[1]), multimask=False)
    assert len(single) == 1 and iou(single.masks[0], gt) >= 0.9


@pytest.mark.parametrize("which", ["disk", "rect"])
def test_a_box_finds_the_object(backend, shapes_embedding, shapes_scene, which):
    _, disk, rect = shapes_scene
    gt, box = (disk, [48, 58, 152, 162]) if which == "disk" else (rect, [188, 198, 292, 282])
    result = backend.predict(shapes_embedding, Prompts(boxes=[box]), multimask=False)
    assert len(result) == 1
    assert iou(result.masks[0], gt) >= 0.9
    # the result's box (xyxy, end-inclusive like the reference) sits on the object
    assert np.allclose(result.boxes[0], [box[0] + 2, box[1] + 2, box[2] - 3, box[3] - 3], atol=3)


def test_several_boxes_give_one_mask_per_box_in_order(backend, shapes_embedding, shapes_scene):
    _, disk, rect = shapes_scene
    result = backend.predict(shapes_embedding, Prompts(boxes=[[188, 198, 292, 282], [48, 58, 152, 162]]))
    assert len(result) == 2
    assert iou(result.masks[0], rect) >= 0.9
    assert iou(result.masks[1], disk) >= 0.9
    assert result["low_res_logits"].shape == (2, 256, 256)


def test_refining_with_the_prior_mask_keeps_a_good_result(backend, shapes_embedding, shapes_scene):
    _, disk, _ = shapes_scene
    first = backend.predict(shapes_embedding, Prompts(points=[(100, 110)], labels=[1]))
    prompts = Prompts(points=[(100, 110)], labels=[1]).refine([(80, 100)], [1], mask_logits=first["low_res_logits"][0])
    again = backend.predict(shapes_embedding, prompts, multimask=False)
    assert iou(again.masks[0], disk) >= 0.9
    assert iou(again.masks[0], first.masks[0]) >= 0.95


def test_a_background_click_removes_the_wrongly_included_region(twin_scene):
    img, a, b = twin_scene
    for method in METHODS:
        backend = ClassicBackend(method)
        emb = backend.set_image(img)
        first = backend.predict(emb, Prompts(boxes=[[56, 76, 224, 184]]), multimask=False)
        assert (first.masks[0] & b).sum() > 0.5 * b.sum(), f"{method}: the box should take both rectangles first"
        prompts = Prompts(points=[(180, 130)], labels=[0], boxes=[[56, 76, 224, 184]], mask_logits=first["low_res_logits"][0])
        second = backend.predict(emb, prompts, multimask=False)
        mask = second.masks[0]
        assert (mask & b).sum() < 0.1 * b.sum(), f"{method}: the clicked region stays"
        assert iou(mask, a) >= 0.85, f"{method}: the object itself was lost"


def test_an_object_click_adds_a_missed_region(backend, shapes_embedding, shapes_scene):
    _, disk, rect = shapes_scene
    first = backend.predict(shapes_embedding, Prompts(points=[(100, 110)], labels=[1]), multimask=False)
    assert iou(first.masks[0], disk) >= 0.9
    prompts = Prompts(points=[(100, 110)], labels=[1]).refine([(240, 240)], [1], mask_logits=first["low_res_logits"][0])
    both = backend.predict(shapes_embedding, prompts, multimask=False).masks[0]
    assert iou(both, disk | rect) >= 0.85


def test_click_simulation_converges_on_a_blob(backend, shapes_embedding, shapes_scene):
    """The standard protocol: first click at the deepest object point, then at the deepest
    point of the largest error, previous logits as prior; IoU >= 0.9 within 3 clicks."""
    import cv2

    _, disk, _ = shapes_scene
    pred = np.zeros_like(disk)
    points, labels, prior, ious = [], [], None, []
    for _ in range(3):
        fn, fp = disk & ~pred, pred & ~disk
        depth = [cv2.distanceTransform(np.pad(e, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1] for e in (fn, fp)]
        label = 1 if depth[0].max() >= depth[1].max() else 0
        y, x = np.unravel_index(np.argmax(depth[1 - label]), disk.shape)
        points.append((x, y))
        labels.append(label)
        result = backend.predict(shapes_embedding, Prompts(points=points, labels=labels, mask_logits=prior), multimask=not ious)
        pred = result.masks[0]
        prior = result["low_res_logits"][0]
        ious.append(iou(pred, disk))
        if ious[-1] >= 0.9:
            break
    assert ious[-1] >= 0.9, ious


@pytest.mark.parametrize("shape", [(200, 320), (320, 200), (300, 300)])
def test_low_res_logits_round_trip_in_sam_layout(shape):
    rows, cols = shape
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(100, 10, (rows, cols, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:rows, :cols]
    obj = (yy - rows / 2) ** 2 / 50**2 + (xx - cols / 2) ** 2 / 70**2 < 1
    img[obj] = 220
    backend = ClassicBackend()
    emb = backend.set_image(img)
    result = backend.predict(emb, Prompts(points=[(cols // 2, rows // 2)], labels=[1]))
    logits = result["low_res_logits"]
    assert logits.shape == (len(result), 256, 256) and logits.dtype == np.float32
    # the image covers the top-left h x w of the grid (longest side 256), padding is negative
    h, w = round(rows * 256 / max(shape)), round(cols * 256 / max(shape))
    assert (logits[:, h:, :] < 0).all() and (logits[:, :, w:] < 0).all()
    up = backend.upscale_logits(emb, logits)
    assert up.shape == (len(result), rows, cols)
    for k in range(len(result)):
        assert iou(up[k] > backend.mask_threshold, result.masks[k]) >= 0.97
    window = backend.upscale_logits(emb, logits[:1], window=(10, 20, 110, 70))
    assert window.shape == (1, 50, 100) and np.allclose(window[0], up[0, 20:70, 10:110])


def test_prompt_errors_are_clear(shapes_scene):
    backend = ClassicBackend()
    emb = backend.set_image(shapes_scene[0])
    with pytest.raises(PromptError, match="no prompt"):
        backend.predict(emb, Prompts())
    with pytest.raises(PromptError, match="text"):
        backend.predict(emb, Prompts(text="solar panels"))
    with pytest.raises(PromptError, match="object information"):
        backend.predict(emb, Prompts(points=[(10, 10)], labels=[0]))
    with pytest.raises(PromptError, match="outside"):
        backend.predict(emb, Prompts(points=[(400, 10)], labels=[1]))
    with pytest.raises(PromptError, match="outside"):
        backend.predict(emb, Prompts(boxes=[[400, 400, 500, 500]]))
    with pytest.raises(PromptError, match="frame"):
        backend.predict(emb, Prompts(points=[(10, 10)], labels=[1], frame="lonlat"))
    with pytest.raises(InputError, match="unknown classic method"):
        ClassicBackend("snakes")
    with pytest.raises(InputError, match="unknown classic option"):
        ClassicBackend(iterationz=3)
    foreign = Embedding(model="sam-vit-b", features=np.zeros((1, 256, 64, 64)), image_size=(320, 320), input_size=(1024, 1024))
    with pytest.raises(ModelError, match="sam-vit-b"):
        backend.predict(foreign, Prompts(points=[(10, 10)], labels=[1]))
    with pytest.raises(InputError):
        backend.set_image(np.zeros((0, 5, 3), np.uint8))


def test_geoimage_nodata_is_never_object_and_georeference_is_kept():
    px = np.full((3, 120, 160), 40, np.uint16)
    px[:, 40:90, 60:120] = 900
    px[:, :, :20] = 0  # nodata strip
    transform = Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)
    image = GeoImage(px, transform=transform, crs="EPSG:32633", nodata=0)
    backend = ClassicBackend()
    emb = backend.set_image(image)
    result = backend.predict(emb, Prompts(points=[(90, 65)], labels=[1]), multimask=False)
    obj = np.zeros((120, 160), bool)
    obj[40:90, 60:120] = True
    assert iou(result.masks[0], obj) >= 0.9
    assert result.crs == "EPSG:32633" and result.transform == transform
    with pytest.raises(PromptError, match="nodata"):
        backend.predict(emb, Prompts(points=[(5, 65)], labels=[1]))
    regions = backend.generate(image)
    assert not regions.masks[:, :, :20].any()
    assert regions.crs == "EPSG:32633"


# -- automatic generation ----------------------------------------------------------------
@pytest.fixture(scope="module")
def blobs_scene():
    """256x256 flat-ish ground with 4 blobs of distinct colours and sizes."""
    rng = np.random.default_rng(5)
    rows = cols = 256
    img = np.array([120, 125, 110], np.float32) + rng.normal(0, 4, (rows, cols, 3))
    yy, xx = np.mgrid[:rows, :cols]
    blobs = [
        (yy - 60) ** 2 + (xx - 60) ** 2 < 35**2,
        (yy - 70) ** 2 / 20**2 + (xx - 180) ** 2 / 45**2 < 1,
        np.zeros((rows, cols), bool),
        (yy - 200) ** 2 + (xx - 200) ** 2 < 25**2,
    ]
    blobs[2][150:230, 30:110] = True
    for blob, colour in zip(blobs, [(210, 60, 50), (50, 70, 200), (230, 220, 80), (40, 150, 60)]):
        img[blob] = np.array(colour) + rng.normal(0, 4, (blob.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8), blobs


@pytest.mark.parametrize("superpixels", ["watershed", "slic"])
def test_generate_finds_the_distinct_blobs(blobs_scene, superpixels):
    img, blobs = blobs_scene
    result = ClassicBackend().generate(img, superpixels=superpixels)
    rows, cols = img.shape[:2]
    assert result.masks.shape[1:] == (rows, cols)
    for blob in blobs:
        assert max(iou(m, blob) for m in result.masks) >= 0.9
    # regions partition the image: disjoint, covering every (valid) pixel
    assert result.masks.sum(axis=0).max() == 1 and result.masks.any(axis=0).all()
    assert np.all(np.diff(result.areas) <= 0), "largest first"
    assert result.areas.min() >= max(32, rows * cols // 10000)
    for name in ("stability_score", "point_coords", "crop_box"):
        assert name in result
    stab = result["stability_score"]
    assert stab.shape == (len(result),) and np.all((stab > 0) & (stab <= 1))
    assert np.all((result.scores > 0) & (result.scores <= 1))
    pts = result["point_coords"]
    assert pts.shape == (len(result), 2)
    for m, (x, y) in zip(result.masks, pts.astype(int)):
        assert m[y, x], "the representative point lies inside its region"
    assert np.array_equal(result["crop_box"], np.tile([0, 0, cols, rows], (len(result), 1)))
    # the blobs are homogeneous and stable regions
    best = [int(np.argmax([iou(m, blob) for m in result.masks])) for blob in blobs]
    assert np.all(stab[best] >= 0.9) and np.all(result.scores[best] >= 0.5)


def test_generate_bounds_the_number_of_masks_and_checks_parameters(blobs_scene):
    img, _ = blobs_scene
    backend = ClassicBackend()
    assert len(backend.generate(img, max_regions=3)) <= 3
    # the memory cap: at most max_mask_bytes / (H * W) dense masks
    assert len(backend.generate(img, max_mask_bytes=2 * img.shape[0] * img.shape[1])) <= 2
    emb = backend.set_image(img)
    assert len(backend.generate(emb, min_area=2000)) < len(backend.generate(emb, min_area=50))
    with pytest.raises(InputError, match="unknown generate parameter"):
        backend.generate(img, points_per_side=32)
    with pytest.raises(InputError, match="superpixels"):
        backend.generate(img, superpixels="quickshift")
    with pytest.raises(InputError, match="merge_thresh"):
        backend.generate(img, merge_thresh=-1)


@pytest.mark.slow
def test_felzenszwalb_and_colour_criterion_also_work(blobs_scene):
    img, blobs = blobs_scene
    for kwargs in ({"superpixels": "felzenszwalb"}, {"criterion": "colour"}):
        result = ClassicBackend().generate(img, **kwargs)
        for blob in blobs:
            assert max(iou(m, blob) for m in result.masks) >= 0.85, kwargs


# -- real data -------------------------------------------------------------------------------
def test_real_solar_panels_box_prompt_and_clicks(rs_data):
    """A real GSI aerial tile (20 cm): a box around the largest solar-panel array gives a
    usable mask with both methods, and corrective clicks do not make it worse."""
    import cv2
    from PIL import Image

    img = np.asarray(Image.open(rs_data / "gsi_solar" / "images" / "397.png").convert("RGB"))
    label = np.asarray(Image.open(rs_data / "gsi_solar" / "masks" / "397.png")) == 1
    n, comp, stats, _ = cv2.connectedComponentsWithStats(label.astype(np.uint8), connectivity=8)
    gt = comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(gt)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    for method in METHODS:
        backend = ClassicBackend(method)
        emb = backend.set_image(img)
        first = backend.predict(emb, Prompts(boxes=[box]), multimask=False)
        first_iou = iou(first.masks[0], gt)
        assert first_iou >= 0.5, (method, first_iou)
        err = first.masks[0] ^ gt
        depth = cv2.distanceTransform(np.pad(err, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(np.argmax(depth), gt.shape)
        prompts = Prompts(points=[(x, y)], labels=[int(gt[y, x])], boxes=[box], mask_logits=first["low_res_logits"][0])
        second = backend.predict(emb, prompts, multimask=False)
        assert iou(second.masks[0], gt) >= first_iou - 0.02, method
