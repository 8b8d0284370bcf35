"""The optax chain from the `optim` and `schedule` config sections:

    [clip by value] -> [clip by global norm] -> optimizer(learning-rate schedule, weight decay)

and, when `optim.policy` has rules (jtrain/policy.py), the optimizer part becomes an optax partition: one
optimizer per distinct (lr multiplier, wd multiplier) group and a stateless freeze for frozen parameters.

Weight decay: decoupled (optax's own) for adamw, lion, lamb and adafactor; for sgd, adam, rmsprop and adagrad it
is added to the gradient before the optimizer (coupled L2, PyTorch's `weight_decay`). Either way kernels and
embeddings decay and 1-D parameters (biases, norm scales) do not.

Gradient accumulation (`optim.accumulate_steps`) is not an optax transform here: the train step splits each batch
into micro-batches and averages their gradients (jtrain/microbatch.py), so the chain always sees the full gradient.
"""

from __future__ import annotations

import difflib
import fractions
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jtrain import policy as policy_lib
from jtrain.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "lion", "adafactor", "lamb")
SCHEDULES = ("constant", "step", "multistep", "exponential", "cosine", "warmup_linear", "one_cycle", "piecewise")
UNITS = ("steps", "epochs")
_DECOUPLED = ("adamw", "lion", "lamb", "adafactor")  # optimizers that take weight decay themselves


# ---------------------------------------------------------------------------------------------- schedules


def build_schedule(config: ml_collections.ConfigDict, peak: float, total_steps: int,
                   steps_per_epoch: float | fractions.Fraction | None = None) -> optax.Schedule:
    """The learning rate as a function of the optimizer step. `steps_per_epoch` (the training split size over
    the batch size) turns the epoch-valued fields into steps when `schedule.unit` is "epochs"."""
    need(config.unit in UNITS, "schedule.unit", f"must be one of {', '.join(UNITS)}, got {config.unit!r}")
    warmup = min(config.warmup_steps, total_steps)
    end = peak * config.end_factor
    name = config.name
    if name == "constant":
        if warmup:
            return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
                                        [warmup])
        return optax.constant_schedule(peak)
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end_value=end)
    if name == "warmup_linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.linear_schedule(peak, end, max(total_steps - warmup, 1))],
            [warmup],
        )
    if name == "one_cycle":
        need(0.0 < config.pct_start < 1.0, "schedule.pct_start", f"must be in (0, 1), got {config.pct_start}")
        need(config.div_factor > 0, "schedule.div_factor", "must be > 0")
        need(config.final_div_factor > 0, "schedule.final_div_factor", "must be > 0")
        # PyTorch's OneCycleLR (cosine annealing): peak / div_factor -> peak -> peak / div_factor / final_div_factor.
        return optax.cosine_onecycle_schedule(max(total_steps, 2), peak, config.pct_start, config.div_factor,
                                              config.final_div_factor)
    if name not in ("step", "multistep", "exponential", "piecewise"):
        raise ConfigError(f"config key 'schedule.name': unknown schedule {name!r}{_hint(name, SCHEDULES)}; "
                          f"known: {', '.join(SCHEDULES)}")

    # The decays below count whole units (steps or epochs) done; boundaries are absolute, warmup or not.
    units = _Units(config.unit, steps_per_epoch)
    gamma = config.gamma
    need(gamma > 0, "schedule.gamma", f"must be > 0, got {gamma}")
    if name == "step":
        need(config.step_size > 0, "schedule.step_size", f"must be > 0, got {config.step_size}")
        periods = units.periods_done(config.step_size, total_steps)
        base = lambda count: peak * jnp.power(gamma, periods(count))
    elif name == "multistep":
        milestones = _increasing_ints(config.milestones, "schedule.milestones")
        need(len(milestones) > 0, "schedule.milestones", "multistep needs at least one milestone, e.g. (30, 80)")
        passed = units.boundaries_passed(milestones)
        base = lambda count: peak * jnp.power(gamma, passed(count))
    elif name == "exponential":
        if config.unit == "steps":  # decays every step, smoothly
            base = lambda count: peak * jnp.power(gamma, jnp.asarray(count, jnp.float32))
        else:  # PyTorch's ExponentialLR, stepped once per epoch
            epochs = units.periods_done(1, total_steps)
            base = lambda count: peak * jnp.power(gamma, epochs(count))
    else:  # piecewise
        boundaries = _increasing_ints(config.boundaries, "schedule.boundaries")
        values = tuple(config.factors)
        need(len(values) == len(boundaries) + 1 and all(isinstance(v, (int, float)) and v >= 0 for v in values),
             "schedule.factors", f"needs len(boundaries) + 1 = {len(boundaries) + 1} factors >= 0, got {values!r}")
        passed = units.boundaries_passed(boundaries)
        factors = jnp.asarray(values, jnp.float32)  # (len(boundaries) + 1,) multipliers of the peak
        base = lambda count: peak * factors[passed(count)]
    if not warmup:
        return base
    return lambda count: base(count) * jnp.minimum(jnp.asarray(count, jnp.float32) / warmup, 1.0)


