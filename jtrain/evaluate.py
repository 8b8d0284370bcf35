"""Exact evaluation of a split, and `evaluate(workdir)`: the latest checkpoint of a run on any split."""

from __future__ import annotations

import os

import jax

from jtrain import checkpoint as checkpoint_lib
from jtrain import components, config as config_lib, lm_metrics
from jtrain import data as data_lib
from jtrain import metrics as metrics_lib
from jtrain.errors import UserError


def evaluate_split(run: components.Run, state, role: str) -> dict:
    """Metrics over every example of the split `role` (val / test / train) exactly once."""
    totals = None
    batches = data_lib.eval_batches(run.data, role, run.config.data, jax.process_index(), jax.process_count())
    for local_batch in batches:
        sums = run.eval_step(state, run.put_batch(local_batch))
        # On the host in float64: exact ROC (gathered scores) and R^2 (merged target deviations).
        totals = metrics_lib.accumulate(totals, sums)
    report = metrics_lib.report(totals, run.data.spec.class_names, target_scale=run.data.target_std)
    if run.task == "sequence":  # nats and bits per token and character, perplexity (jtrain/lm_metrics.py)
        report.update(lm_metrics.split_report(run, totals, role))
    return report


def evaluate(workdir: str, split: str = "test", step: int | None = None) -> dict:
    """Evaluates a run's checkpoint (the latest unless `step`) on `split`: a role (train / val / test)
    of the run's config or any TFDS split spec of its dataset (e.g. "train[:10%]")."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{config_path}: not found; is {workdir!r} a jtrain workdir?")
    with open(config_path) as f:
        config = config_lib.config_from_json(f.read())
    if split not in ("train", "val", "test"):
        with config.unlocked():
            config.data.splits.test = split
        split = "test"
    elif config.data.splits[split] == "none":
        raise UserError(f"split {split!r} is disabled in this run's config (data.splits.{split}='none')")
    run = components.build(config)
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{ckpt.directory}: no checkpoint to evaluate")
        target = checkpoint_lib.abstract_with_shardings(run.abstract_state, run.state_shardings)
        state, _ = ckpt.restore(step, target)
    finally:
        ckpt.close()
    report = evaluate_split(run, state, split)
    report["step"] = int(step)
    return report
