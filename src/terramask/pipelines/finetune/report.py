"""The files of a run directory besides the weights: ``terramask.json`` (what
``--model RUN_DIR`` reads: base model, classes, data, metrics) and ``report.md`` with
``loss.png`` (loss curve, when matplotlib is installed) and the before/after table.
Every file is written atomically.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from terramask.eval.datasets import SegmentationDataset
from terramask.io.atomic import atomic_output, write_json, write_text
from terramask.models.base import Backend
from terramask.models.finetune.run_dir import CHECKPOINT_FILE, RUN_FILE, RUN_FORMAT
from terramask.models.finetune.trainable import Trainer
from terramask.pipelines.finetune.config import FinetuneConfig

log = logging.getLogger(__name__)

OFFICIAL_ARCHS = ("vit_b", "vit_l", "vit_h", "vit_t")
#: metrics of the before/after table, in order
TABLE_METRICS = ("miou@1", "miou@3", "miou@5", "noc@85", "noc@90", "n_objects")


def base_model_info(config: FinetuneConfig, trainer: Trainer, backend: Backend) -> dict[str, Any]:
    """What ``terramask.json`` says about the base model (``arch`` only for official
    architectures; others are read from the checkpoint's tensors when loaded)."""
    return {
        "name": str(getattr(backend, "name", config.model or "?")),
        "family": trainer.family,
        "arch": trainer.arch if trainer.arch in OFFICIAL_ARCHS else None,
        "arch_found": trainer.arch,
        "model": config.model,
        "checkpoint": config.checkpoint,
        "licence": "that of the base model's weights",
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metrics(summary: dict | None) -> dict | None:
    if summary is None:
        return None
    return {k: summary.get(k) for k in TABLE_METRICS if k in summary}


def write_run_json(out: Path, config: FinetuneConfig, base: dict, ds: SegmentationDataset, state: dict,
                   after: dict | None) -> dict:
    """Write ``terramask.json`` for the checkpoint now in ``out``; returns its content."""
    ckpt = out / CHECKPOINT_FILE
    info = {
        "format": RUN_FORMAT,
        "name": f"{base['name']}@{out.resolve().name}",
        "checkpoint": CHECKPOINT_FILE,
        "checkpoint_sha256": file_sha256(ckpt) if ckpt.is_file() else None,
        "base_model": base,
        "classes": {"target_class": config.target_class, "ignore_label": ds.ignore_label},
        "data": {**ds.describe(), "split": state["split"]},
        "training": {**config.to_dict(), "epochs_done": state["epoch"], "stopped": state["stopped"]},
        "best": state["best"],
        "metrics": {"protocol": f"terramask eval clicks, {config.eval_clicks} click(s), val split",
                    "before": _metrics(state["before"]), "after": _metrics(after)},
        "history": state["history"],
    }
    write_json(out / RUN_FILE, info)
    return info


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def before_after_table(info: dict) -> str:
    """Markdown table: one row per metric, columns before / after / change."""
    before, after = info["metrics"]["before"] or {}, info["metrics"]["after"] or {}
    rows = ["| metric (val split) | before | after | change |", "| --- | ---: | ---: | ---: |"]
    for k in TABLE_METRICS:
        if k not in before and k not in after:
            continue
        b, a = before.get(k), after.get(k)
        change = f"{a - b:+.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and k != "n_objects" else ""
        rows.append(f"| {k} | {_fmt(b)} | {_fmt(a)} | {change} |")
    return "\n".join(rows)


def _loss_plot(out: Path, history: list[dict]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (20 focal + dice + IoU MSE)")
    vals = [h.get("val_miou@1") for h in history]
    if any(v is not None for v in vals):
        ax2 = ax.twinx()
        ax2.plot(epochs, [v if v is not None else float("nan") for v in vals], color="tab:green", marker="s", label="val mIoU@1")
        ax2.set_ylabel("val mIoU@1")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_output(out / "loss.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return "loss.png"


def write_report(out: Path, info: dict, history: list[dict]) -> Path:
    """``report.md``: base model, data, the loss curve (table and plot), before/after."""
    plot = _loss_plot(out, history) if history else None
    lines = [
        f"# Fine-tuning {info['base_model']['name']} on {info['data']['name']}",
        "",
        f"- base model: {info['base_model']['name']} ({info['base_model']['family']}, {info['base_model']['arch_found']})",
        f"- trained: {info['training']['train']}, prompts {info['training']['prompts']}, "
        f"lr {info['training']['lr']}, batch {info['training']['batch_size']}, seed {info['training']['seed']}",
        f"- data: class {info['classes']['target_class']}, {len(info['data']['split']['train'])} training image(s), "
        f"{len(info['data']['split']['val'])} val image(s)",
        f"- epochs: {info['training']['epochs_done']} of {info['training']['epochs']}"
        + (f" ({info['training']['stopped']})" if info["training"]["stopped"] else ""),
        f"- best checkpoint: epoch {(info['best'] or {}).get('epoch')} -> `{info['checkpoint']}` "
        "(official format; use it with `--model RUN_DIR`)",
        "",
        "## Loss curve",
        "",
        "| epoch | loss | focal | dice | IoU MSE | val mIoU@1 | seconds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['focal']:.4f} | {h['dice']:.4f} | {h['iou_mse']:.4f} | "
              f"{_fmt(h.get('val_miou@1'))} | {h['seconds']} |" for h in history]
    if plot:
        lines += ["", f"![loss curve]({plot})"]
    lines += ["", "## Before / after", "", f"Protocol: {info['metrics']['protocol']}.", "", before_after_table(info), ""]
    return write_text(out / "report.md", "\n".join(lines))
