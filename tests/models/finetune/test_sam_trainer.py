"""The SAM/MobileSAM trainer on tiny random-weight models: targets in the low-res frame,
the loss goes down, and the saved checkpoint is the official format (the official
predictor loads it and gives our backend's masks), adapters included."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.core.errors import InputError, ModelError
from terramask.core.prompts import Prompts
from terramask.models.finetune.trainable import PromptSample, Trainer, TrainItem
from terramask.models.resolve import load_backend, load_trainer


def _image():
    rng = np.random.default_rng(0)
    grey = rng.integers(20, 60, size=(48, 64))
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:45] = True
    grey[mask] += 150
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8), mask


def _items(backend, trainer):
    img, mask = _image()
    emb = backend.set_image(img)
    target = trainer.prepare_target(emb, mask)
    click = PromptSample(np.array([[32.0, 20.0]]), np.array([1]))
    box = PromptSample(np.zeros((0, 2)), np.zeros(0, np.int64), np.array([19.0, 9.0, 46.0, 31.0]))
    return img, [TrainItem(emb, target, click, img), TrainItem(emb, target, box, img)]


def test_target_is_the_mask_in_the_low_res_frame_with_padding_not_counted(tiny_sam_checkpoint):
    backend = load_backend(None, checkpoint=tiny_sam_checkpoint)
    trainer = load_trainer(backend)
    img, mask = _image()
    emb = backend.set_image(img)
    ignore = np.zeros_like(mask)
    ignore[:, :4] = True
    target = trainer.prepare_target(emb, mask, ignore)
    assert target.shape == (256, 256) and target.dtype == np.int8
    # 64 columns -> 1024 model pixels -> 256 low-res; 48 rows -> 768 -> 192 rows, the rest padding
    assert (target[192:] == -1).all() and (target[:192, 16:] >= 0).all()
    assert (target[:192, :16] == -1).all()  # the ignored 4 image columns
    ys, xs = np.nonzero(target == 1)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (40, 120, 80, 180)  # rows 10:30, cols 20:45 x4
    with pytest.raises(InputError, match="label grid"):
        trainer.prepare_target(emb, mask[:, :10])


@pytest.mark.slow
def test_loss_decreases_and_the_backend_predicts_with_the_new_weights(tiny_sam_checkpoint):
    backend = load_backend(None, checkpoint=tiny_sam_checkpoint, cache=True)
    trainer = load_trainer(backend, lr=1e-3)
    assert isinstance(trainer, Trainer) and trainer.family == "sam"
    img, items = _items(backend, trainer)
    emb = items[0].embedding
    before = backend.predict(emb, Prompts(points=np.array([[32.0, 20.0]]), labels=np.array([1])), multimask=False)
    losses = [trainer.train_step(items).loss for _ in range(8)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    after = backend.predict(emb, Prompts(points=np.array([[32.0, 20.0]]), labels=np.array([1])), multimask=False)
    assert not np.allclose(before["low_res_logits"], after["low_res_logits"])
    _, mask = _image()
    iou = (after.masks[0] & mask).sum() / (after.masks[0] | mask).sum()
    assert iou > 0.5


def _official_equals_ours(official_predictor, ours, img, tmp_path):
    prompts = [(np.array([[32.0, 20.0]]), np.array([1])), (np.array([[30.0, 15.0], [5.0, 5.0]]), np.array([1, 0]))]
    official_predictor.set_image(img)
    emb = ours.set_image(img)
    for coords, labels in prompts:
        masks, scores, low = official_predictor.predict(point_coords=coords, point_labels=labels, multimask_output=False)
        got = ours.predict(emb, Prompts(points=coords, labels=labels), multimask=False)
        np.testing.assert_allclose(got["low_res_logits"], low, atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(got.scores, scores, atol=1e-4)
        # masks: equal except where the logit is within float noise of the threshold
        near = np.abs(ours.upscale_logits(emb, low)[0]) < 1e-2
        assert ((got.masks[0] != masks[0]) & ~near).sum() == 0


@pytest.mark.slow
def test_checkpoint_loads_in_the_official_sam_predictor_with_our_masks(tiny_sam_checkpoint, tmp_path):
    from helpers.tiny_sam import official_predictor

    backend = load_backend(None, checkpoint=tiny_sam_checkpoint)
    trainer = load_trainer(backend, lr=1e-3)
    img, items = _items(backend, trainer)
    for _ in range(3):
        trainer.train_step(items)
    path = tmp_path / "model.pth"
    trainer.save_checkpoint(path)
    reloaded = load_backend(None, checkpoint=path)
    _official_equals_ours(official_predictor(path), reloaded, img, tmp_path)


@pytest.mark.slow
def test_lora_adapters_are_merged_into_the_official_tensor_names(tiny_sam_checkpoint, tmp_path):
    import torch

    from helpers.tiny_sam import official_predictor

    backend = load_backend(None, checkpoint=tiny_sam_checkpoint)
    trainer = load_trainer(backend, mode="decoder+lora", lr=1e-2)
    img, items = _items(backend, trainer)
    base = torch.load(tiny_sam_checkpoint, weights_only=True)
    for _ in range(2):
        assert trainer.train_step(items).finite
    path = tmp_path / "lora.pth"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == set(base)  # official names only, no adapter tensors
    qkv = "image_encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(saved[qkv], base[qkv])  # the adapters moved the encoder
    # the in-place (adapter) model and the merged checkpoint predict the same
    _official_equals_ours(official_predictor(path), trainer.backend, img, tmp_path)


@pytest.mark.slow
def test_mobilesam_checkpoint_loads_in_the_reference_predictor(tmp_path):
    from helpers.tiny_mobilesam import reference_predictor, write_mobilesam_checkpoint

    ckpt = write_mobilesam_checkpoint(tmp_path / "mobile_sam.pt")
    backend = load_backend("mobilesam", checkpoint=ckpt)
    trainer = load_trainer(backend, lr=1e-3)
    assert (trainer.family, trainer.arch) == ("mobilesam", "vit_t")
    img, items = _items(backend, trainer)
    steps = [trainer.train_step(items) for _ in range(2)]
    assert all(s.finite for s in steps)
    path = tmp_path / "ft.pt"
    trainer.save_checkpoint(path)
    _official_equals_ours(reference_predictor(path), load_backend("mobilesam", checkpoint=path), img, tmp_path)


def test_models_without_a_trainable_decoder_are_refused():
    with pytest.raises(ModelError, match="no trainable mask decoder"):
        load_trainer(load_backend("classic"))


def test_bad_training_settings(tiny_sam_checkpoint):
    backend = load_backend(None, checkpoint=tiny_sam_checkpoint)
    with pytest.raises(InputError, match="--train"):
        load_trainer(backend, mode="encoder")
    with pytest.raises(InputError, match="learning rate"):
        load_trainer(backend, lr=0.0)


def test_a_failed_checkpoint_write_leaves_no_file_under_the_final_name(tiny_sam_checkpoint, tmp_path, monkeypatch):
    import torch

    from terramask.core.errors import OutputError

    trainer = load_trainer(load_backend(None, checkpoint=tiny_sam_checkpoint))

    def full_disk(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        trainer.save_checkpoint(tmp_path / "model.pth")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sam2_decoder_checkpoint_loads_in_sam2_image_predictor_with_our_masks(tmp_path):
    import torch

    from helpers.tiny_sam2 import official_predictor, write_sam2_checkpoint

    ckpt = write_sam2_checkpoint(tmp_path / "sam2.pt")
    backend = load_backend("sam2.1-hiera-tiny", checkpoint=ckpt, cache=True)
    trainer = load_trainer(backend, lr=1e-3)
    assert trainer.family == "sam2"
    img, items = _items(backend, trainer)
    assert (items[0].target[:, :] >= 0).all()  # SAM 2 stretches the image: no padding
    losses = [trainer.train_step(items).loss for _ in range(4)]
    assert all(np.isfinite(losses)) and min(losses[1:]) < losses[0]
    path = tmp_path / "ft.pt"
    trainer.save_checkpoint(path)
    saved, base = torch.load(path, weights_only=True), torch.load(ckpt, weights_only=True)
    assert set(saved) == set(base) and set(saved["model"]) == set(base["model"])
    frozen = "sam_mask_decoder.conv_s0.weight"  # projects the cached high-res features
    assert torch.equal(saved["model"][frozen], base["model"][frozen])
    ours = load_backend("sam2.1-hiera-tiny", checkpoint=path)
    official = official_predictor(path)
    official.set_image(img)
    emb = ours.set_image(img)
    for coords, labels in [(np.array([[32.0, 20.0]]), np.array([1])), (np.array([[30.0, 15.0], [5.0, 5.0]]), np.array([1, 0]))]:
        masks, scores, low = official.predict(point_coords=coords, point_labels=labels, multimask_output=False)
        got = ours.predict(emb, Prompts(points=coords, labels=labels), multimask=False)
        np.testing.assert_allclose(got["low_res_logits"], low, atol=2e-3, rtol=1e-3)
        near = np.abs(ours.upscale_logits(emb, low)[0]) < 1e-2
        assert ((got.masks[0] != masks[0].astype(bool)) & ~near).sum() == 0


def test_sam2_takes_no_encoder_adapters(tmp_path):
    from helpers.tiny_sam2 import write_sam2_checkpoint

    backend = load_backend("sam2.1-hiera-tiny", checkpoint=write_sam2_checkpoint(tmp_path / "sam2.pt"))
    with pytest.raises(InputError, match="decoder only"):
        load_trainer(backend, mode="decoder+lora")


def test_correction_click_goes_where_the_error_is_deepest():
    from terramask.models.finetune.sam_trainer import correction_click

    target = np.zeros((20, 20), np.int8)
    target[2:12, 2:12] = 1
    target[:, 19] = -1  # not counted
    pred = np.zeros((20, 20), bool)
    pred[2:12, 2:7] = True  # half the object found
    x, y, label = correction_click(pred, target)
    assert (x, label) == (9, 1) and 4 <= y <= 9  # on the middle column of the missed half, 3 px from its edges
    spilled = (target == 1) | np.pad(np.ones((8, 8), bool), ((12, 0), (12, 0)))[:20, :20]
    assert correction_click(spilled, target)[2] == 0  # the larger spill is background
    assert correction_click(target == 1, target) is None
    assert correction_click((target == 1) | (target == -1), target) is None  # pixels not counted are no error


@pytest.mark.slow
def test_a_refine_prompt_trains_the_second_click_with_the_prior_mask(tiny_sam_checkpoint):
    import torch

    backend = load_backend(None, checkpoint=tiny_sam_checkpoint)
    trainer = load_trainer(backend, lr=1e-3)
    img, items = _items(backend, trainer)
    click = items[0].prompt
    refine = TrainItem(items[0].embedding, items[0].target, PromptSample(click.points, click.labels, refine=True))
    seen = []
    real = trainer.model.prompt_encoder.forward

    def spy(points, boxes, masks):
        seen.append((points[0].shape[1], masks is not None, torch.is_grad_enabled()))
        return real(points, boxes, masks)

    trainer.model.prompt_encoder.forward = spy
    step = trainer.train_step([refine])
    assert step.finite and np.isfinite(step.loss)
    # first round: the click alone, no prior, no gradient; second: click + correction, prior
    assert seen == [(1, False, False), (2, True, True)]
    # the mask-prompt path trains
    assert trainer.model.prompt_encoder.mask_downscaling[0].weight.grad is None  # cleared after the step
    before = trainer.model.prompt_encoder.mask_downscaling[0].weight.detach().clone()
    trainer.train_step([refine])
    assert not torch.equal(before, trainer.model.prompt_encoder.mask_downscaling[0].weight)


@pytest.mark.slow
def test_an_onnx_model_has_no_trainable_decoder(tiny_sam_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from terramask.models.onnx.export import export_onnx

    export = export_onnx(tiny_sam_checkpoint, tmp_path / "onnx")
    backend = load_backend(checkpoint=export.directory, runtime="onnx", cache=True)
    with pytest.raises(ModelError, match="no trainable mask decoder.*torch runtime"):
        load_trainer(backend)
