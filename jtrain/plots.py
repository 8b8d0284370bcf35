"""PNG plots of a run: training curves, confusion matrix, ROC curve.

Rendered with the Agg backend because training hosts are usually headless; every figure is closed
right after saving so a long run that re-plots at each evaluation does not accumulate figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

# Must precede the pyplot import: pyplot picks its backend on import, and an interactive one fails
# (or opens windows) on a machine without a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Splits are listed (and coloured) in this order whatever order the records give them in.
_SPLIT_ORDER = ("train", "val", "test")
_RECORD_KEYS = ("step", "split")
# Above this many classes the per-cell counts overlap and become unreadable; the colours still work.
_MAX_ANNOTATED_CLASSES = 30


def _save(fig: plt.Figure, path: str) -> str:
    try:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _split_rank(split: str) -> tuple[int, str]:
    known = _SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else len(_SPLIT_ORDER)
    return known, split


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_training_curves(records: Sequence[dict[str, Any]], path: str) -> str:
    """Plots every scalar metric of metrics.jsonl-style records against step, one line per split.

    One subplot per metric name (loss, accuracy, learning_rate, ...). Non-scalar values (e.g. a
    confusion matrix) are skipped. Returns `path`.
    """
    # series[metric][split] = {step: value}; a dict so a step logged twice (a resumed run repeating
    # steps after its last checkpoint) keeps the latest value instead of drawing a zigzag.
    series: dict[str, dict[str, dict[int, float]]] = {}
    for record in records:
        split = str(record.get("split", ""))
        step = int(record["step"])
        for name, value in record.items():
            if name in _RECORD_KEYS or not _is_scalar(value):
                continue
            series.setdefault(name, {}).setdefault(split, {})[step] = float(value)
    if not series:
        raise ValueError("no scalar metrics to plot")

    # One colour per split across all subplots, so "val" looks the same in every panel.
    splits = sorted({split for by_split in series.values() for split in by_split}, key=_split_rank)
    colors = {split: f"C{i}" for i, split in enumerate(splits)}

    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.5 * nrows), squeeze=False)
    for ax, (name, by_split) in zip(axes.flat, series.items()):
        for split in sorted(by_split, key=_split_rank):
            steps = sorted(by_split[split])
            values = [by_split[split][s] for s in steps]
            # A line needs two points; a lone point (e.g. the final test evaluation) gets a marker.
            marker = "o" if len(steps) == 1 else None
            ax.plot(steps, values, marker=marker, color=colors[split], label=split or "(no split)")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(
    confusion: Any,
    class_names: Sequence[str] | None,
    path: str,
    title: str = "confusion matrix",
) -> str:
    """Draws a (C, C) count matrix (rows = true class, columns = predicted) as a heatmap. Returns `path`."""
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {counts.shape}")
    num_classes = counts.shape[0]
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class confusion matrix")

    size = max(4.0, 0.5 * num_classes + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(num_classes), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(num_classes), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)

    if num_classes <= _MAX_ANNOTATED_CLASSES:
        # Switch to white text past half the colour range, where dark-blue cells hide black text.
        threshold = counts.max() / 2.0 if counts.size else 0.0
        is_integer = np.issubdtype(counts.dtype, np.integer)
        for i in range(num_classes):
            for j in range(num_classes):
                value = counts[i, j]
                text = f"{int(value)}" if is_integer else f"{value:.3g}"
                color = "white" if value > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_curve(fpr: Any, tpr: Any, auc: float, path: str) -> str:
    """Draws a ROC curve (true vs false positive rate) with the chance diagonal. Returns `path`."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(np.asarray(fpr), np.asarray(tpr), label=f"ROC (AUC = {float(auc):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)