class _Units:
    """Converts `schedule.unit` values into optimizer steps. Epoch e starts at step ceil(e * steps_per_epoch):
    the first step whose batch begins at or after example e * N (batches may straddle epochs)."""

    def __init__(self, unit: str, steps_per_epoch):
        need(unit in UNITS, "schedule.unit", f"must be one of {', '.join(UNITS)}, got {unit!r}")
        if unit == "epochs" and not steps_per_epoch:
            raise ConfigError("config key 'schedule.unit': 'epochs' needs the steps per epoch (the training loop "
                              "passes data size / batch size); call optim.build(..., steps_per_epoch=...)")
        self.unit = unit
        # Exact rational arithmetic, so a boundary is never off by one step through float rounding.
        self.spe = fractions.Fraction(steps_per_epoch).limit_denominator(1 << 20) if steps_per_epoch else None

    def first_step(self, units: int) -> int:
        return units if self.unit == "steps" else math.ceil(units * self.spe)

    def boundaries_passed(self, boundaries: tuple[int, ...]) -> Callable:
        """count -> how many of `boundaries` (in units) the step `count` has reached."""
        steps = np.asarray([self.first_step(b) for b in boundaries], np.int32)  # (n,) increasing
        return lambda count: jnp.searchsorted(steps, jnp.asarray(count, jnp.int32), side="right")

    def periods_done(self, every: int, total_steps: int) -> Callable:
        """count -> how many whole periods of `every` units have passed (StepLR's floor(epoch / step_size))."""
        if self.unit == "steps":
            return lambda count: jnp.asarray(count, jnp.int32) // every
        # Every boundary up to the end of training (and one past it, for evaluating at count == total_steps).
        boundaries, k = [], 1
        while not boundaries or self.first_step(boundaries[-1]) <= total_steps:
            boundaries.append(k * every)
            k += 1
        return self.boundaries_passed(tuple(boundaries))


def _increasing_ints(values, key: str) -> tuple[int, ...]:
    values = tuple(values)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    need(ok and list(values) == sorted(set(values)), key, f"must be strictly increasing integers > 0, got {values!r}")
    return values


# ---------------------------------------------------------------------------------------------- optimizers


