"""Per-example losses: `loss(outputs, targets) -> (B,)`; the step averages them (masked in evaluation)."""

from __future__ import annotations

import difflib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jtrain.errors import ConfigError

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def softmax_cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    def loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
        # logits (B, C); targets (B,) integer classes or (B, C) one-hot / probabilities.
        num_classes = logits.shape[-1]
        labels = jax.nn.one_hot(targets, num_classes) if targets.ndim == logits.ndim - 1 else targets
        if label_smoothing:
            labels = optax.smooth_labels(labels, label_smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)  # (B,)

    return loss


def mean_squared_error() -> LossFn:
    def loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
        targets = targets.reshape(outputs.shape).astype(jnp.float32)  # (B, K)
        return jnp.mean(jnp.square(outputs.astype(jnp.float32) - targets), axis=-1)  # (B,)

    return loss


# name -> (factory from the loss config, task the metrics are chosen for)
LOSSES = {
    "softmax_cross_entropy": (lambda c: softmax_cross_entropy(c.label_smoothing), "classification"),
    "mse": (lambda c: mean_squared_error(), "regression"),
}


def build(config: ml_collections.ConfigDict) -> tuple[LossFn, str]:
    """(per-example loss, task) from the `loss` config section."""
    if config.name not in LOSSES:
        close = difflib.get_close_matches(config.name, list(LOSSES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config key 'loss.name': unknown loss {config.name!r}{hint}; known: {', '.join(LOSSES)}")
    factory, task = LOSSES[config.name]
    return factory(config), task
