"""Exact metrics over a split.

On device, each eval batch reduces to sums (masked: padding contributes nothing); sums add across batches;
on the host, `report()` turns the totals into metrics. A confusion matrix is enough for accuracy and per-class
precision / recall / F1, so classification carries only that, the loss sum and (with eval.top_k) top-k hits.

Two quantities are not sums, and `accumulate()` (the host-side, float64 way evaluation adds batches) handles them:
- binary ROC / ROC-AUC are exact, so the batch's scores and labels travel under `EXAMPLES` and are gathered on
  the host (padding dropped); the curve is computed in NumPy as scikit-learn does.
- R^2's total sum of squares: each batch brings its targets' squared deviations from the batch mean, merged by
  Chan's parallel-variance formula, because sum(y^2) - (sum y)^2 / n cancels catastrophically in float32 when
  the targets' mean is large against their spread. Plainly added batch sums (several `m2_groups`) still work,
  through that formula.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

EXAMPLES = "examples"  # per-example arrays in a batch's sums, gathered rather than added


# ---------------------------------------------------------------------------------------------- on device


def classification_sums(logits: jax.Array, targets: jax.Array, mask: jax.Array, losses: jax.Array,
                        top_k: int = 0) -> dict:
    # logits (B, C); targets (B,) int; mask (B,) bool; losses (B,)
    num_classes = logits.shape[-1]
    weight = mask.astype(jnp.float32)  # (B,)
    true = jax.nn.one_hot(targets, num_classes, dtype=jnp.float32) * weight[:, None]  # (B, C)
    pred = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.float32)  # (B, C)
    sums = {
        "count": weight.sum(),
        "loss_sum": (losses * weight).sum(),
        # Exact in float32 up to 2**24 examples per cell.
        "confusion": true.T @ pred,  # (C, C): rows = true class, columns = predicted class
    }
    if top_k:
        # A hit when fewer than k classes score strictly higher than the true one (ties count in its favour).
        true_logit = jnp.take_along_axis(logits, targets[:, None].astype(jnp.int32), axis=-1)  # (B, 1)
        rank = jnp.sum(logits > true_logit, axis=-1)  # (B,)
        sums["top_k_hits"] = ((rank < top_k) * weight).sum()
    return sums


def binary_sums(logits: jax.Array, targets: jax.Array, mask: jax.Array, losses: jax.Array) -> dict:
    # logits (B, 1) log-odds of class 1; targets (B,) int 0/1; mask (B,) bool; losses (B,)
    score = logits.reshape(targets.shape[0]).astype(jnp.float32)  # (B,)
    predicted = (score > 0).astype(jnp.int32)  # probability > 0.5
    weight = mask.astype(jnp.float32)
    true = jax.nn.one_hot(targets, 2, dtype=jnp.float32) * weight[:, None]  # (B, 2)
    pred = jax.nn.one_hot(predicted, 2, dtype=jnp.float32)  # (B, 2)
    return {
        "count": weight.sum(),
        "loss_sum": (losses * weight).sum(),
        "confusion": true.T @ pred,  # (2, 2)
        # Logits rank examples exactly as probabilities do, without sigmoid's saturation to 1.0 in float32.
        EXAMPLES: {"score": score, "label": targets.astype(jnp.int32), "mask": mask},
    }


def regression_sums(outputs: jax.Array, targets: jax.Array, mask: jax.Array, losses: jax.Array) -> dict:
    # outputs (B, K); targets (B,) or (B, K); mask (B,)
    targets = targets.reshape(outputs.shape).astype(jnp.float32)
    weight = mask.astype(jnp.float32)[:, None]  # (B, 1)
    err = outputs.astype(jnp.float32) - targets  # (B, K)
    count = weight.sum()
    batch_mean = (weight * targets).sum(0) / jnp.maximum(count, 1.0)  # (K,)
    return {
        "count": count,
        "loss_sum": (losses * weight[:, 0]).sum(),
        "sq_err_sum": (weight * err**2).sum(0),  # (K,)
        "abs_err_sum": (weight * jnp.abs(err)).sum(0),  # (K,)
        "target_sum": (weight * targets).sum(0),  # (K,)
        "target_sq_sum": (weight * targets**2).sum(0),  # (K,)
        "target_m2": (weight * (targets - batch_mean) ** 2).sum(0),  # (K,) squared deviations from the batch mean
        "m2_groups": jnp.ones((), jnp.float32),  # how many separately centred groups target_m2 adds up
    }


def sequence_sums(outputs: jax.Array, targets: jax.Array, mask: jax.Array, losses: jax.Array) -> dict:
    del outputs, targets  # the loss (per sequence) is the metric
    # mask (B, T) marks real tokens: losses (B,) are per-row means over them, so count and loss_sum are token
    # sums (exact perplexity over a split); a (B,) mask counts whole sequences.
    weight = mask.astype(jnp.float32).reshape(mask.shape[0], -1).sum(-1)  # (B,) tokens per row (or 0/1)
    return {"count": weight.sum(), "loss_sum": (losses * weight).sum()}


def sums_fn(task: str, top_k: int = 0) -> Callable:
    """The eval-batch reduction for a task (see jtrain/losses.py for the tasks)."""
    if task == "classification":
        return lambda logits, targets, mask, losses: classification_sums(logits, targets, mask, losses, top_k)
    return {"binary": binary_sums, "regression": regression_sums, "sequence": sequence_sums}[task]


def train_metrics(outputs: jax.Array, targets: jax.Array, loss: jax.Array, task: str) -> dict:
    """Per-step training metrics, left on device; the loop fetches them only at log steps."""
    metrics = {"loss": loss}
    if task == "classification":
        metrics["accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == targets)
    elif task == "binary":
        metrics["accuracy"] = jnp.mean((outputs.reshape(targets.shape) > 0) == (targets > 0))
    return metrics


# ---------------------------------------------------------------------------------------------- on the host


def accumulate(totals: dict | None, batch_sums: dict) -> dict:
    """Adds one eval batch's sums to the running totals, on the host in float64; gathers `EXAMPLES` (dropping
    padding) and merges the targets' squared deviations exactly (Chan et al.). Returns the new totals."""
    batch = dict(jax.device_get(batch_sums))
    examples = batch.pop(EXAMPLES, None)
    batch = {k: np.asarray(v, np.float64) for k, v in batch.items()}
    if totals is None:
        totals = {k: np.zeros_like(v) for k, v in batch.items()}
        if examples is not None:
            totals[EXAMPLES] = {k: [] for k in examples if k != "mask"}
    out = dict(totals)
    if "target_m2" in batch:
        out["target_m2"] = _merge_m2(totals, batch)
        out["m2_groups"] = np.float64(1.0)
    for k, v in batch.items():
        if k not in ("target_m2", "m2_groups"):
            out[k] = totals[k] + v
    if examples is not None:
        keep = np.asarray(examples["mask"], bool)
        out[EXAMPLES] = {k: totals[EXAMPLES][k] + [np.asarray(examples[k])[keep]] for k in totals[EXAMPLES]}
    return out


