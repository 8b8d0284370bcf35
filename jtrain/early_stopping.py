"""Tracks the best value of a validation metric: ranks checkpoints and decides when to stop early."""

from __future__ import annotations

import math

MINIMISED = ("loss", "mse", "mae")


def resolve_mode(metric: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "min" if metric in MINIMISED or metric.endswith("loss") else "max"


class BestTracker:
    """`update()` after each eval; `should_stop` once `patience` evals in a row failed to improve by `min_delta`."""

    def __init__(self, metric: str, mode: str, patience: int = 0, min_delta: float = 0.0):
        self.metric = metric
        self.mode = resolve_mode(metric, mode)
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_step = -1
        self.bad_evals = 0
        self.generation = 0  # how many times the best improved: ranks checkpoints for retention

    def rank(self, improved: bool) -> float:
        """Retention rank of the checkpoint saved after `update()`: newer bests rank higher, others lowest.
        Ranking by this (not by the raw metric) keeps exactly the checkpoints this tracker calls best, ties
        and min_delta included."""
        return float(self.generation) if improved else -1.0

    def update(self, step: int, metrics: dict) -> bool:
        """Returns whether `metrics` is a new best."""
        if self.metric not in metrics:
            from jtrain.errors import ConfigError

            raise ConfigError(f"config key 'eval.best_metric': {self.metric!r} is not a val metric; "
                              f"available: {', '.join(sorted(metrics))}")
        value = metrics[self.metric]
        gain = (self.best_value - value) if self.mode == "min" else (value - self.best_value)
        if gain > self.min_delta or self.best_step < 0:
            self.best_value, self.best_step, self.bad_evals = value, step, 0
            self.generation += 1
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "generation": self.generation}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.best_step, self.bad_evals = state["best_value"], state["best_step"], state["bad_evals"]
        self.generation = state["generation"]
