"""The training loop, top to bottom: build -> init (resume > pretrained > scratch) -> loop -> final eval -> summary.

    state, metrics = train_step(state, batch)       # pure, jitted, donated, sharded
    every train.log_every_steps:  fetch metrics, check they are finite, write metrics.jsonl / TensorBoard
    every eval.every_steps:       exact eval of the val split; best-metric tracking and early stopping
    every checkpoint.every_steps: async Orbax save of state + data-iterator position
    on SIGTERM / SIGINT:          finish the step, save it, wait until durable, raise Preempted

Metrics stay on device between log steps, so the host never waits for a step it does not need.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jtrain import checkpoint as checkpoint_lib
from jtrain import components
from jtrain import config as config_lib
from jtrain import data as data_lib
from jtrain import distributed
from jtrain import feed as feed_lib
from jtrain import metrics as metrics_lib
from jtrain import pretrained, summary as summary_lib
from jtrain import probe as probe_lib
from jtrain import sharding as sharding_lib
from jtrain import throughput
from jtrain import workdir as workdir_lib
from jtrain.early_stopping import BestTracker
from jtrain.errors import TrainingError, UserError
from jtrain.evaluate import evaluate_split
from jtrain import goodput as goodput_lib
from jtrain.goodput import TimeBudget
from jtrain.preemption import Preempted, PreemptionWatcher
from jtrain.progress import ProgressBar
from jtrain.version import __version__
from jtrain.state import count_params
from jtrain.writers import MetricWriter, drop_records_after, read_metrics


def train(config: ml_collections.ConfigDict, workdir: str, data=None,
          on_eval: Callable[[int, dict], bool] | None = None, allow_changes: bool = False) -> dict:
    """Trains (or resumes) the run described by `config` in `workdir`; returns the summary dict.

    `data` is a data source object (jtrain/data/source.py) to train on instead of the one `config.data.name`
    names; config.json then records that it came from Python, so evaluating or resuming the run needs it again.

    `on_eval(step, {"val": metrics})` runs after each periodic evaluation (eval.every_steps); returning True
    stops the run there as early stopping does: final checkpoint, evaluation and summary ("stopped": "on_eval").
    `jtrain sweep` prunes trials with it.

    A workdir with checkpoints resumes only with the config they were trained with, apart from the training
    length, intervals, progress, patience and speed settings (jtrain/workdir.py RESUMABLE); any other change
    stops with one line before anything is written, unless `allow_changes` (recorded in metrics.jsonl)."""
    # ------------------------------------------------------------------ build
    entered = time.perf_counter()
    # Interpreter, imports, config: the CLI's start-up (a notebook's process is older than any run).
    before_train = goodput_lib.since_process_start() if _launched_by_cli() else None
    if data is not None:
        config = config.copy_and_resolve_references()
        config.data.name = data_lib.python_name(data)
    config = pretrained.with_pretrained_model(config)  # a Hugging Face causal LM brings its architecture
    config_lib.validate(config)
    changes = workdir_lib.check_resume(workdir, config, allow_changes)  # before anything is written
    # A run of one's own data prepares it as it first did (jtrain/data/own.py), not as refitted now.
    run = components.build(config, data=data, fitted=workdir_lib.read_fitted(workdir))
    if config.init.pretrained and not workdir_lib.has_checkpoint(workdir):  # its problems, before anything is written
        pretrained.check(config.init, {"params": run.abstract_state.params, **run.abstract_state.model_state})
    build_s = time.perf_counter() - entered  # data opened (prepared on first use), model, optimizer, shardings
    distributed.check_same_run(config_lib.to_json(config), __version__)
    is_main = jax.process_index() == 0
    workdir = _writable_workdir(workdir)
    if is_main:  # one process holds the lock of a run, however many it spans
        took_over = workdir_lib.lock(workdir)
        if took_over:
            print(f"{workdir}: {took_over}")
        if changes:
            print("resuming with " + ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes))
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config_lib.to_json(config))
        _write_data_records(workdir, run.data)
    best = BestTracker(config.eval.best_metric, config.eval.best_mode, config.train.early_stopping_patience,
                       config.train.early_stopping_min_delta) if config.eval.best_metric else None
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep,
                                       config.checkpoint.keep_best if best else 0, config.checkpoint.async_save)
    per_call = config.train.steps_per_call  # optimizer steps per dispatch
    # Batches reach the device T at a time, and each call takes its own there (jtrain/feed.py).
    train_iter = feed_lib.for_run(run, config.seed, jax.process_index(), jax.process_count())
    target = checkpoint_lib.abstract_with_shardings(run.abstract_state, run.state_shardings)

    # ------------------------------------------------------------------ init: resume > pretrained > scratch
    restored = ckpt.restore_latest_good(target, train_iter)
    if restored:
        start, state, meta = restored
        _check_same_calls(meta, per_call, ckpt.directory)
        if best and meta.get("best"):
            best.load_state_dict(meta["best"])
        skipped = meta.get("skipped_steps", 0)
        if is_main:
            drop_records_after(workdir, start)
    else:
        state, start, skipped = run.init(), 0, 0
        if config.init.pretrained:  # no checkpoint of the run's own yet: start from pretrained weights
            state = pretrained.into_state(config.init, state, log=is_main, report_dir=workdir if is_main else None)
        state = run.begin(state)  # the method's start, e.g. DPO's frozen reference from the starting params

    def meta_at(step: int) -> dict:  # what a checkpoint records beside the arrays
        return {"step": step, "jtrain_version": __version__, "config": config.to_dict(),
                "mesh": dict(run.mesh.shape), "skipped_steps": skipped, "best": best.state_dict() if best else None,
                "data_fitted": getattr(run.data, "fitted", None)}

    total = run.total_steps
    speed = throughput.for_run(run)  # tokens/s and MFU for language models; None otherwise
    writer = MetricWriter(workdir, enabled=is_main)
    if changes:  # what changed on this resume, beside the metrics (numbers reach TensorBoard too)
        writer.write(start, "config_change", {key: new if isinstance(new, (int, float)) else f"{old!r} -> {new!r}"
                                              for key, old, new in changes})
    progress = ProgressBar(total, initial=start, enabled=None if (config.train.progress and is_main) else False)
    if is_main:
        # A method's own module (Method.wrap_model) is what trains, around model.name's network or instead of it.
        model = config.model.name if run.method.wrap_model is None else (
            f"{type(run.model).__name__} ({run.method.name})")
        data = (run.data.describe() if hasattr(run.data, "describe")
                else f"{config.data.name} ({run.data.num_train:,} training examples)")
        progress.write(
            f"jtrain: {model} ({count_params(state.params):,} parameters) on {data}, mesh {dict(run.mesh.shape)}, "
            f"{'resuming at step ' + str(start) + ' of ' if start else ''}{total} steps -> {workdir}"
        )
        if config.mesh.report or sharding_lib.is_sharded(run.state_shardings):  # the table, only when it says something
            progress.write(sharding_lib.report(run.abstract_state, run.state_shardings, max_rows=20))

    # ------------------------------------------------------------------ loop
    pending: list[dict] = []  # per-step metrics since the last fetch, still on device
    last_train: dict = {}
    tick, tick_step = time.perf_counter(), start
    stopped_early = stopped_by_callback = False
    single_process = jax.process_count() == 1

    window_calls = max(1, config.train.log_every_steps // per_call)  # calls between two logs
    join_window = jax.jit(lambda *metrics: jnp.concatenate([m.reshape(-1, len(run.metric_names)) for m in metrics]))

    def fetch_pending(upto: int) -> np.ndarray:
        """Brings the pending metrics to the host and enforces train.on_nonfinite (the one host sync): (steps, M)
        rows for the steps since the last fetch, columns `run.metric_names`."""
        nonlocal pending, skipped
        if not pending:
            return np.zeros((0, len(run.metric_names)), np.float32)
        # Each (M,), or (n, M) for a call of n steps. A whole log window's are joined on the device and copied
        # once, cheaper than a copy per buffer. Other counts (a window cut by an eval or a save) are rare:
        # copied one by one rather than compiled for.
        if len(pending) == window_calls:
            rows = np.asarray(join_window(*pending))
        else:
            rows = np.concatenate([np.asarray(p).reshape(-1, len(run.metric_names)) for p in pending])
        pending = []
        nonfinite = rows[:, run.metric_names.index("nonfinite")] != 0
        first = upto - len(rows) + 1
        bad = [first + int(i) for i in np.flatnonzero(nonfinite)]
        if bad and config.train.on_nonfinite == "halt":
            m = dict(zip(run.metric_names, rows[bad[0] - first]))
            metric = "loss" if not math.isfinite(float(m["loss"])) else "gradient norm"
            good = [s for s in ckpt.all_steps() if s < bad[0]]
            where = f"{ckpt.directory}/{good[-1]}" if good else "none"
            raise TrainingError(f"non-finite {metric} at step {bad[0]}; last good checkpoint: {where} "
                                f"(train.on_nonfinite=skip drops such updates)")
        skipped += len(bad)
        return rows

    def before_save(step: int, state) -> None:
        """Never save (or rank) a state that went non-finite: the pending metrics are checked, and under "halt",
        whose steps flag only a non-finite loss (jtrain/step.py apply_update), the parameters themselves."""
        fetch_pending(step)
        if params_finite and not bool(params_finite(state)):
            good = [s for s in ckpt.all_steps() if s < step]
            raise TrainingError(f"non-finite parameters after step {step} (the gradients went non-finite under a "
                                f"finite loss); last good checkpoint: {f'{ckpt.directory}/{good[-1]}' if good else 'none'}")

    init_s = time.perf_counter() - entered - build_s  # checkpointer, input feed, state restored or created
    budget = TimeBudget()
    train_call = train_iter.calls(run.train_call)  # (state arrays, n) -> (state arrays, metrics)
    params_finite = None
    if config.train.on_nonfinite == "halt":  # compiled now, not inside the first save
        with budget.track("compile"):
            params_finite = run.params_finite.lower(state).compile()
    # The per-step path below runs thousands of times a second on small models: settings are read once here.
    log_every, eval_every, save_every = (config.train.log_every_steps, config.eval.every_steps,
                                         config.checkpoint.every_steps)
    clock = time.perf_counter
    # The calls take and return the state as flat arrays (components.FlatState); the TrainState is rebuilt
    # from them (a few microseconds) only where the loop needs it: evals, saves, the end.
    arrays = run.state_codec.flatten(state)
    state_now = lambda: run.state_codec.unflatten(arrays)
    with PreemptionWatcher() as preemption, _closing(ckpt, writer, progress, workdir):
        done = start
        while done < total:
            # The calls up to the next step with host work (a log, eval or save, or the end) run back to back:
            # the loop's checks once per call would be a visible part of a tiny model's step.
            stop = _next_stop(done, total, log_every, eval_every, save_every)
            first = done == start  # the first call traces and compiles: timed on its own, as is a shorter last
            if first or total - done < per_call:  # call (its own shape) after the full ones
                stop = min(done + per_call, total)
            else:
                stop = min(stop, done + (total - done) // per_call * per_call)
            began, waited = clock(), train_iter.waited
            while done < stop:
                n = min(per_call, stop - done)
                arrays, step_metrics = train_call(arrays, n)  # a copy to the device once every T / k calls
                pending.append(step_metrics)
                progress.update(n)
                done += n
                if single_process and preemption.signal_name:  # with several processes: checked at log steps
                    break
            fetching = train_iter.waited - waited
            budget.add("data", fetching)
            if first or n != per_call:
                budget.add("compile", clock() - began - fetching)
            log_now = done % log_every == 0 or done == total

            if log_now:
                last_train = _mean_metrics(fetch_pending(done), run.metric_names)
                now = time.perf_counter()
                last_train["steps_per_sec"] = (done - tick_step) / max(now - tick, 1e-9)
                last_train["examples_per_sec"] = last_train["steps_per_sec"] * config.data.batch_size
                if speed:
                    last_train.update(speed.rates(last_train["steps_per_sec"]))
                if run.method.rates:  # e.g. an RL method's environment steps per second
                    last_train.update(run.method.rates(last_train["steps_per_sec"]))
                last_train["skipped_steps"] = skipped
                tick, tick_step = now, done
                writer.write(done, "train", last_train)
                progress.set_metrics(loss=last_train["loss"], ex_per_s=last_train["examples_per_sec"])
                if not progress.enabled and is_main:
                    progress.write(_log_line(done, total, "train", last_train, run.method.log_keys))

            eval_now = eval_every and done % eval_every == 0 and done != total
            if eval_now and "val" in run.data.splits:
                state = state_now()
                before_save(done, state)  # evals rank checkpoints
                with budget.track("eval"):
                    val = metrics_lib.scalars(evaluate_split(run, state, "val"))
                writer.write(done, "val", val)
                if is_main:
                    progress.write(_log_line(done, total, "val", val, run.method.log_keys))
                if best:
                    rank = best.rank(best.update(done, val))
                    with budget.track("checkpoint"):
                        ckpt.save(done, state, train_iter, meta_at(done), metrics={**val, checkpoint_lib.BEST_RANK: rank})
                    if best.should_stop:
                        progress.write(f"early stopping at step {done}: val {best.metric} has not improved for "
                                       f"{best.bad_evals} evals (best {best.best_value:.4g} at step {best.best_step})")
                        stopped_early = True
                        break
                if on_eval is not None and on_eval(done, {"val": val}):
                    stopped_by_callback = True
                    break

            if save_every and done % save_every == 0 and done != total:
                if ckpt.latest_step() != done:
                    state = state_now()
                    before_save(done, state)
                    with budget.track("checkpoint"):
                        ckpt.save(done, state, train_iter, meta_at(done))

            # With several processes the signal check is collective, so it runs only at log steps.
            if (single_process or log_now) and preemption.stop_requested():
                state = state_now()
                before_save(done, state)
                if ckpt.latest_step() != done:
                    ckpt.save(done, state, train_iter, meta_at(done))
                ckpt.close()  # durable before we say so
                raise Preempted(done, preemption.signal_name, ckpt.directory)
        progress.close()
        state = state_now()
        end = int(jax.device_get(state.step))
        time_spent = budget.report()  # the loop's own time, before the final evaluation
        loop_end = time.perf_counter()

        # -------------------------------------------------------------- final checkpoint and evaluation
        before_save(end, state)
        reports = {role: evaluate_split(run, state, role) for role in ("val", "test") if role in run.data.splits}
        if ckpt.latest_step() != end:
            val_scalars = metrics_lib.scalars(reports["val"]) if "val" in reports else None
            ranked = None
            if best and val_scalars:
                ranked = {**val_scalars, checkpoint_lib.BEST_RANK: best.rank(best.update(end, val_scalars))}
            ckpt.save(end, state, train_iter, meta_at(end), metrics=ranked)
        if best and config.train.early_stopping_patience and best.best_step not in (-1, end):
            # Early stopping reports the best checkpoint, as Keras' restore_best_weights does.
            ckpt.wait()
            state, _ = ckpt.restore(best.best_step, target)
            reports = {role: evaluate_split(run, state, role) for role in reports}
        for role, report in reports.items():
            writer.write(end, role, metrics_lib.scalars(report))
        findings = probe_lib.at_end(run, state)  # an encoder's embeddings against the labels, pictures (probe.py)
        if findings and findings.scores:
            writer.write(end, "probe", probe_lib.flat(findings.scores))
        writer.write(end, "time", time_spent)
        ckpt.close()
        writer.close()

    # ------------------------------------------------------------------ summary, plots
    summary = {"step": end, "train": last_train, **reports, "time": time_spent}
    if best:
        summary["best"] = {"step": best.best_step, "metric": best.metric, "value": best.best_value,
                           "stopped_early": stopped_early}
    if stopped_by_callback:
        summary["stopped"] = "on_eval"
    if findings and findings.scores:
        summary["probe"] = findings.scores
    if is_main:
        _write_plots(workdir, summary, run, findings)
    # The whole wall time: before train() (the CLI's imports), the build, the start (checkpointer, feed, state),
    # the loop (time_spent) and the end (final evaluation and checkpoint, plots).
    time_spent.update(build_s=build_s, init_s=init_s, end_s=time.perf_counter() - loop_end)
    if before_train is not None:
        time_spent["before_train_s"] = before_train
    if is_main:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
        print(summary_lib.format_table(summary))
        workdir_lib.unlock(workdir)
    return summary


@contextlib.contextmanager
def _closing(ckpt, writer, progress, workdir: str):
    """Whatever ends the loop (finish, error, preemption), pending checkpoint saves complete and files close;
    an error or a preemption also gives the workdir's lock back (a finished run does after its summary)."""
    try:
        yield
    except BaseException:
        progress.close()
        writer.close()
        ckpt.close()
        workdir_lib.unlock(workdir)
        raise
    finally:
        progress.close()
        writer.close()
        ckpt.close()


