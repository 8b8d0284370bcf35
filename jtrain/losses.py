"""Per-example losses `loss(outputs, targets) -> (B,)`, the task each implies, and the L1/L2 penalties.

Supervised learning (jtrain/methods/supervised.py) averages per-example losses over the batch (masked in
evaluation); the step adds the penalties in training. A loss's task picks the model's output width and the evaluation metrics:

    classification  (B, C) logits, int labels         accuracy, top-k, P/R/F1, confusion matrix
    binary          (B, 1) logit, labels 0/1           accuracy, P/R/F1, ROC curve and ROC-AUC
    regression      (B, K) values, float targets       MSE, MAE, R^2
    sequence        (B, T, V) logits, (B, T) tokens    loss, bits per token / character, perplexity

A user-supplied loss is named "package.module:function" in `loss.name`: a function `(outputs, targets) -> (B,)`
whose task is `loss.task`, or else the function's `task` attribute.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jtrain.errors import ConfigError

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
TASKS = ("classification", "binary", "regression", "sequence")


def softmax_cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    def loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
        # logits (B, C); targets (B,) integer classes or (B, C) one-hot / probabilities.
        num_classes = logits.shape[-1]
        labels = jax.nn.one_hot(targets, num_classes) if targets.ndim == logits.ndim - 1 else targets
        if label_smoothing:
            labels = optax.smooth_labels(labels, label_smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)  # (B,)

    return loss


def sigmoid_binary_cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """One logit per example: the log-odds of the positive class (label 1)."""

    def loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
        # logits (B, 1) or (B,); targets (B,) labels 0/1 (or probabilities of the positive class)
        logits = logits.reshape(targets.shape[0]).astype(jnp.float32)  # (B,)
        labels = targets.astype(jnp.float32)  # (B,)
        if label_smoothing:
            labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing  # optax.smooth_labels with 2 classes
        return optax.sigmoid_binary_cross_entropy(logits, labels)  # (B,)

    return loss


def _regression(per_element: Callable[[jax.Array, jax.Array], jax.Array]) -> LossFn:
    """Mean over the output dimensions of an element-wise loss of (outputs - targets)."""

    def loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
        targets = targets.reshape(outputs.shape).astype(jnp.float32)  # (B, K)
        return jnp.mean(per_element(outputs.astype(jnp.float32), targets), axis=-1)  # (B,)

    return loss


def mean_squared_error() -> LossFn:
    return _regression(lambda y, t: jnp.square(y - t))


def mean_absolute_error() -> LossFn:
    return _regression(lambda y, t: jnp.abs(y - t))


def huber(delta: float = 1.0) -> LossFn:
    """0.5 e^2 for |e| <= delta, delta (|e| - 0.5 delta) above (PyTorch's HuberLoss, optax.huber_loss)."""
    return _regression(lambda y, t: optax.huber_loss(y, t, delta=delta))


def masked_sequence_cross_entropy(label_smoothing: float = 0.0):
    """Cross-entropy of next-token logits, averaged over each sequence's real tokens.

    Returned function: `(logits (B, T, V), tokens (B, T) int, mask (B, T) | None) -> (B,)`; `mask` marks real
    tokens (None = all). A sequence with no real token has loss 0. For a token-weighted batch mean, weight each
    sequence's loss by its number of real tokens.
    """
    token_loss = softmax_cross_entropy(label_smoothing)

    def loss(logits: jax.Array, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        batch, length, vocab = logits.shape
        per_token = token_loss(logits.reshape(batch * length, vocab), tokens.reshape(batch * length))
        per_token = per_token.reshape(batch, length)  # (B, T)
        weight = jnp.ones((batch, length), jnp.float32) if mask is None else mask.astype(jnp.float32)  # (B, T)
        return (per_token * weight).sum(-1) / jnp.maximum(weight.sum(-1), 1.0)  # (B,)

    return loss


# name -> (factory from the loss config, task the metrics are chosen for)
LOSSES = {
    "softmax_cross_entropy": (lambda c: softmax_cross_entropy(c.label_smoothing), "classification"),
    "sigmoid_binary_cross_entropy": (lambda c: sigmoid_binary_cross_entropy(c.label_smoothing), "binary"),
    "mse": (lambda c: mean_squared_error(), "regression"),
    "mae": (lambda c: mean_absolute_error(), "regression"),
    "huber": (lambda c: huber(c.huber_delta), "regression"),
    "masked_sequence_cross_entropy": (lambda c: masked_sequence_cross_entropy(c.label_smoothing), "sequence"),
}


def build(config: ml_collections.ConfigDict) -> tuple[LossFn, str]:
    """(per-example loss, task) from the `loss` config section."""
    if ":" in config.name:
        return _user_loss(config)
    if config.name not in LOSSES:
        close = difflib.get_close_matches(config.name, list(LOSSES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config key 'loss.name': unknown loss {config.name!r}{hint}; known: {', '.join(LOSSES)}, "
                          f"or 'package.module:function'")
    factory, task = LOSSES[config.name]
    return factory(config), task


def _user_loss(config: ml_collections.ConfigDict) -> tuple[LossFn, str]:
    module_name, _, attr = config.name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config key 'loss.name': cannot import {config.name!r}: {e}") from e
    task = config.task or getattr(fn, "task", "")
    if task not in TASKS:
        raise ConfigError(f"config key 'loss.task': {config.name} needs a task, one of {', '.join(TASKS)} "
                          f"(set loss.task or the function's .task attribute), got {task!r}")
    return fn, task


def output_width(task: str, num_classes: int) -> int:
    """The model's output width for a task: one logit per class (per vocabulary token for sequences), one for
    binary, one per regression target."""
    return num_classes if task in ("classification", "sequence") else 1


def token_mean(per_sequence: jax.Array, mask: jax.Array) -> jax.Array:
    """Batch mean over real tokens from per-sequence mean losses (B,) and the token mask (B, T): each row weighs
    by its number of real tokens, so a token counts the same in a full row as in a short one."""
    tokens = mask.astype(jnp.float32).sum(-1)  # (B,)
    return (per_sequence * tokens).sum() / jnp.maximum(tokens.sum(), 1.0)


def check_data(task: str, loss_name: str, target_dtype: str, num_classes: int, dataset: str) -> None:
    """Refuses a loss whose task does not fit the dataset's targets, naming the key."""
    if task in ("classification", "binary") and target_dtype != "int32":
        raise ConfigError(f"config key 'loss.name': {loss_name} needs class labels, but {dataset} has "
                          f"{target_dtype} targets (a regression loss such as mse fits)")
    if task == "regression" and target_dtype == "int32" and num_classes:
        raise ConfigError(f"config key 'loss.name': {loss_name} regresses numbers, but {dataset} has class labels "
                          f"({num_classes} classes); a classification loss such as cross_entropy fits")
    if task == "binary" and num_classes != 2:
        raise ConfigError(f"config key 'loss.name': {loss_name} needs two classes, {dataset} has {num_classes}")


# ---------------------------------------------------------------------------------------------- penalties


def penalty(config: ml_collections.ConfigDict) -> Callable[[object], jax.Array] | None:
    """params -> l1 * sum|w| + l2 * sum w^2 over kernels (ndim > 1: not biases or norm scales); None when both are 0.

    Note l2 * sum w^2 has gradient 2 * l2 * w: for plain SGD it equals weight decay of 2 * l2 (for adaptive
    optimizers it does not, which is why decoupled weight decay exists)."""
    l1, l2 = config.l1, config.l2
    if not (l1 or l2):
        return None

    def fn(params) -> jax.Array:
        kernels = [p.astype(jnp.float32) for p in jax.tree.leaves(params) if p.ndim > 1]
        total = jnp.zeros((), jnp.float32)
        if l1:
            total += l1 * sum(jnp.abs(k).sum() for k in kernels)
        if l2:
            total += l2 * sum(jnp.square(k).sum() for k in kernels)
        return total

    return fn
