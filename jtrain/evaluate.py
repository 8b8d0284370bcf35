"""Exact evaluation of a split, and `evaluate(workdir)`: the latest checkpoint of a run on any split."""

from __future__ import annotations

import jax

from jtrain import components
from jtrain import metrics as metrics_lib
from jtrain import workdir as workdir_lib
from jtrain.errors import DataError, UserError


def evaluate_split(run: components.Run, state, role: str) -> dict:
    """Metrics over every example of the split `role` (val / test / train) exactly once."""
    totals = None
    batches = run.data.eval_batches(role, run.config.data, jax.process_index(), jax.process_count())
    for local_batch in batches:
        sums = run.eval_step(state, run.put_batch(local_batch))
        # On the host in float64: exact ROC (gathered scores) and R^2 (merged target deviations).
        totals = metrics_lib.accumulate(totals, sums)
    return run.method.report(totals, run.data, role)  # the training method's metrics (jtrain/methods)


def evaluate(workdir: str, split: str = "test", step: int | None = None, data=None) -> dict:
    """Evaluates a run's checkpoint (the latest unless `step`) on `split`: a role (train / val / test)
    of the run's config or any TFDS split spec of its builtin dataset (e.g. "train[:10%]").

    `data` is the source the run was trained on when it was given in Python (jtrain.train(..., data=source));
    otherwise the source is rebuilt from the workdir's config.json."""
    config = workdir_lib.read_config(workdir)
    if split not in ("train", "val", "test") and (data is not None or ":" in config.data.name):
        raise UserError(f"split {split!r}: a data source of your own evaluates its roles train / val / test")
    asked = split
    if split not in ("train", "val", "test"):
        with config.unlocked():
            config.data.splits.test = split
        split = "test"
    elif config.data.splits[split] == "none":
        raise UserError(f"split {split!r} is disabled in this run's config (data.splits.{split}='none')")
    try:
        run, state, step = workdir_lib.restore(workdir, config, step, data)
    except DataError as e:
        key = "config key 'data.splits.test': "
        if asked != split and str(e).startswith(key):  # the spec came from --split, not from the config
            raise DataError(f"--split {str(e)[len(key):]}") from e
        raise
    if split not in run.data.splits:
        raise UserError(f"split {split!r}: the data source {run.data.spec.name} has only {', '.join(run.data.splits)}")
    report = evaluate_split(run, state, split)
    report["step"] = step
    return report
