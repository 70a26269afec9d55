"""Can SAM's decoder learn to localise a click? An overfitting probe for ``SamTrainer``.

The question behind issue 13's missing gain: from random weights, does decoder training
learn *where* the click is, or only *what* the objects look like? The probe removes the
look shortcut: a scene of same-looking bright squares on a dark ground, so "every bright
pixel" scores IoU ~1/9 per square and only a mask around the clicked square scores
high. It trains with :meth:`SamTrainer.train_step` (the code ``terramask finetune``
runs: SAM's loss, multimask rule for single clicks) on random clicks inside squares of
two scenes and reports, every ``--every`` steps, the training losses and the mean IoU of
the first-click mask on the low-res grid (the deepest click, as ``terramask eval``) on
the training scenes and on a held-out scene, twice: the candidate the IoU head ranks
first (what ``terramask eval`` scores) and the best of the three (``oracle``: did *any*
candidate learn the object?).

``--data naip`` uses two images of ``naip_fields_agoro`` instead (random ViT-B through the
embedding cache of ``benchmarks/finetune.py --cache --work WORK``; first image's
``--objects`` mid-sized fields to train, the second image's to hold out).

Usage::

    python benchmarks/finetune_probe.py --steps 100 --every 20 --lr 5e-3
    python benchmarks/finetune_probe.py --data naip --work /tmp/tm_e --objects 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TERRAMASK_RS_DATA", REPO.parent / "shared" / "data" / "rs")) / "naip_fields_agoro"


def squares_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(256, 256, 3)`` uint8 image and ``(256, 256)`` int32 instance map: a 3 x 3 grid of
    bright squares (32-47 px) of the same look on a dark noisy ground."""
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 50, size=(256, 256, 3)).astype(np.uint8)
    inst = np.zeros((256, 256), np.int32)
    k = 0
    for y in range(16, 208, 64):
        for x in range(16, 208, 64):
            k += 1
            side = int(rng.integers(32, 48))
            inst[y : y + side, x : x + side] = k
    img[inst > 0] += 150
    return img, inst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("squares", "naip"), default="squares")
    ap.add_argument("--work", default="/tmp/tm_finetune_bench", help="benchmarks/finetune.py's --work (naip)")
    ap.add_argument("--objects", type=int, default=4, help="naip: fields per image")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    torch.manual_seed(args.seed)
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.tiny_sam import write_sam_checkpoint
    from terramask.eval.clicks import next_click
    from terramask.models.finetune.trainable import PromptSample, TrainItem
    from terramask.models.resolve import load_backend, load_trainer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.data == "squares":
        ckpt = write_sam_checkpoint(work / "probe_tiny.pth", arch="tiny", seed=0, scale_decoder=False)
        scenes = [squares_scene(s) for s in range(3)]
    else:
        os.environ["TERRAMASK_CACHE"] = str(work / "cache")
        ckpt = work / "random_vit_b.pth"
        if not ckpt.is_file():
            write_sam_checkpoint(ckpt, arch="vit_b", seed=0, scale_decoder=False)
        scenes = _naip_scenes(args.objects)
    backend = load_backend(None, checkpoint=str(ckpt), cache=True)
    trainer = load_trainer(backend, "decoder", lr=args.lr)
    data = []
    for img, inst in scenes:
        emb = backend.set_image(img)
        masks = [inst == k for k in range(1, int(inst.max()) + 1) if (inst == k).any()]
        data.append((emb, [(m, trainer.prepare_target(emb, m)) for m in masks]))
    train, held = data[:-1], data[-1:]

    def first_click_iou(sets) -> tuple[float, float]:
        """Mean IoU (ranked-first candidate, best candidate) of the deepest click, low-res grid."""
        chosen, oracle = [], []
        with torch.no_grad():
            for emb, objs in sets:
                feats = torch.as_tensor(np.asarray(emb.features, dtype=np.float32))
                for m, target in objs:
                    c = next_click(np.zeros_like(m), m)
                    xy = torch.as_tensor(trainer._model_frame(np.array([[c.x, c.y]], float), emb)[None])
                    logits, iou = trainer._decode(feats, (xy, torch.ones((1, 1), dtype=torch.int64)), None)
                    valid, obj = target >= 0, target == 1
                    ious = []
                    for k in (1, 2, 3):
                        pred = logits[0, k].numpy() > 0
                        ious.append((pred & obj & valid).sum() / max(1, ((pred | obj) & valid).sum()))
                    chosen.append(ious[int(iou[0, 1:].argmax())])
                    oracle.append(max(ious))
        return float(np.mean(chosen)), float(np.mean(oracle))

    def line(step: int, losses: str) -> None:
        (tc, to), (vc, vo) = first_click_iou(train), first_click_iou(held)
        print(f"step {step:4d} {losses} train mIoU@1 {tc:.3f} (oracle {to:.3f}) held-out {vc:.3f} (oracle {vo:.3f}) "
              f"{time.perf_counter() - t0:.0f}s", flush=True)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    line(0, "")
    hist = []
    for step in range(1, args.steps + 1):
        batch = []
        for _ in range(args.batch_size):
            emb, objs = train[int(rng.integers(len(train)))]
            m, target = objs[int(rng.integers(len(objs)))]
            ys, xs = np.nonzero(m)
            q = int(rng.integers(len(ys)))
            batch.append(TrainItem(emb, target, PromptSample(np.array([[xs[q], ys[q]]], float), np.array([1]))))
        s = trainer.train_step(batch)
        hist.append((s.loss, s.focal, s.dice, s.iou_mse))
        if step % args.every == 0:
            loss, focal, dice, iou_mse = np.mean(hist[-args.every :], axis=0)
            line(step, f"loss {loss:.3f} focal {focal:.4f} dice {dice:.3f} iou_mse {iou_mse:.4f}")
    return 0


def _naip_scenes(per_image: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two images of the field set, each reduced to ``per_image`` mid-sized fields."""
    from terramask.pipelines.finetune.config import FinetuneConfig
    from terramask.pipelines.finetune.run import open_dataset

    ds = open_dataset(FinetuneConfig(str(DATA), model=None, checkpoint=None, limit=2))
    out = []
    for sample in ds:
        areas = np.bincount(sample.instances.ravel())[1:]
        order = np.argsort(areas)[::-1]
        keep = order[len(order) // 4 : len(order) // 4 + per_image] + 1
        inst = np.where(np.isin(sample.instances, keep), sample.instances, 0).astype(np.int32)
        out.append((sample.image, inst))
    return out


if __name__ == "__main__":
    sys.exit(main())