def decay_mask(params) -> object:
    """Weight decay applies to kernels and embeddings, not to biases and norm scales (1-D leaves)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def optimizer(config: ml_collections.ConfigDict, learning_rate: optax.ScalarOrSchedule,
              weight_decay: float) -> optax.GradientTransformation:
    """The optimizer named by `optim.name`, as optax defines it, with the given learning rate and decay."""
    c, lr, wd, mask = config, learning_rate, weight_decay, decay_mask
    momentum = c.momentum or None
    if c.name == "sgd":
        tx = optax.sgd(lr, momentum=momentum, nesterov=c.nesterov)
    elif c.name == "adam":
        tx = optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)
    elif c.name == "adamw":
        tx = optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=wd, mask=mask)
    elif c.name == "rmsprop":
        tx = optax.rmsprop(lr, decay=c.rmsprop_decay, eps=c.eps, momentum=momentum, nesterov=c.nesterov)
    elif c.name == "adagrad":
        tx = optax.adagrad(lr, eps=c.eps)
    elif c.name == "lion":
        tx = optax.lion(lr, b1=c.b1, b2=c.b2, weight_decay=wd, mask=mask)
    elif c.name == "lamb":
        tx = optax.lamb(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=wd, mask=mask)
    elif c.name == "adafactor":
        # Adafactor's own defaults otherwise: factored second moments, update clipping, parameter-scale steps.
        tx = optax.adafactor(lr, momentum=momentum, weight_decay_rate=wd or None, weight_decay_mask=mask)
    else:
        raise ConfigError(f"config key 'optim.name': unknown optimizer {c.name!r}{_hint(c.name, OPTIMIZERS)}; "
                          f"known: {', '.join(OPTIMIZERS)}")
    if wd and c.name not in _DECOUPLED:
        tx = optax.chain(optax.add_decayed_weights(wd, mask=mask), tx)
    return tx


def build(optim: ml_collections.ConfigDict, schedule: ml_collections.ConfigDict, total_steps: int,
          steps_per_epoch: float | fractions.Fraction | None = None, updates_per_step: int = 1,
          ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optax chain, learning-rate schedule) from the config; the schedule is what the step logs. With
    `updates_per_step` > 1 (a method's minibatches, e.g. PPO's) the chain counts updates, and its learning rate
    stays the schedule's at the step they belong to."""
    need(optim.grad_clip_value >= 0, "optim.grad_clip_value", "must be >= 0")
    need(optim.grad_clip_norm >= 0, "optim.grad_clip_norm", "must be >= 0")
    per_step = build_schedule(schedule, optim.learning_rate, total_steps, steps_per_epoch)
    lr = per_step if updates_per_step == 1 else (lambda count: per_step(count // updates_per_step))
    optimizer(optim, lr, optim.weight_decay)  # fail on an unknown name now, not at the first init
    rules = policy_lib.parse(optim.policy)
    clipping = []
    if optim.grad_clip_value:
        clipping.append(optax.clip(optim.grad_clip_value))
    if optim.grad_clip_norm:
        clipping.append(optax.clip_by_global_norm(optim.grad_clip_norm))
    if not rules:
        return optax.chain(*clipping, optimizer(optim, lr, optim.weight_decay)), per_step
    return with_policy(rules, clipping, lambda p: optimizer(optim, _scaled(lr, p.lr_mult),
                                                            optim.weight_decay * p.wd_mult)), per_step


# ---------------------------------------------------------------------------------------------- the policy table


def freeze() -> optax.GradientTransformation:
    """Stateless: every update is -0.0, and x + (-0.0) == x bit for bit for every x (+0.0 would turn a -0.0
    parameter into +0.0), so frozen parameters never change."""
    return optax.stateless(lambda updates, params=None: jax.tree.map(lambda u: jnp.full_like(u, -0.0), updates))


def with_policy(rules: list[policy_lib.Rule], clipping: list[optax.GradientTransformation],
                group_optimizer: Callable[[policy_lib.ParamPolicy], optax.GradientTransformation],
                ) -> optax.GradientTransformation:
    """`clipping` then an optax partition by policy group. The groups depend on the parameter tree, so the chain
    is assembled from it in init and again (identically) in each update."""

    def chain_for(tree) -> optax.GradientTransformation:
        table = policy_lib.resolve(tree, rules)
        is_policy = lambda x: isinstance(x, policy_lib.ParamPolicy)  # noqa: E731
        groups = {p.label: p for p in jax.tree.leaves(table, is_leaf=is_policy)}
        transforms = {label: freeze() if p.frozen else group_optimizer(p) for label, p in groups.items()}
        labels = jax.tree.map(lambda p: p.label, table, is_leaf=is_policy)
        parts = list(clipping)
        if clipping and policy_lib.FROZEN in groups:
            # Frozen parameters' gradients must not count towards the clipping norm.
            frozen = jax.tree.map(lambda p: p.frozen, table, is_leaf=is_policy)
            parts.insert(0, optax.masked(optax.set_to_zero(), frozen))
        return optax.chain(*parts, optax.partition(transforms, labels))

    def init(params):
        return chain_for(params).init(params)

    def update(updates, state, params=None):
        return chain_for(updates).update(updates, state, params)

    return optax.GradientTransformation(init, update)


def _scaled(schedule: optax.Schedule, mult: float) -> optax.Schedule:
    return schedule if mult == 1.0 else (lambda count: schedule(count) * mult)


# ---------------------------------------------------------------------------------------------- helpers


def need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r}: {msg}")


def _hint(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