def _merge_m2(a: dict, b: dict) -> np.ndarray:
    n_a, n_b = a["count"], b["count"]
    if n_b == 0:
        return a["target_m2"]
    if n_a == 0:
        return b["target_m2"]
    delta = b["target_sum"] / n_b - a["target_sum"] / n_a  # (K,) difference of the two means
    return a["target_m2"] + b["target_m2"] + delta**2 * n_a * n_b / (n_a + n_b)


def report(sums: dict, class_names: tuple[str, ...] = (), target_scale=None) -> dict:
    """Host-side metrics from summed totals (NumPy or device arrays; one batch's sums or `accumulate`d ones).

    `target_scale` (K,) undoes the pipeline's standardisation of regression targets: MSE and MAE come out in
    target units (R^2 does not change; `loss` stays the training objective, in standardised units)."""
    sums = dict(jax.device_get(sums))
    examples = sums.pop(EXAMPLES, None)
    sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
    count = sums["count"]
    out = {"loss": float(sums["loss_sum"] / count), "num_examples": int(round(float(count)))}
    if "confusion" in sums:
        out.update(confusion_report(sums["confusion"], class_names))
        if "top_k_hits" in sums:
            out["top_k_accuracy"] = float(sums["top_k_hits"] / count)
        if examples is not None:
            out.update(binary_report(sums["confusion"], *_gathered(examples)))
    elif "sq_err_sum" in sums:
        out.update(regression_report(sums, count, target_scale))
    return out


