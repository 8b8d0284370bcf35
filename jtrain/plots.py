"""PNG plots of a run: training curves, confusion matrix, ROC curve, image grids, a PCA scatter of embeddings.

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


def _save(fig: plt.Figure, path: str, tight: bool = True) -> str:
    try:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # A tight bounding box costs a second rendering pass; figures laid out by tight_layout do without it.
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path


def _split_rank(split: str) -> tuple[int, str]:
    known = _SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else len(_SPLIT_ORDER)
    return known, split


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Panels besides the method's own metrics: what the optimiser did and how fast the run went.
_EXTRA_PANELS = ("learning_rate", "examples_per_sec")
_SMOOTHED = ("examples_per_sec",)  # noisy per-window rates: a running mean over a few windows reads better


def plot_training_curves(records: Sequence[dict[str, Any]], path: str, keys: Sequence[str] | None = None) -> str:
    """Plots the scalar metrics of metrics.jsonl-style records against step, one line per split.

    One panel per metric of `keys` (a method's log keys, e.g. loss and accuracy; None = every metric), then the
    learning rate and a smoothed throughput. Only series of at least two points are drawn: a lone final test
    value is a number for summary.json, not a curve. Returns `path`.
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
    wanted = list(series) if keys is None else [*keys, *_EXTRA_PANELS]
    panels = {name: {split: points for split, points in series[name].items() if len(points) >= 2}
              for name in dict.fromkeys(wanted) if name in series}
    panels = {name: by_split for name, by_split in panels.items() if by_split}
    if not panels:
        raise ValueError("no metric with at least two points to plot")

    # One colour per split across all panels, so "val" looks the same in every one.
    splits = sorted({split for by_split in panels.values() for split in by_split}, key=_split_rank)
    colors = {split: f"C{i}" for i, split in enumerate(splits)}

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (name, by_split) in zip(axes.flat, panels.items()):
        for split in sorted(by_split, key=_split_rank):
            steps = sorted(by_split[split])
            values = np.asarray([by_split[split][s] for s in steps])
            if name in _SMOOTHED and len(values) >= 3:
                values = np.convolve(np.pad(values, 1, mode="edge"), np.ones(3) / 3, mode="valid")
            ax.plot(steps, values, color=colors[split], label=split or "(no split)")
        ax.set_title(f"{name} ({', '.join(sorted(by_split, key=_split_rank))})")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if len(by_split) > 1:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path, tight=False)


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
    return _save(fig, path, tight=False)


def plot_roc_curve(fpr: Any, tpr: Any, auc: float, path: str, title: str = "ROC curve") -> str:
    """Draws a ROC curve (true vs false positive rate) with the chance diagonal. Returns `path`."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(np.asarray(fpr), np.asarray(tpr), label=f"ROC (AUC = {float(auc):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_image_grid(images: Any, path: str, title: str = "", row_labels: Sequence[str] = ()) -> str:
    """Draws (R, N, H, W, C) images in [0, 1] as R rows of N (grey for one channel). Returns `path`."""
    grid = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    if grid.ndim != 5:
        raise ValueError(f"images must be (rows, columns, H, W, C), got shape {grid.shape}")
    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 0.8, 1.1 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            image = grid[r, c]
            ax = axes[r, c]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, tight=False)


def plot_embedding_pca(embeddings: Any, labels: Any, class_names: Sequence[str] | None, path: str,
                       title: str = "embeddings") -> str:
    """Projects (N, D) embeddings on their first two principal components, one colour per label. Returns `path`."""
    x = np.asarray(embeddings, np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)  # principal axes: the rows of vt
    points = x @ vt[:2].T if vt.shape[0] >= 2 else np.c_[x @ vt[:1].T, np.zeros(len(x))]  # (N, 2)
    explained = s**2 / max(float((s**2).sum()), 1e-12)
    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10" if len(np.unique(labels)) <= 10 else "tab20")
    for i, label in enumerate(np.unique(labels)):
        chosen = labels == label
        name = class_names[int(label)] if class_names and 0 <= int(label) < len(class_names) else str(label)
        ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=cmap(i % cmap.N), label=name, alpha=0.7)
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%})")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%})" if len(explained) > 1 else "PC 2")
    ax.set_title(title)
    ax.legend(fontsize="x-small", markerscale=2, loc="best")
    fig.tight_layout()
    return _save(fig, path, tight=False)


def plot_learning_curves(curves: dict[str, Sequence[tuple[int, float, float, int]]], metric: str, path: str) -> str:
    """Active learning: `metric` against labelled examples, a line per strategy from its (labelled, mean, std,
    seeds) points, the band mean +- std over seeds."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (strategy, points) in enumerate(curves.items()):
        if not points:
            continue
        x, mean, std, counts = (np.asarray(column) for column in zip(*points))
        seeds = int(counts.max())
        style = dict(color="0.3", linestyle="--") if strategy == "random" else dict(color=f"C{i}")
        ax.plot(x, mean, marker="o", markersize=3, label=f"{strategy} ({seeds} seed{'s' * (seeds > 1)})", **style)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=style["color"])
    split, _, name = metric.partition("_")
    ax.set_title(f"{split} {name} against labelled examples (mean +- std over seeds)")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(f"{split} {name}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path, tight=False)


_TIME_PARTS = (("step_s", "steps"), ("compile_s", "compile"), ("data_s", "data wait"), ("eval_s", "evaluation"),
               ("checkpoint_s", "checkpoint"))


def plot_time_breakdown(time: dict[str, float], path: str, title: str = "training loop time") -> str:
    """One bar per part of the loop's wall time (summary.json "time"), in seconds, with its share."""
    parts = [(label, float(time.get(key, 0.0))) for key, label in _TIME_PARTS]
    total = float(time.get("total_s") or sum(v for _, v in parts)) or 1e-9
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    labels, values = [p[0] for p in parts][::-1], [p[1] for p in parts][::-1]
    bars = ax.barh(labels, values, color=["C0" if lab == "steps" else "C7" for lab in labels])
    digits = 2 if total < 10 else 1
    for bar, value in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.{digits}f} s ({value / total:.0%})",
                va="center", fontsize="small")
    ax.set_xlim(0, max(values + [1e-9]) * 1.35)
    ax.set_xlabel("seconds")
    ax.set_title(f"{title}: {total:.{digits}f} s, goodput {time.get('goodput', 0.0):.0%} (steps / total)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, tight=False)
