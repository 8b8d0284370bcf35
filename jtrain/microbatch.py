"""Gradient accumulation inside one train step (`optim.accumulate_steps = k`).

The step's batch is split into k micro-batches that run one after another under `lax.scan`, so activations are
held for B/k examples at a time; their gradients are averaged and the optimizer updates once. With equal-sized
micro-batches the mean of the micro-batch mean losses is the batch mean loss, so the update equals the one from
the whole batch at once (up to float summation order) for models without batch statistics. Batch norm sees each
micro-batch separately (its running statistics are updated k times per step), and each micro-batch draws its
own dropout key.

Accumulating here rather than with `optax.MultiSteps` keeps one train step = one update (the schedule, logged
step and checkpoints count updates), keeps clipping on the full gradient, and adds no optimizer state.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jtrain.errors import ConfigError

# fn(params, batch, model_state, rng) -> (objective, (loss, outputs, new_model_state))
LossOf = Callable[[Any, dict, Any, jax.Array], tuple[jax.Array, tuple[jax.Array, jax.Array, Any]]]


def split(batch: dict, k: int) -> dict:
    """(B, ...) arrays -> (k, B/k, ...). Micro-batch i takes rows i, i+k, i+2k, ...: the batch is sharded over
    devices in contiguous rows, so every micro-batch stays spread over all devices."""

    def one(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)  # (k, B/k, ...)

    return jax.tree.map(one, batch)


def merge(stacked: jax.Array) -> jax.Array:
    """Inverse of `split` for one array: (k, B/k, ...) -> (B, ...) in the original row order."""
    swapped = jnp.swapaxes(stacked, 0, 1)  # (B/k, k, ...)
    return swapped.reshape(swapped.shape[0] * swapped.shape[1], *swapped.shape[2:])


def value_and_grad(loss_of: LossOf, params: Any, batch: dict, model_state: Any, rng: jax.Array, k: int):
    """Like `jax.value_and_grad(loss_of, has_aux=True)(params, batch, model_state, rng)`, over k micro-batches:
    objective, loss and gradients are means over them, outputs come back in batch order, model state is the last."""
    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    if k == 1:
        return grad_fn(params, batch, model_state, rng)

    def body(carry, xs):
        grad_sum, objective_sum, loss_sum, state = carry
        micro, index = xs
        (objective, (loss, outputs, state)), grads = grad_fn(params, micro, state, jax.random.fold_in(rng, index))
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        return (grad_sum, objective_sum + objective, loss_sum + loss, state), outputs

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), model_state)
    (grad_sum, objective_sum, loss_sum, state), outputs = jax.lax.scan(body, init, (split(batch, k), jnp.arange(k)))
    grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grad_sum, params)
    return (objective_sum / k, (loss_sum / k, jax.tree.map(merge, outputs), state)), grads


def check(batch_size: int, k: int, data_devices: int) -> None:
    """Each micro-batch must split evenly over the data-parallel devices."""
    if batch_size % k or (batch_size // k) % data_devices:
        raise ConfigError(f"config key 'optim.accumulate_steps': {k} micro-batches of data.batch_size {batch_size} "
                          f"must each divide evenly over {data_devices} data-parallel devices")
