"""The training loop, top to bottom: build -> init (resume > scratch) -> loop -> final eval -> summary.

    state, metrics = train_step(state, batch)      # pure, jitted, donated, sharded
    every train.log_every_steps: fetch metrics, write metrics.jsonl / TensorBoard, update the progress bar
    every eval.every_steps:      exact eval of the val split
    every checkpoint.every_steps: async Orbax save of state + data-iterator position

Metrics stay on device between log steps, so the host never waits for a step it does not need.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

import jtrain
from jtrain import checkpoint as checkpoint_lib
from jtrain import components
from jtrain import config as config_lib
from jtrain import data as data_lib
from jtrain import metrics as metrics_lib
from jtrain import plots, summary as summary_lib
from jtrain.evaluate import evaluate_split
from jtrain.progress import ProgressBar
from jtrain.state import count_params
from jtrain.writers import MetricWriter, read_metrics


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the run described by `config` in `workdir`; returns the summary dict."""
    # ------------------------------------------------------------------ build
    run = components.build(config)
    is_main = jax.process_index() == 0
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config_lib.to_json(config))
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep)
    train_iter = iter(data_lib.train_dataset(run.data, config.data, config.seed, jax.process_index(),
                                             jax.process_count()))
    meta = {"jtrain_version": jtrain.__version__, "config": config.to_dict()}

    # ------------------------------------------------------------------ init: resume > scratch
    start = ckpt.latest_step()
    if start is not None:
        target = checkpoint_lib.abstract_with_shardings(run.abstract_state, run.state_shardings)
        state, _ = ckpt.restore(start, target, train_iter)
    else:
        state, start = run.init(), 0

    total = run.total_steps
    writer = MetricWriter(workdir, enabled=is_main)
    progress = ProgressBar(total, initial=start, enabled=None if (config.train.progress and is_main) else False)
    if is_main:
        progress.write(
            f"jtrain: {config.model.name} ({count_params(state.params):,} parameters) on {config.data.name} "
            f"({run.data.num_train:,} training examples), mesh {dict(run.mesh.shape)}, "
            f"{'resuming at step ' + str(start) + ' of ' if start else ''}{total} steps -> {workdir}"
        )

    # ------------------------------------------------------------------ loop
    pending: list[dict] = []  # per-step metrics, still on device
    last_train: dict = {}
    tick, tick_step = time.perf_counter(), start
    for step in range(start, total):
        batch = run.put_batch(next(train_iter))
        state, step_metrics = run.train_step(state, batch)
        pending.append(step_metrics)
        progress.update()
        done = step + 1

        if done % config.train.log_every_steps == 0 or done == total:
            last_train = _mean_metrics(jax.device_get(pending))  # the one host sync per log interval
            pending = []
            now = time.perf_counter()
            last_train["steps_per_sec"] = (done - tick_step) / max(now - tick, 1e-9)
            last_train["examples_per_sec"] = last_train["steps_per_sec"] * config.data.batch_size
            tick, tick_step = now, done
            writer.write(done, "train", last_train)
            progress.set_metrics(loss=last_train["loss"], ex_per_s=last_train["examples_per_sec"])
            if not progress.enabled and is_main:
                progress.write(_log_line(done, total, "train", last_train))

        if config.eval.every_steps and done % config.eval.every_steps == 0 and done != total and "val" in run.data.sources:
            val = metrics_lib.scalars(evaluate_split(run, state, "val"))
            writer.write(done, "val", val)
            progress.write(_log_line(done, total, "val", val))

        if config.checkpoint.every_steps and done % config.checkpoint.every_steps == 0 and done != total:
            ckpt.save(done, state, train_iter, {**meta, "step": done})
    progress.close()

    # ------------------------------------------------------------------ final checkpoint and evaluation
    if ckpt.latest_step() != total:
        ckpt.save(total, state, train_iter, {**meta, "step": total})
    reports = {role: evaluate_split(run, state, role) for role in ("val", "test") if role in run.data.sources}
    for role, report in reports.items():
        writer.write(total, role, metrics_lib.scalars(report))
    ckpt.close()
    writer.close()

    # ------------------------------------------------------------------ summary, plots
    summary = {"step": total, "train": last_train, **{role: r for role, r in reports.items()}}
    if is_main:
        _write_outputs(workdir, summary, run)
        print(summary_lib.format_table(summary))
    return summary


def _mean_metrics(per_step: list[dict]) -> dict:
    """Average over the logged steps; the learning rate is the latest one."""
    out = {k: float(np.mean([m[k] for m in per_step])) for k in per_step[0]}
    out["learning_rate"] = float(per_step[-1]["learning_rate"])
    return out


def _log_line(step: int, total: int, split: str, metrics: dict) -> str:
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in ("loss", "accuracy", "f1_macro", "mse",
                                                                         "learning_rate", "examples_per_sec"))
    return f"step {step}/{total} {split}: {shown}"


def _write_outputs(workdir: str, summary: dict, run: components.Run) -> None:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    plot_dir = os.path.join(workdir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    plots.plot_training_curves(read_metrics(workdir), os.path.join(plot_dir, "training_curves.png"))
    for role in ("val", "test"):
        if "confusion_matrix" in summary.get(role, {}):
            plots.plot_confusion_matrix(np.asarray(summary[role]["confusion_matrix"]), list(run.data.spec.class_names),
                                        os.path.join(plot_dir, f"confusion_matrix_{role}.png"),
                                        title=f"{run.data.spec.name} {role} confusion matrix")
