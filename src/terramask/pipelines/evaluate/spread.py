"""Report tables of the spread of each headline metric (``summary["spread"]``, from
:mod:`terramask.eval.intervals`): mean ± standard deviation over seeds with the 95 %
bootstrap interval over objects, and, with several models, whether their intervals overlap.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

from terramask.eval.intervals import intervals_overlap

NAMES = {"iou": "box IoU", "recall": "recall", "precision": "precision", "mean_best_iou": "mean best IoU"}


def metric_name(key: str) -> str:
    """``noc@85`` -> ``NoC@85``, ``miou@3`` -> ``mIoU@3``, ``iou`` -> ``box IoU`` …"""
    if key.startswith("noc@"):
        return "NoC@" + key[4:]
    if key.startswith("miou@"):
        return "mIoU@" + key[5:]
    return NAMES.get(key, key)


def lower_is_better(key: str) -> bool:
    return key.startswith("noc@")


def _keys(summaries: Sequence[dict]) -> list[str]:
    keys: list[str] = []
    for s in summaries:
        keys.extend(k for k in s.get("spread", {}) if k not in keys)
    return keys


def _cell(spread: dict | None) -> str:
    if not spread or spread.get("mean") is None:
        return "–"
    text = f"{spread['mean']:.3f}"
    if spread.get("std") is not None:
        text += f" ± {spread['std']:.3f}"
    lo, hi = spread["ci95"]
    return text + f" [{lo:.3f}, {hi:.3f}]"


def spread_table(summaries: Sequence[dict]) -> str:
    """A row per model: ``mean ± std over seeds [95 % bootstrap interval]`` per metric."""
    keys = _keys(summaries)
    lines = ["| model | seeds | " + " | ".join(metric_name(k) for k in keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for s in summaries:
        sp = s.get("spread", {})
        seeds = ", ".join(str(x) for x in s.get("seeds", []))
        lines.append(f"| {s['model']} | {seeds} | " + " | ".join(_cell(sp.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def verdict(key: str, a: dict, b: dict, name_a: str, name_b: str) -> str:
    """``overlap`` when the two 95 % intervals overlap (no clear difference), else which
    model is better (NoC: fewer clicks; other metrics: higher)."""
    if not a or not b or a.get("ci95") is None or b.get("ci95") is None:
        return "–"
    if intervals_overlap(a["ci95"], b["ci95"]):
        return "overlap"
    a_better = (a["mean"] < b["mean"]) if lower_is_better(key) else (a["mean"] > b["mean"])
    return f"{name_a if a_better else name_b} better"


def overlap_table(summaries: Sequence[dict]) -> str | None:
    """A row per metric, a column per pair of models: ``overlap`` or ``X better`` (None
    with fewer than two models)."""
    if len(summaries) < 2:
        return None
    pairs = list(combinations(summaries, 2))
    keys = _keys(summaries)
    lines = ["| metric | " + " | ".join(f"{a['model']} vs {b['model']}" for a, b in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for k in keys:
        cells = [verdict(k, a.get("spread", {}).get(k), b.get("spread", {}).get(k), a["model"], b["model"]) for a, b in pairs]
        lines.append(f"| {metric_name(k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
