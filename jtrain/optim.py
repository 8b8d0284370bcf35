"""The optax chain from the `optim` and `schedule` config sections: [clip] -> optimizer with schedule."""

from __future__ import annotations

import difflib

import jax
import ml_collections
import optax

from jtrain.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_linear")


def build_schedule(config: ml_collections.ConfigDict, peak: float, total_steps: int) -> optax.Schedule:
    warmup = min(config.warmup_steps, total_steps)
    end = peak * config.end_factor
    if config.name == "constant":
        if warmup:
            return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
        return optax.constant_schedule(peak)
    if config.name == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end_value=end)
    if config.name == "warmup_linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.linear_schedule(peak, end, max(total_steps - warmup, 1))],
            [warmup],
        )
    raise ConfigError(f"config key 'schedule.name': unknown schedule {config.name!r}{_hint(config.name, SCHEDULES)}; "
                      f"known: {', '.join(SCHEDULES)}")


def decay_mask(params) -> object:
    """Weight decay applies to kernels and embeddings, not to biases and norm scales (1-D leaves)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def build(optim: ml_collections.ConfigDict, schedule: ml_collections.ConfigDict,
          total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    lr = build_schedule(schedule, optim.learning_rate, total_steps)
    if optim.name == "sgd":
        tx = optax.sgd(lr, momentum=optim.momentum or None, nesterov=optim.nesterov)
        if optim.weight_decay:
            tx = optax.chain(optax.add_decayed_weights(optim.weight_decay, mask=decay_mask), tx)
    elif optim.name == "adamw":
        tx = optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay, mask=decay_mask)
    else:
        raise ConfigError(f"config key 'optim.name': unknown optimizer {optim.name!r}{_hint(optim.name, OPTIMIZERS)}; "
                          f"known: {', '.join(OPTIMIZERS)}")
    if optim.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
    return tx, lr


def _hint(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
