"""The one step skeleton every training method goes through, and the eval step.

`train_step(state, batch) -> (state, metrics)`, `eval_step(state, batch) -> sums`. Model, optimizer and method
(jtrain/methods) are closed over (never static positional args), so `jax.jit` sees only arrays. The loop jits
them with donated state and explicit shardings (jtrain/components.py).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jtrain import microbatch
from jtrain.methods.base import Batch, Method
from jtrain.state import TrainState


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, method: Method,
                    schedule: optax.Schedule, on_nonfinite: str = "halt", *, penalty: Callable | None = None,
                    accumulate_steps: int = 1, grad_norm: bool = False
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The dropout key of the step, the gradient of `method.loss` (over micro-batches), the penalty, then
    `apply_update`. `on_nonfinite="skip"` drops an update whose loss or gradients are not finite (the step still
    counts, so data order and dropout keys stay aligned); "halt" applies it and the loop stops at the next check.
    `penalty(params)` (L1/L2, jtrain/losses.py) is added to the objective; the logged `loss` stays the data loss.
    `accumulate_steps` > 1 averages gradients over that many micro-batches (jtrain/microbatch.py).
    `grad_norm` adds the global gradient norm to the metrics (train.log_grad_norm).
    A method with `collect` makes the step's batch first (an RL rollout with the current params, from a key of
    the step's own); with `minibatches` the step makes one update per minibatch of it (`_updates`)."""

    def gradient_update(state: TrainState, batch: Batch, dropout_rng: jax.Array) -> tuple[TrainState, dict]:
        mutable = list(state.model_state)

        def loss_of(params, batch, model_state, dropout_rng):  # batch: the step's batch or one micro-batch of it
            loss, aux, new_model_state = method.loss(model, state, params, batch, model_state, dropout_rng, mutable)
            objective = loss + penalty(params) if penalty is not None else loss
            return objective, (loss, aux, dict(new_model_state))

        (objective, (loss, aux, new_model_state)), grads = microbatch.value_and_grad(
            loss_of, state.params, batch, state.model_state, dropout_rng, accumulate_steps)
        metrics = method.train_metrics(aux, batch, loss)
        if penalty is not None:
            metrics["penalty"] = objective - loss
        return apply_update(state, grads, new_model_state, metrics, tx, schedule, on_nonfinite, grad_norm)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        # A fresh dropout key per step, a function of (seed, step): resuming at step s redraws the same key.
        dropout_rng = jax.random.fold_in(state.rng, state.step)
        collected = {}
        if method.collect is not None:  # the method makes the step's batch itself (an RL rollout)
            state, batch, collected = method.collect(model, state, batch, jax.random.fold_in(dropout_rng, _COLLECT))
        if method.minibatches is None:
            state, metrics = gradient_update(state, batch, dropout_rng)
        else:
            state, metrics = _updates(gradient_update, state, method.minibatches(
                batch, jax.random.fold_in(dropout_rng, _SHUFFLE)), dropout_rng)
        return state, {**metrics, **collected}

    return train_step


_COLLECT, _SHUFFLE = 0x636F, 0x7368  # keys of a step's collect and minibatch order, apart from its dropout key


def _updates(update: Callable, state: TrainState, minibatches: Batch, dropout_rng: jax.Array
             ) -> tuple[TrainState, dict]:
    """One step of U optimizer updates, one per minibatch (U, ...) in order (Method.minibatches): the step and
    the learning rate stay those of the step; the metrics are the updates' means, non-finite if any was."""

    def one(carry, minibatch):
        state, index = carry
        new, metrics = update(state, minibatch, jax.random.fold_in(dropout_rng, index))
        return (new.replace(step=state.step), index + 1), metrics

    (state, _), metrics = jax.lax.scan(one, (state, jnp.zeros((), jnp.int32)), minibatches)
    out = {k: v.max() if k == "nonfinite" else v.mean() for k, v in metrics.items()}
    return state.replace(step=state.step + 1), out


def apply_update(state: TrainState, grads, new_model_state, metrics: dict, tx: optax.GradientTransformation,
                 schedule: optax.Schedule, on_nonfinite: str, grad_norm: bool = False) -> tuple[TrainState, dict]:
    """The end of every train step: the optimizer update, the learning rate (and with `grad_norm` the gradient
    norm) in the metrics, and the non-finite flag.

    "skip" must know before updating whether the gradients are finite, so it reduces over them every step.
    "halt" flags a non-finite loss only: gradients that go non-finite under a finite loss make the parameters
    non-finite, hence the next step's loss, and the loop checks the parameters before every save
    (jtrain/train.py). Another full pass over the gradients is a visible part of a small model's step on CPU
    (BENCHMARKS.md), which is why it is not made unless asked for."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(metrics["loss"])
    if grad_norm or on_nonfinite == "skip":
        norm = optax.global_norm(grads)
        finite &= jnp.isfinite(norm)
        if grad_norm:
            metrics["grad_norm"] = norm
    metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    new_model_state = dict(new_model_state)
    if on_nonfinite == "skip":
        keep_old = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        params = keep_old(params, state.params)
        opt_state = keep_old(opt_state, state.opt_state)
        new_model_state = keep_old(new_model_state, state.model_state)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=new_model_state)
    return new_state, metrics


def all_finite(tree) -> jax.Array:
    """() bool: every element of every leaf is finite (the loop's check of the parameters before a save)."""
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def make_eval_step(model: nn.Module, method: Method, decode: Callable | None = None) -> Callable[[TrainState, Batch], dict]:
    """(state, batch) -> the method's sums of the batch (jtrain/metrics.py accumulates them over a split).
    `decode` maps regression outputs and targets to the target's units first (a log target's exp)."""
    if decode is not None:
        model = _Decoded(model, decode)

    def eval_step(state: TrainState, batch: Batch) -> dict:
        if decode is not None:
            batch = {**batch, "targets": decode(batch["targets"])}
        return method.eval_sums(model, state, batch)

    return eval_step


class _Decoded:
    """The model with `decode` applied to its outputs: the metrics see predictions in the target's units."""

    def __init__(self, model: nn.Module, decode: Callable):
        self.model, self.decode = model, decode

    def apply(self, *args, **kwargs):
        out = self.model.apply(*args, **kwargs)
        return (self.decode(out[0]), *out[1:]) if isinstance(out, tuple) else self.decode(out)
