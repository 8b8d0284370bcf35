"""Exact evaluation of a split, and `evaluate(workdir)`: the latest checkpoint of a run on any split."""

from __future__ import annotations

import jax

from jtrain import components
from jtrain import data as data_lib
from jtrain import metrics as metrics_lib
from jtrain import workdir as workdir_lib
from jtrain.errors import UserError


def evaluate_split(run: components.Run, state, role: str) -> dict:
    """Metrics over every example of the split `role` (val / test / train) exactly once."""
    totals = None
    batches = data_lib.eval_batches(run.data, role, run.config.data, jax.process_index(), jax.process_count())
    for local_batch in batches:
        sums = run.eval_step(state, run.put_batch(local_batch))
        # On the host in float64: exact ROC (gathered scores) and R^2 (merged target deviations).
        totals = metrics_lib.accumulate(totals, sums)
    return run.method.report(totals, run.data, role)  # the training method's metrics (jtrain/methods)


def evaluate(workdir: str, split: str = "test", step: int | None = None) -> dict:
    """Evaluates a run's checkpoint (the latest unless `step`) on `split`: a role (train / val / test)
    of the run's config or any TFDS split spec of its dataset (e.g. "train[:10%]")."""
    config = workdir_lib.read_config(workdir)
    if split not in ("train", "val", "test"):
        with config.unlocked():
            config.data.splits.test = split
        split = "test"
    elif config.data.splits[split] == "none":
        raise UserError(f"split {split!r} is disabled in this run's config (data.splits.{split}='none')")
    run, state, step = workdir_lib.restore(workdir, config, step)
    report = evaluate_split(run, state, split)
    report["step"] = step
    return report
