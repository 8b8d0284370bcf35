"""`jtrain sweep`: the space grammar and its one-line errors, a CLI sweep whose trials are ordinary runs, resume,
pruning, two worker processes on one journal, and a worker killed mid-trial whose trial is retried."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import jtrain
from jtrain.sweep import parse_space
from jtrain.errors import ConfigError

from _cli import REPO_ROOT, SMOKE_OVERRIDES, run_jtrain

MLP = "experiments/digits_mlp_l2.py"
# The smoke run as an MLP without its early stopping (40 steps, val evaluated at 20).
OVERRIDES = [*SMOKE_OVERRIDES, "--config.train.steps=40", "--config.train.early_stopping_patience=0",
             "--config.model.dropout=0.0"]
SPACE = ["--space", "optim.learning_rate=loguniform(1e-3,3e-2)", "--space", "model.hidden_sizes=choice((32,),(64,32))"]


def _config(data_dir: str):
    config = jtrain.load_experiment(os.path.join(REPO_ROOT, MLP))
    jtrain.apply_overrides(config, [o[len("--config."):] for o in OVERRIDES] + [f"data.dir={data_dir}"])
    return config


# ---------------------------------------------------------------- the grammar and bad input


def test_parse_space_forms():
    dims = {d.key: d for d in parse_space({
        "optim.learning_rate": "loguniform(1e-4, 1e-1)", "model.dropout": "uniform(0, 0.5)",
        "data.batch_size": "int(16, 64, 16)", "train.steps": "logint(10, 1000)",
        "model.hidden_sizes": "choice((64,), (128, 64))", "optim.name": "choice('adam', 'sgd')"})}
    assert (dims["optim.learning_rate"].kind, dims["optim.learning_rate"].low, dims["optim.learning_rate"].high) == \
        ("loguniform", 1e-4, 1e-1)
    assert (dims["data.batch_size"].kind, dims["data.batch_size"].step) == ("int", 16)
    assert dims["train.steps"].kind == "logint"
    assert dims["model.hidden_sizes"].choices == ((64,), (128, 64))
    assert dims["model.hidden_sizes"].labels == ("(64,)", "(128, 64)")  # Optuna stores tuples by their repr
    assert dims["model.hidden_sizes"].value("(128, 64)") == (128, 64)
    assert dims["optim.name"].labels == ("adam", "sgd")
    # The CLI form, KEY=DIST.
    (dim,) = parse_space(["optim.learning_rate=uniform(1e-3,1e-2)"])
    assert (dim.key, dim.kind) == ("optim.learning_rate", "uniform")


@pytest.mark.parametrize("item, says", [
    ("optim.learning_rate=normal(0, 1)", "not a distribution"),
    ("optim.learning_rate=loguniform(1e-4", "not a distribution"),
    ("optim.learning_rate=__import__('os')", "not a distribution"),
    ("optim.learning_rate=uniform(a, b)", "Python literals"),
    ("optim.learning_rate=loguniform(1e-1, 1e-4)", "reversed or empty bounds"),
    ("optim.learning_rate=loguniform(0, 1e-1)", "needs low > 0"),
    ("optim.learning_rate=uniform(1e-3)", "takes (low, high)"),
    ("data.batch_size=int(8.5, 64)", "must be integers"),
    ("data.batch_size=int(8, 64, 0)", "step must be >= 1"),
    ("model.hidden_sizes=choice()", "at least one value"),
    ("optim.learning_rate", "expected KEY=DISTRIBUTION"),
])
def test_malformed_space_is_one_line(item, says):
    with pytest.raises(ConfigError, match=None) as e:
        parse_space([item])
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("space, says", [
    ({"optim.learning_rte": "loguniform(1e-4, 1e-1)"}, "unknown config key 'optim.learning_rte' (did you mean 'optim.learning_rate'?)"),
    ({"model.hidden_sizes": "choice((64,), ('wide',))"}, "expected a tuple of int"),
    ({"optim.learning_rate": "choice('fast', 'slow')"}, "expected float"),
    ({"data.batch_size": "uniform(8, 64)"}, "expected int"),
    ({"model.dropout": "uniform(0.1, 1.5)"}, "must be in [0, 1)"),
    ({"optim.name": "uniform(0, 1)"}, "is not a number"),
    ({"train.progress": "int(0, 1)"}, "expected bool"),
])
def test_space_checked_against_config(space, says, tmp_path):
    with pytest.raises(ConfigError) as e:
        jtrain.sweep(jtrain.default_config(), str(tmp_path / "w"), space=space, trials=1)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "w").exists()  # refused before any trial (or file)


@pytest.mark.parametrize("kwargs, says", [
    ({"objective": "val.r2"}, "reports no val metric 'r2'; it has loss, accuracy"),
    ({"objective": "train.loss"}, "expected SPLIT.METRIC"),
    ({"objective": "accuracy"}, "expected SPLIT.METRIC"),
    ({"objective": "test.accuracy", "pruner": "median"}, "use a val objective"),
    ({"pruner": "median"}, "eval.every_steps"),
    ({"pruner": "asha"}, "--pruner asha: one of none, median, hyperband"),
    ({"sampler": "cmaes"}, "--sampler cmaes: one of grid, random, tpe, gp"),
    ({"sampler": "grid"}, "every dimension must be choice"),
    ({"direction": "up"}, "--direction up: max, min or auto"),
    ({"trials": 0}, "--trials 0: must be >= 1"),
    ({"space": {}}, "no search space"),
])
def test_bad_settings_are_one_line(kwargs, says, tmp_path):
    args = {"space": {"optim.learning_rate": "loguniform(1e-4, 1e-1)"}, "trials": 2, **kwargs}
    with pytest.raises(ConfigError) as e:
        jtrain.sweep(jtrain.default_config(), str(tmp_path / "w"), **args)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "w").exists()


def test_experiment_get_space(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text("from jtrain.config import default_config\n"
                    "def get_config():\n    return default_config()\n"
                    "def get_space():\n    return {'optim.learning_rate': 'loguniform(1e-4, 1e-1)'}\n")
    assert jtrain.config.load_space(str(path)) == {"optim.learning_rate": "loguniform(1e-4, 1e-1)"}
    with pytest.raises(ConfigError, match="reversed or empty bounds"):
        path.write_text(path.read_text().replace("1e-4, 1e-1", "1e-1, 1e-4"))
        jtrain.sweep(str(path), str(tmp_path / "w"), trials=1)


def test_cli_bad_input_exit_2_before_any_trial(digits_data_dir, tmp_path):
    w = tmp_path / "w"
    for space, says in ((["--space", "optim.learning_rte=loguniform(1e-4,1e-1)"], "did you mean 'optim.learning_rate'"),
                        (["--space", "optim.learning_rate=loguniform(1e-1,1e-4)"], "reversed or empty bounds"),
                        ([*SPACE, "--objective", "val.bogus"], "reports no val metric 'bogus'")):
        result = run_jtrain(["sweep", "--config", MLP, *space, "--trials", "2", "--workdir", str(w), *OVERRIDES],
                            digits_data_dir)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("jtrain: error: --") and says in lines[0], result.stderr
        assert not w.exists()


# ---------------------------------------------------------------- a sweep through the CLI


def _csv(w) -> pd.DataFrame:
    return pd.read_csv(w / "trials.csv")


def test_cli_sweep_outputs_eval_best_command_and_resume(digits_data_dir, tmp_path):
    w = tmp_path / "sweep"
    args = ["sweep", "--config", MLP, *SPACE, "--trials", "4", "--sampler", "random", "--objective", "val.accuracy",
            "--direction", "max", "--workdir", str(w), *OVERRIDES]
    result = run_jtrain(args, digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    frame = _csv(w)
    assert list(frame["trial"]) == [0, 1, 2, 3] and set(frame["state"]) == {"COMPLETE"}
    assert list(frame.columns[:5]) == ["trial", "state", "val.accuracy", "optim.learning_rate", "model.hidden_sizes"]
    assert set(frame["steps"]) == {40} and (frame["wall_s"] > 0).all()
    assert frame["optim.learning_rate"].between(1e-3, 3e-2).all()
    assert set(frame["model.hidden_sizes"]) <= {"(32,)", "(64, 32)"}
    assert sorted(os.listdir(w / "trials")) == ["000", "001", "002", "003"]
    for name in ("history.png", "parallel_coordinate.png", "param_importances.png", "intermediate_values.png"):
        assert (w / "plots" / name).stat().st_size > 1000, name
    # The printed table is sorted by the objective, best first.
    table = result.stdout[result.stdout.index("sweep: 4 trials, sorted by val.accuracy"):].splitlines()[3:7]
    printed = [float(line.split()[2]) for line in table]
    assert printed == sorted(printed, reverse=True) and printed[0] == pytest.approx(frame["val.accuracy"].max(), abs=1e-4)

    # Each trial is an ordinary run: `jtrain eval` of its workdir gives its recorded objective.
    for row in frame.itertuples():
        ev = run_jtrain(["eval", "--workdir", str(w / row.workdir), "--split", "val"], digits_data_dir)
        assert ev.returncode == 0, ev.stderr
        assert json.loads(ev.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(row[3], abs=1e-9)

    best = json.loads((w / "best.json").read_text())
    top = frame.loc[frame["val.accuracy"].idxmax()]
    assert best["trial"] == top["trial"] and best["value"] == pytest.approx(top["val.accuracy"])
    assert best["params"]["model.hidden_sizes"] == top["model.hidden_sizes"]
    assert f"optim.learning_rate={best['params']['optim.learning_rate']!r}" in best["overrides"]
    # best.json's command is runnable: trained again elsewhere, it reaches the same objective.
    command = shlex.split(best["command"])
    assert command[:2] == ["jtrain", "train"]
    command[command.index("--workdir") + 1] = str(tmp_path / "again")
    again = run_jtrain(command[1:], digits_data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["val"]["accuracy"] == pytest.approx(best["value"], abs=1e-6)

    # Running the same command again trains nothing: same table, no trial started, trial files untouched.
    stamps = {d: os.path.getmtime(w / "trials" / d / "metrics.jsonl") for d in os.listdir(w / "trials")}
    rerun = run_jtrain(args, digits_data_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "sweep: trial" not in rerun.stdout and "jtrain: mlp" not in rerun.stdout
    assert _csv(w).equals(frame)
    assert stamps == {d: os.path.getmtime(w / "trials" / d / "metrics.jsonl") for d in os.listdir(w / "trials")}
    # More trials on the same workdir continue the study.
    more = run_jtrain([*args[:args.index("--trials") + 1], "5", *args[args.index("--trials") + 2:]], digits_data_dir)
    assert more.returncode == 0, more.stderr[-3000:]
    assert list(_csv(w)["trial"]) == [0, 1, 2, 3, 4] and "sweep: trial 4" in more.stdout


def test_median_pruner_stops_a_hopeless_trial(digits_data_dir, tmp_path):
    config = _config(digits_data_dir)
    w = tmp_path / "pruned"
    frame = jtrain.sweep(config, str(w), space={"optim.learning_rate": "choice(3e-3, 1e-7)", "seed": "choice(0, 1)"},
                         sampler="grid", pruner="median", objective="val.accuracy", seed=1)
    assert len(frame) == 4  # the grid's size
    good, bad = frame[frame["optim.learning_rate"] == 3e-3], frame[frame["optim.learning_rate"] == 1e-7]
    assert set(good["state"]) == {"COMPLETE"} and set(good["steps"]) == {40}
    pruned = bad[bad["state"] == "PRUNED"]
    assert len(pruned) >= 1 and set(pruned["steps"]) == {20}  # stopped at its first evaluation
    assert frame["state"].iloc[0] == "COMPLETE" and frame["optim.learning_rate"].iloc[0] == 3e-3  # sorted, best first
    # A pruned trial's run is whole: a checkpoint at the stop, a summary saying why.
    for rel in pruned["workdir"]:
        summary = json.loads((w / rel / "summary.json").read_text())
        assert summary["step"] == 20 and summary["stopped"] == "on_eval"
        assert os.path.isdir(w / rel / "checkpoints" / "20")


def test_a_point_drawn_again_is_not_trained_again(digits_data_dir, tmp_path):
    config = _config(digits_data_dir)
    config.train.steps = 20
    frame = jtrain.sweep(config, str(tmp_path / "twice"), space={"optim.learning_rate": "choice(3e-3)"},
                         sampler="random", trials=2, objective="val.accuracy").sort_values("trial")
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["steps"] == 20 and second["steps"] == 0 and second["same_as"] == first["trial"]
    assert second["val.accuracy"] == first["val.accuracy"] and second["workdir"] == first["workdir"]
    assert os.listdir(tmp_path / "twice" / "trials") == ["000"]


def test_a_cross_validated_sweep_scores_each_trial_by_its_folds_and_leaves_test_alone(digits_data_dir, tmp_path):
    config = _config(digits_data_dir)
    config.train.steps = 20
    w = tmp_path / "nested"
    frame = jtrain.sweep(config, str(w), space={"optim.learning_rate": "choice(3e-3, 1e-2)"}, sampler="grid",
                         objective="val.accuracy", cv=2)
    assert len(frame) == 2 and set(frame["state"]) == {"COMPLETE"}
    for _, trial in frame.iterrows():
        folds = pd.read_csv(w / trial["workdir"] / "cv.csv").set_index("run")
        assert trial["val.accuracy"] == pytest.approx(folds.loc["mean", "accuracy"], abs=1e-12)
        assert trial["steps"] == 40  # two folds of 20 steps
        for k in range(2):
            summary = json.loads((w / trial["workdir"] / f"fold-{k}" / "summary.json").read_text())
            assert "test" not in summary  # nested: the test split stays untouched
    with pytest.raises(ConfigError, match="--cv 2: needs"):
        jtrain.sweep(config, str(tmp_path / "bad"), space={"optim.learning_rate": "choice(3e-3, 1e-2)"},
                     objective="test.accuracy", cv=2)


# ---------------------------------------------------------------- workers


def _study(w):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=f"jtrain:{w}", storage=JournalStorage(JournalFileBackend(str(w / "study.journal"))))


@pytest.mark.slow
def test_two_workers_share_one_journal(digits_data_dir, tmp_path):
    w = tmp_path / "two"
    result = run_jtrain(["sweep", "--config", MLP, *SPACE, "--trials", "5", "--sampler", "tpe", "--workers", "2",
                         "--workdir", str(w), *OVERRIDES], digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    frame = _csv(w)
    assert len(frame) == 5 and set(frame["state"]) == {"COMPLETE"}
    assert sorted(frame["trial"]) == [0, 1, 2, 3, 4]  # no number twice, none missing
    assert frame["workdir"].is_unique and sorted(os.listdir(w / "trials")) == sorted(os.path.basename(p) for p in frame["workdir"])
    assert all((w / rel / "summary.json").exists() for rel in frame["workdir"])
    assert frame["worker"].nunique() == 2  # both processes ran trials
    # Every trial in the journal is in the table (a trial started past the 5th would be marked surplus).
    assert [t.number for t in _study(w).trials if not t.user_attrs.get("jtrain:surplus")] == list(frame["trial"])


@pytest.mark.slow
def test_killed_worker_trial_is_retried(digits_data_dir, tmp_path):
    w = tmp_path / "killed"
    env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "JTRAIN_DATA_DIR": digits_data_dir,
           "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["sweep", "--config", MLP, *SPACE, "--trials", "4", "--sampler", "random", "--workers", "2",
            "--heartbeat", "1", "--workdir", str(w), *OVERRIDES, "--config.train.steps=400",
            "--config.eval.every_steps=100", "--config.checkpoint.every_steps=20"]
    sweep = subprocess.Popen([sys.executable, "-m", "jtrain", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    from optuna.trial import TrialState

    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.5)
        if not (w / "study.journal").exists():
            continue
        for t in _study(w).get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rel = t.user_attrs.get("workdir")
            # Mid-trial: the run has started training (its first checkpoint is written).
            if t.user_attrs.get("worker") and rel and os.path.isdir(w / rel / "checkpoints" / "20"):
                victim = (t.number, int(t.user_attrs["worker"].rsplit(":", 1)[1]), rel)
                break
    assert victim is not None, "no trial reached its first checkpoint"
    number, pid, rel = victim
    os.kill(pid, signal.SIGKILL)
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out[-3000:]

    frame = _csv(w)
    finished = frame[frame["state"].isin(["COMPLETE", "PRUNED"])]
    assert len(finished) == 4 and set(finished["state"]) == {"COMPLETE"}
    killed = frame[frame["trial"] == number].iloc[0]
    assert killed["state"] == "FAIL"  # failed as stale by the other worker's heartbeat check
    retry = frame[frame["retry_of"] == number]
    assert len(retry) == 1 and retry["state"].iloc[0] == "COMPLETE"
    assert retry["workdir"].iloc[0] == rel  # resumed in the killed trial's directory
    assert retry["optim.learning_rate"].iloc[0] == killed["optim.learning_rate"]
    assert (w / rel / "summary.json").exists() and json.loads((w / rel / "summary.json").read_text())["step"] == 400
    assert f"resuming at step" in out
    assert not any(t.state == TrialState.RUNNING for t in _study(w).trials)
