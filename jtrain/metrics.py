"""Exact metrics over a split.

On device, each eval batch reduces to sums (masked: padding contributes nothing); sums add across batches;
on the host, `report()` turns the totals into metrics. A confusion matrix is enough for accuracy and per-class
precision / recall / F1, so classification carries only that and the loss sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def classification_sums(logits: jax.Array, targets: jax.Array, mask: jax.Array, losses: jax.Array) -> dict:
    # logits (B, C); targets (B,) int; mask (B,) bool; losses (B,)
    num_classes = logits.shape[-1]
    weight = mask.astype(jnp.float32)  # (B,)
    true = jax.nn.one_hot(targets, num_classes, dtype=jnp.float32) * weight[:, None]  # (B, C)
    pred = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.float32)  # (B, C)
    return {
        "count": weight.sum(),
        "loss_sum": (losses * weight).sum(),
        # Exact in float32 up to 2**24 examples per cell.
        "confusion": true.T @ pred,  # (C, C): rows = true class, columns = predicted class
    }


def regression_sums(outputs: jax.Array, targets: jax.Array, mask: jax.Array, losses: jax.Array) -> dict:
    # outputs (B, K); targets (B,) or (B, K); mask (B,)
    targets = targets.reshape(outputs.shape).astype(jnp.float32)
    weight = mask.astype(jnp.float32)[:, None]  # (B, 1)
    err = outputs.astype(jnp.float32) - targets  # (B, K)
    return {
        "count": weight.sum(),
        "loss_sum": (losses * weight[:, 0]).sum(),
        "sq_err_sum": (weight * err**2).sum(0),  # (K,)
        "abs_err_sum": (weight * jnp.abs(err)).sum(0),  # (K,)
        "target_sum": (weight * targets).sum(0),  # (K,)
        "target_sq_sum": (weight * targets**2).sum(0),  # (K,)
    }


def report(sums: dict, class_names: tuple[str, ...] = ()) -> dict:
    """Host-side metrics from summed totals (NumPy or device arrays)."""
    sums = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()}
    count = sums["count"]
    out = {"loss": float(sums["loss_sum"] / count), "num_examples": int(round(float(count)))}
    if "confusion" in sums:
        out.update(confusion_report(sums["confusion"], class_names))
    else:
        out.update(regression_report(sums, count))
    return out


def confusion_report(confusion: np.ndarray, class_names: tuple[str, ...] = ()) -> dict:
    confusion = np.rint(confusion).astype(np.int64)  # (C, C) rows true, columns predicted
    true_per_class = confusion.sum(1)  # (C,) support
    pred_per_class = confusion.sum(0)  # (C,)
    hits = np.diag(confusion)  # (C,)
    # A class never predicted (or absent) has precision (recall) 0, as scikit-learn's zero_division=0.
    precision = np.divide(hits, pred_per_class, out=np.zeros(len(hits)), where=pred_per_class > 0)
    recall = np.divide(hits, true_per_class, out=np.zeros(len(hits)), where=true_per_class > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(hits)), where=denom > 0)
    support = true_per_class / max(true_per_class.sum(), 1)
    names = list(class_names) if len(class_names) == len(hits) else [str(i) for i in range(len(hits))]
    return {
        "accuracy": float(hits.sum() / max(confusion.sum(), 1)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "f1_weighted": float((f1 * support).sum()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, true_per_class)
        },
        "confusion_matrix": confusion.tolist(),
    }


def regression_report(sums: dict, count: float) -> dict:
    mse = sums["sq_err_sum"] / count  # (K,)
    mae = sums["abs_err_sum"] / count
    # R^2 = 1 - SSE / SST, SST from the sums: sum(y^2) - (sum y)^2 / n
    sst = sums["target_sq_sum"] - sums["target_sum"] ** 2 / count
    r2 = 1.0 - sums["sq_err_sum"] / np.maximum(sst, 1e-12)
    return {"mse": float(mse.mean()), "mae": float(mae.mean()), "r2": float(r2.mean())}


def train_metrics(outputs: jax.Array, targets: jax.Array, loss: jax.Array, task: str) -> dict:
    """Per-step training metrics, left on device; the loop fetches them only at log steps."""
    metrics = {"loss": loss}
    if task == "classification":
        metrics["accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == targets)
    return metrics


SCALAR_KEYS = ("loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "mse", "mae", "r2")


def scalars(report_: dict) -> dict[str, float]:
    """The scalar part of a report, for logs and summaries."""
    return {k: report_[k] for k in SCALAR_KEYS if k in report_}