def _gathered(examples: dict) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of the real examples, from accumulated lists or from one batch's masked arrays."""
    if "mask" in examples:
        keep = np.asarray(examples["mask"], bool)
        return np.asarray(examples["score"])[keep], np.asarray(examples["label"])[keep]
    return np.concatenate(examples["score"]), np.concatenate(examples["label"])


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


def binary_report(confusion: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> dict:
    """Positive-class (label 1) precision / recall / F1 (scikit-learn's average='binary'), ROC curve and AUC."""
    positive = confusion_report(confusion)["per_class"]["1"]
    out = {"precision": positive["precision"], "recall": positive["recall"], "f1": positive["f1"]}
    if 0 < labels.sum() < len(labels):  # ROC needs both classes
        fpr, tpr = roc_curve(scores, labels)
        out["roc_auc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids under the curve
        out["roc_curve"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return out


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct score threshold, highest first, from (0, 0) to (1, 1); points on a straight
    segment are dropped (scikit-learn's roc_curve with drop_intermediate=True)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    scores, labels = np.asarray(scores, np.float64)[order], np.asarray(labels, np.float64)[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(labels)[last_of_each_score]  # true positives above each threshold
    fps = 1 + last_of_each_score - tps
    if len(tps) > 2:
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps = tps[corner], fps[corner]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1]


def regression_report(sums: dict, count: float, target_scale=None) -> dict:
    scale = np.ones_like(sums["sq_err_sum"]) if target_scale is None else np.asarray(target_scale, np.float64)
    mse = sums["sq_err_sum"] / count * scale**2  # (K,)
    mae = sums["abs_err_sum"] / count * scale
    if "target_m2" in sums and sums["m2_groups"] == 1:
        sst = sums["target_m2"]  # one batch, or batches merged exactly by accumulate()
    else:
        # Plainly added batch sums: SST = sum(y^2) - (sum y)^2 / n, fine unless |mean| >> spread.
        sst = sums["target_sq_sum"] - sums["target_sum"] ** 2 / count
    r2 = 1.0 - sums["sq_err_sum"] / np.maximum(sst, 1e-12)
    return {"mse": float(mse.mean()), "mae": float(mae.mean()), "r2": float(r2.mean())}


# The supervised metrics, in the order logs and tables show them; a method's own come after them.
SCALAR_KEYS = ("loss", "bits_per_char", "bits_per_token", "perplexity", "accuracy", "top_k_accuracy", "precision",
               "recall", "f1", "roc_auc", "precision_macro",
               "recall_macro", "f1_macro", "f1_weighted", "mse", "mae", "r2")


def scalars(report_: dict) -> dict[str, float]:
    """The scalar metrics of an evaluation report (its float entries; counts such as num_examples are ints), for
    logs and summaries: `SCALAR_KEYS` first, then those of the training method (jtrain/methods) in its order."""
    known = {k: report_[k] for k in SCALAR_KEYS if k in report_}
    return {**known, **{k: v for k, v in report_.items() if k not in known and _is_float(v)}}


def _is_float(value) -> bool:
    return isinstance(value, (float, np.floating))


# The scalar metrics an evaluation reports per task (report above; lm_metrics for sequences): names a config may
# ask for (eval.best_metric, a sweep's objective) are checked against them before training.
_CLASSIFICATION = ("loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted")
REPORTED = {
    "classification": _CLASSIFICATION,
    "binary": _CLASSIFICATION + ("precision", "recall", "f1", "roc_auc"),
    "regression": ("loss", "mse", "mae", "r2"),
    "sequence": ("loss", "bits_per_token", "perplexity", "bits_per_char"),
}


def reported(task: str, top_k: int = 0) -> tuple[str, ...]:
    extra = ("top_k_accuracy",) if top_k and task in ("classification", "binary") else ()
    return REPORTED.get(task, ()) + extra
