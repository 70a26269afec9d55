"""Write evaluation results: ``metrics.json``, ``metrics.csv``, ``report.md`` and PNG plots.

Plots need matplotlib (``pip install 'terramask[plots]'``), imported only here and only
through its object-oriented API (no pyplot, no global backend change). Every file is
written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from terramask.io.atomic import atomic_output, write_json, write_text

log = logging.getLogger(__name__)

GT_COLOUR = np.array([0, 200, 0], dtype=np.float64)
PRED_COLOUR = np.array([30, 120, 255], dtype=np.float64)
IGNORE_COLOUR = np.array([128, 128, 128], dtype=np.float64)
PLURALS = {"click": "clicks", "box": "boxes", "image": "images"}


# -- tables ------------------------------------------------------------------------------

# mode -> [(column title, summary key or callable)]
COLUMNS: dict[str, list[tuple[str, Any]]] = {
    "clicks": [
        ("objects", "n_objects"),
        ("NoC@85", "noc@85"),
        ("NoC@90", "noc@90"),
        ("NoF@90", "nof@90"),
        ("mIoU@1", "miou@1"),
        ("mIoU@3", "miou@3"),
        ("mIoU@5", "miou@5"),
        ("final boundary F", lambda s: s.get("final_mask", {}).get("mean_boundary_f")),
        ("ms / click", "ms_per_prompt"),
    ],
    "box": [
        ("objects", "n_objects"),
        ("mean IoU", "mean_iou"),
        ("pooled IoU", "pooled_iou"),
        ("precision", "mean_precision"),
        ("recall", "mean_recall"),
        ("F1", "mean_f1"),
        ("boundary F", "mean_boundary_f"),
        ("ms / box", "ms_per_prompt"),
    ],
    "auto": [
        ("images", "n_images"),
        ("objects", "n_objects"),
        ("recall@0.5", "recall@0.5"),
        ("recall@0.75", "recall@0.75"),
        ("mean best IoU", "mean_best_iou"),
        ("masks / image", "predicted_per_image"),
        ("coverage", "coverage"),
        ("s / image", lambda s: None if not s.get("images") else s["seconds_prompts"] / s["images"]),
    ],
    "find": [
        ("images", "n_images"),
        ("objects", "n_objects"),
        ("returned", "n_predicted"),
        ("precision@0.5", "precision@0.5"),
        ("recall@0.5", "recall@0.5"),
        ("F1@0.5", "f1@0.5"),
        ("AP50", "ap50"),
        ("mean matched IoU", "mean_matched_iou"),
        ("s / image", lambda s: None if not s.get("prompts") else s["seconds_prompts"] / s["prompts"]),
    ],
}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3f}" if abs(float(v)) < 100 else f"{float(v):.1f}"
    return str(v)


def comparison_table(mode: str, summaries: Sequence[dict]) -> str:
    """One markdown table, a row per model, the headline metrics of ``mode``."""
    cols = COLUMNS[mode]
    lines = ["| model | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s in summaries:
        vals = [(key(s) if callable(key) else s.get(key)) for _, key in cols]
        lines.append(f"| {s['model']} | " + " | ".join(_fmt(v) for v in vals) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict]) -> Path:
    """Rows (dicts) as CSV; columns are the union of keys in first-seen order."""
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else (round(v, 6) if isinstance(v, float) else v)) for k, v in r.items()})
    return write_text(path, buf.getvalue())


# -- plots -------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from terramask.core.lazy import require

    require("matplotlib", "plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def plot_curve(path: Path, summaries: Sequence[dict]) -> Path:
    """mIoU vs number of clicks, one line per model."""
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    for s in summaries:
        curve = [np.nan if v is None else v for v in s.get("miou_curve", [])]
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3, label=s["model"])
    ax.axhline(0.85, color="grey", lw=0.6, ls=":")
    ax.axhline(0.90, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU")
    ax.set_ylim(0, 1)
    ax.set_xlim(1, max([len(s.get("miou_curve", [])) for s in summaries] + [2]))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("mIoU after k clicks (last IoU carried forward after an early stop)", fontsize=9)
    return _save(fig, path)


def plot_histograms(path: Path, summaries: Sequence[dict], keys: Sequence[tuple[str, str]]) -> Path:
    """Histograms of IoU (fraction of objects per bin), one panel per key, one line per model."""
    return _save(histogram_figure(summaries, keys), path)


def histogram_figure(summaries: Sequence[dict], keys: Sequence[tuple[str, str]]):
    """The figure of :func:`plot_histograms`. The legend sits right of the axes, so it
    covers no bin (the first and last bins are where most objects of a bad or good model are)."""
    fig = _figure(5 * len(keys) + 1.5, 3.6)
    for j, (key, title) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), j + 1)
        for s in summaries:
            h = s.get(key)
            if not h:
                continue
            edges = np.asarray(h["edges"])
            counts = np.asarray(h["counts"], dtype=np.float64)
            frac = counts / max(counts.sum(), 1)
            ax.stairs(frac, edges, label=s["model"], lw=1.5)
        ax.set_xlabel("IoU")
        ax.set_ylabel("fraction of objects")
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    fig.tight_layout()
    return fig


def _blend(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = image.astype(np.float64).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return out.clip(0, 255).astype(np.uint8)


def _draw_prompts(ax, ex) -> None:
    pts = np.asarray(ex.points, dtype=np.float64).reshape(-1, 2)
    for (x, y), lab in zip(pts, ex.labels, strict=True):
        ax.scatter([x], [y], marker="*", s=120, c="lime" if lab == 1 else "red", edgecolors="white", linewidths=0.8)
    if ex.box is not None:
        x0, y0, x1, y1 = ex.box
        ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="yellow", lw=1.2)


def _label_panel(ex) -> np.ndarray:
    """The label over the crop: the object in green (objects in their own colours in
    automatic mode), ignored pixels grey."""
    from terramask.io import overlay

    base = _blend(ex.image, ex.ignore, IGNORE_COLOUR, 0.6)
    if ex.gt_labels is not None:
        return overlay.draw_annotations(base, ex.gt_labels.astype(np.int64), alpha=0.5, borders=True, seed=1)
    return _blend(base, ex.gt, GT_COLOUR)


def _prediction_panel(ex) -> tuple[np.ndarray, bool]:
    """The prediction drawn over the crop with :mod:`terramask.io.overlay` (the pictures
    of ``predict``/``auto``), prompts included; the flag says the prompts are drawn."""
    from terramask.io import overlay

    if ex.pred_labels is not None:
        return overlay.draw_annotations(ex.image, ex.pred_labels.astype(np.int64), alpha=0.5, borders=True), True
    boxes = None if ex.box is None else np.asarray(ex.box, dtype=np.float64)[None]
    points = np.asarray(ex.points, dtype=np.float64).reshape(-1, 2)
    return overlay.draw_prompted(ex.image, ex.pred, points if len(points) else None, ex.labels if len(points) else None, boxes), True


def plot_examples(path: Path, model: str, best: Sequence, worst: Sequence) -> Path | None:
    """Side by side: image | label (green, ignored grey) | prediction, best then worst."""
    fig = examples_figure(model, best, worst)
    return None if fig is None else _save(fig, path)


def examples_figure(model: str, best: Sequence, worst: Sequence):
    """The figure of :func:`plot_examples` (None without examples). Every panel shows
    exactly the crop: axis limits are fixed to its pixel extent, so a prompt box drawn on
    the crop's edge (an object touching the image edge) cannot widen the axes into a
    white band."""
    shown = {id(ex) for ex in best}
    rows = [("best", ex) for ex in best] + [("worst", ex) for ex in worst if id(ex) not in shown]
    if not rows:
        return None
    fig = _figure(9, 3 * len(rows))
    for r, (kind, ex) in enumerate(rows):
        label_img = _label_panel(ex)
        pred_img, drawn = _prediction_panel(ex)
        for c, (img, title) in enumerate(((ex.image, "image"), (label_img, "label"), (pred_img, f"{model}"))):
            ax = fig.add_subplot(len(rows), 3, r * 3 + c + 1)
            ax.imshow(img, interpolation="nearest")
            if c == 1 or (c == 2 and not drawn):
                _draw_prompts(ax, ex)
            h, w = img.shape[:2]
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            text = textwrap.fill(f"{kind}: {ex.title}", 42) if c == 0 else title
            ax.set_title(text, fontsize=8, loc="left" if c == 0 else "center")
    fig.tight_layout()
    return fig


# -- everything --------------------------------------------------------------------------


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def write_outputs(out: Path, dataset: dict, config: dict, results: Sequence, *, plots: bool = True) -> dict:
    """Write ``metrics.json``, ``metrics.csv``, ``report.md`` and ``plots/*.png`` into ``out``;
    returns the metrics dict (the content of ``metrics.json``)."""
    from importlib.metadata import PackageNotFoundError, version

    out = Path(out)
    try:
        tm_version = version("terramask")
    except PackageNotFoundError:  # running from a source tree
        tm_version = None
    mode = config["mode"]
    summaries = [r.summary for r in results]
    metrics = {
        "terramask_version": tm_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "config": config,
        "models": {r.model: r.summary for r in results},
    }
    write_json(out / "metrics.json", metrics)
    write_csv(out / "metrics.csv", [row for r in results for row in r.rows])

    figures: list[tuple[str, str]] = []
    if plots:
        pdir = out / "plots"
        pdir.mkdir(exist_ok=True)
        if mode == "clicks":
            figures.append(("mIoU vs clicks", plot_curve(pdir / "miou_vs_clicks.png", summaries).relative_to(out).as_posix()))
            keys = [("first_iou_histogram", "IoU after the first click"), ("final_iou_histogram", "IoU at the end of the simulation")]
        elif mode == "box":
            keys = [("iou_histogram", "IoU with the tight box as the only prompt")]
        elif mode == "auto":
            keys = [("best_iou_histogram", "best IoU of each labelled object with any predicted mask")]
        else:  # find: the tables say it all
            keys = []
        if keys:
            figures.append(("IoU histograms", plot_histograms(pdir / "iou_histograms.png", summaries, keys).relative_to(out).as_posix()))
        for r in results:
            p = plot_examples(pdir / f"examples_{_safe(r.model)}.png", r.model, r.best, r.worst)
            if p is not None:
                figures.append((f"Best and worst examples: {r.model}", p.relative_to(out).as_posix()))
    write_text(out / "report.md", render_markdown(dataset, config, summaries, figures))
    return metrics


def _protocol(config: dict) -> list[str]:
    mode = config["mode"]
    if mode == "clicks":
        return [
            f"Click simulator (RITM protocol): first click at the object point farthest from its boundary; "
            f"each next click at the point farthest inside the {'deepest' if config['region'] == 'deepest' else 'largest (by area)'} "
            f"error region (false negative -> object click, false positive -> background click); all earlier clicks "
            f"{'and the previous best low-resolution logits ' if config['use_prior'] else ''}are passed with each click.",
            f"Multimask: {config['multimask']} (first = several candidates for the first click, the one with the "
            "highest score of the model itself kept, never chosen with the label; one mask for later clicks).",
            f"At most {config['max_clicks']} clicks; the simulation stops once IoU >= {config['stop_iou']}.",
            f"NoC@t counts {config['max_clicks']} for an object that never reaches t (NoF@t counts those objects); "
            "mIoU@k carries the last IoU forward after an early stop.",
            "Convention: RITM / SimpleClick's `evaluate_sample` (NoC@85/90 within 20 clicks, the model's own prediction "
            "scored after every click, the previous prediction passed back, so IoU may go down after a click; "
            "a pixel is never clicked twice); "
            "no zoom-in crop (SimpleClick's `--eval-mode cvpr` zooms in); for mIoU curves like their `--iou-analysis`, "
            "use a stop IoU of 1.",
            f"Boundary F uses a tolerance of {config['boundary_tolerance']} px.",
        ]
    if mode == "box":
        return [
            "The tight box of each labelled object (pixel-edge xyxy) is the only prompt, single-mask output.",
            f"Boundary F uses a tolerance of {config['boundary_tolerance']} px; pooled IoU = all pixels of all objects together.",
        ]
    if mode == "find":
        how = (f"phrases {', '.join(repr(p) for p in config['find_text'])} (a concept backend)" if config["find_text"]
               else f"find-similar: {config['exemplars_per_image']} labelled object(s) per image (a seeded sample) "
                    f"as exemplars, similarity {config['similarity']}, at most {config['max_points']} prompts; "
                    "exemplars are not scored, images with too few objects are skipped")
        return [
            f"Every instance found from {how}.",
            "Instances are matched one-to-one to labelled objects at IoU >= 0.5 (greedy by score, COCO/VOC rule); "
            "precision, recall and F1 count all returned instances; AP50 is the all-point interpolated area under "
            "the precision-recall curve over all images; mean matched IoU averages the true positives.",
        ]
    return [
        "Automatic generation on the whole image; for each labelled object, the best IoU with any predicted mask "
        "(not one-to-one). Recall@t = fraction of objects whose best IoU >= t.",
        "Coverage = labelled target pixels inside the union of predicted masks / all labelled target pixels.",
        "Generation parameters: "
        + (", ".join(f"`{k}={v}`" for k, v in config["auto_params"].items()) if config["auto_params"] else "each model's defaults")
        + " (a `MODEL:` prefix applies to that model only).",
    ]


def _seeds(dataset: dict) -> str:
    return ", ".join(str(x) for x in dataset.get("seeds", [dataset["seed"]]))


def _spread_section(config: dict, summaries: Sequence[dict]) -> list[str]:
    from terramask.pipelines.evaluate.spread import overlap_table, spread_table

    if not any(s.get("spread") for s in summaries):
        return []
    n_seeds = max(len(s.get("seeds", [])) for s in summaries)
    lines = [
        "",
        "## Spread",
        "",
        f"Mean over all evaluated objects{f' ± standard deviation of the {n_seeds} per-seed means' if n_seeds > 1 else ''} "
        f"[95 % percentile-bootstrap interval over objects, {config.get('n_boot', 2000)} resamples].",
        "",
        spread_table(summaries),
    ]
    pairs = overlap_table(summaries)
    if pairs is not None:
        lines += ["", "Do the models differ? `overlap`: their 95 % intervals overlap, the data do not separate them.", "", pairs]
    return lines + [""]


def render_markdown(dataset: dict, config: dict, summaries: Sequence[dict], figures: Sequence[tuple[str, str]]) -> str:
    mode = config["mode"]
    lines = [
        f"# terramask evaluation: {dataset['name']} ({mode})",
        "",
        f"- Dataset: `{dataset['root']}` — {dataset['images']} of {dataset['images_available']} images, "
        f"target class {dataset['target_class']}, label {dataset['ignore_label']} ignored.",
        f"- Objects: {dataset['instance_source']}; objects under {dataset['min_area_px']} px dropped; "
        + (f"{dataset['instances_per_image']} sampled per image (seeds {_seeds(dataset)})." if dataset["instances_per_image"] else "all objects used."),
    ]
    lines += [f"- {p}" for p in _protocol(config)]
    lines += ["", "## Comparison", "", comparison_table(mode, summaries), ""]
    for s in summaries:
        dropped = s.get("objects_below_min_area")
        work = f"{s['prompts']} images generated" if mode in ("auto", "find") else f"{s['seconds_embedding']:.1f} s embedding, {s['prompts']} {PLURALS.get(s.get('prompt_unit', ''), 'prompts')}"
        lines.append(
            f"- `{s['model']}`: {s.get('objects_total', '?')} objects in the selected images, {dropped} below the minimum area; "
            f"{s['seconds_total']:.1f} s in total ({work})."
        )
    lines += _spread_section(config, summaries)
    for title, rel in figures:
        lines += ["", f"## {title}", "", f"![{title}]({rel})"]
    lines += ["", "Per-image numbers: `metrics.csv`; everything above: `metrics.json`.", ""]
    return "\n".join(lines)
