"""The Method record (documented in jtrain/methods/__init__.py), apart so that method modules import it alone."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    check_data: Callable[[Any], None]  # (DatasetSpec) -> None, raises ConfigError naming the key
    output_width: Callable[[Any], int]  # (DatasetSpec) -> the model's output width
    # (model, state, params, batch, model_state, rng, mutable) -> (loss (), aux (B, ...), new_model_state)
    loss: Callable[..., tuple[jax.Array, Any, Any]]
    train_metrics: Callable[[Any, Batch, jax.Array], dict]  # (aux, batch, loss) -> {name: () array}, with "loss"
    eval_sums: Callable[[Any, Any, Batch], dict]  # (model, state, batch) -> sums
    report: Callable[[dict, Any, str], dict]  # (accumulated sums, data, role) -> metrics
    log_keys: tuple[str, ...] = ("loss",)  # metrics shown in the log line
    task: str = ""  # the per-example loss's task for supervised learning (jtrain/losses.py)
    examples: str = ""  # DatasetSpec.examples of its batches: "" or "preference"
    layout: tuple[int, ...] = ()  # dims between the batch dim and one example's shape, e.g. (2,) for pairs
    init_state: Callable[[Any], Any] | None = None  # TrainState -> the state with the method's extras
    metrics: tuple[str, ...] = ()  # scalar metrics its evaluation reports, checked up front (eval.best_metric); () = not known
    begin: Callable[[Any], Any] | None = None  # applied once to the state training starts from
    # (the family's model, data source) -> the module the run trains, built around that network (None: it as is)
    wrap_model: Callable[[Any, Any], Any] | None = None
    check_batch: Callable[[int, int], None] | None = None  # (global batch, data-parallel size) -> None or ConfigError
    embed: Callable[[Any, Any, Any], Any] | None = None  # (model, state, inputs) -> (B, D) the frozen encoder's
    pictures: Callable[[Any, Any, Batch, Any], dict] | None = None  # (model, state, batch, key) -> {name: images}
    # (model, state, batch, rng) -> (B, C) class probabilities; rng None = evaluation mode, a key = dropout on
    # (one Monte Carlo pass). Per-example scores and active learning's queries use it (None: not a classifier)
    probabilities: Callable[[Any, Any, Batch, Any], Any] | None = None
    # (model, state, batch, rng) -> (state, batch, {name: () metric}): the step's data, made in the step (RL rollouts)
    collect: Callable[..., tuple[Any, Batch, dict]] | None = None
    minibatches: Callable[[Batch, Any], Batch] | None = None  # (batch, rng) -> (U, ...): U updates in one step
    updates_per_step: int = 1  # U, the optimizer updates of one step (with minibatches)
    rates: Callable[[float], dict] | None = None  # (train steps per second) -> the log's speed metrics