def _next_stop(done: int, total: int, *intervals: int) -> int:
    """The first step after `done` that is a multiple of one of the (nonzero) intervals, or `total`."""
    return min([total] + [(done // every + 1) * every for every in intervals if every])


def _check_same_calls(meta: dict, per_call: int, directory: str) -> None:
    """k steps scanned in one call round differently from k single calls, so resuming with another
    steps_per_call would break "a resumed run equals an uninterrupted one"."""
    saved = (meta.get("config") or {}).get("train", {}).get("steps_per_call", 1)
    if saved != per_call:
        raise UserError(f"config key 'train.steps_per_call': this run uses {per_call}, but the checkpoints in "
                        f"{directory} were written with {saved}; resume with --config.train.steps_per_call={saved}")


def _writable_workdir(workdir: str) -> str:
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create workdir {workdir}: {e.strerror or e}") from e
    if not os.access(workdir, os.W_OK):
        raise UserError(f"workdir {workdir} is not writable")
    return workdir


def _mean_metrics(rows: np.ndarray, names: list[str]) -> dict:
    """Average of each column over the logged steps (the finite ones); the learning rate is the latest one."""
    nonfinite = rows[:, names.index("nonfinite")] != 0
    finite = rows[~nonfinite] if not nonfinite.all() else rows
    means = finite.astype(np.float64).mean(axis=0)
    out = {k: float(v) for k, v in zip(names, means) if k != "nonfinite"}
    out["learning_rate"] = float(rows[-1, names.index("learning_rate")])
    return out


_SPEED_KEYS = ("learning_rate", "examples_per_sec", "tokens_per_sec", "mfu")  # shown for every method


def _log_line(step: int, total: int, split: str, metrics: dict, method_keys: tuple[str, ...]) -> str:
    """The metrics of `method_keys` (Method.log_keys) and the speed, in the order the metrics come."""
    keys = set(method_keys) | set(_SPEED_KEYS)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in keys)
    return f"step {step}/{total} {split}: {shown}"


def _write_data_records(workdir: str, data) -> None:
    """What a source of one's own data fitted (preparation.json: `jtrain eval`, `predict` and resumes apply it)
    and what it read (data_report.json, summarised in the log)."""
    fitted, report = getattr(data, "fitted", None), getattr(data, "report", None)
    if fitted:
        with open(os.path.join(workdir, workdir_lib.FITTED_FILE), "w") as f:
            json.dump(fitted, f, indent=1)
    if report:
        with open(os.path.join(workdir, "data_report.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(summary_lib.data_summary(report))


def _launched_by_cli() -> bool:
    import sys

    launcher = os.path.basename(sys.argv[0]) if sys.argv else ""
    return launcher == "jtrain" or sys.argv[0].endswith(os.path.join("jtrain", "__main__.py"))


def _write_plots(workdir: str, summary: dict, run: components.Run, findings: probe_lib.Findings | None) -> None:
    from jtrain import plots  # matplotlib is slow to import and needed only here, at the end

    plot_dir = os.path.join(workdir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    records = read_metrics(workdir)
    with contextlib.suppress(ValueError):  # a run too short for any curve of two points
        plots.plot_training_curves(records, os.path.join(plot_dir, "training_curves.png"), run.method.log_keys)
    for role in ("val", "test"):
        if "confusion_matrix" in summary.get(role, {}):
            plots.plot_confusion_matrix(np.asarray(summary[role]["confusion_matrix"]), list(run.data.spec.class_names),
                                        os.path.join(plot_dir, f"confusion_matrix_{role}.png"),
                                        title=f"{run.data.spec.name} {role} confusion matrix")
        if "roc_curve" in summary.get(role, {}):  # binary classifiers
            curve = summary[role]["roc_curve"]
            plots.plot_roc_curve(curve["fpr"], curve["tpr"], summary[role]["roc_auc"],
                                 os.path.join(plot_dir, f"roc_curve_{role}.png"),
                                 title=f"{run.data.spec.name} {role} ROC curve")
    if summary.get("time"):
        plots.plot_time_breakdown(summary["time"], os.path.join(plot_dir, "time_breakdown.png"))
    if findings:  # a method's pictures (reconstructions, samples) and its embeddings by label
        for name, images in findings.pictures.items():
            rows = ("inputs", "reconstructions") if name == "reconstructions" else ()
            plots.plot_image_grid(images, os.path.join(plot_dir, f"{name}.png"), title=f"{run.data.spec.name} {name}",
                                  row_labels=rows)
        if findings.embeddings is not None:
            plots.plot_embedding_pca(*findings.embeddings, list(run.data.spec.class_names),
                                     os.path.join(plot_dir, "embeddings_pca.png"),
                                     title=f"{run.data.spec.name} {findings.scores['split']} embeddings ({run.method.name})")
