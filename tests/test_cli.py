"""The real CLI: a smoke run on a shrunk config, eval, resume, and one-line errors for bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from _cli import SMOKE_OVERRIDES, run_jtrain


@pytest.fixture(scope="module")
def smoke_run(digits_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("smoke"))
    result = run_jtrain(["train", "--config", "experiments/digits_cnn.py", *SMOKE_OVERRIDES, "--workdir", workdir],
                        digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_smoke_run_fills_the_workdir(smoke_run):
    workdir, result = smoke_run
    for name in ("config.json", "metrics.jsonl", "summary.json", "plots/training_curves.png",
                 "plots/confusion_matrix_test.png", "checkpoints"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()) == [20, 30]

    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["train"]["steps"] == 30 and config["data"]["batch_size"] == 16

    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [10, 20, 30]
    assert all({"loss", "accuracy", "learning_rate"} <= set(r) for r in records if r["split"] == "train")
    assert [r["step"] for r in records if r["split"] == "val"] == [20, 30]
    assert [r["step"] for r in records if r["split"] == "test"] == [30]

    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["step"] == 30
    assert summary["test"]["num_examples"] == 270  # every test example counted, once
    confusion = np.asarray(summary["test"]["confusion_matrix"])
    assert confusion.sum() == 270
    assert summary["test"]["accuracy"] == pytest.approx(np.trace(confusion) / 270)  # the same predictions
    # 30 steps learn: 0.61 measured against 0.10 for chance (an untrained or broken step stays near chance).
    assert summary["test"]["accuracy"] > 0.4
    # The summary table is printed at the end.
    assert "summary at step 30" in result.stdout and "accuracy" in result.stdout


def test_eval_reproduces_the_final_test_metrics(smoke_run, digits_data_dir):
    workdir, _ = smoke_run
    result = run_jtrain(["eval", "--workdir", workdir, "--split", "test"], digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert evaluated["step"] == 30
    assert evaluated["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-7)
    assert evaluated["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-5)
    # A TFDS split spec: its row is labelled with the spec given, not "test".
    sliced = run_jtrain(["eval", "--workdir", workdir, "--split", "train[:10%]"], digits_data_dir)
    assert sliced.returncode == 0, sliced.stderr[-3000:]
    row = [line for line in sliced.stdout.splitlines() if line.startswith("train[:10%] ")]
    assert len(row) == 1 and row[0].split()[-1] == "180", sliced.stdout  # 10% of 1797 digits


def test_resumed_run_equals_uninterrupted_run(digits_data_dir, tmp_path):
    """20 steps, stop, resume to 40 == 40 steps straight: same data order, same dropout draws, same params."""
    common = ["train", "--config", "experiments/digits_cnn.py", *SMOKE_OVERRIDES,
              "--config.checkpoint.every_steps=0"]
    straight, pieces = str(tmp_path / "straight"), str(tmp_path / "pieces")
    assert run_jtrain([*common, "--config.train.steps=40", "--workdir", straight], digits_data_dir).returncode == 0
    assert run_jtrain([*common, "--config.train.steps=20", "--workdir", pieces], digits_data_dir).returncode == 0
    resumed = run_jtrain([*common, "--config.train.steps=40", "--workdir", pieces], digits_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step 20" in resumed.stderr

    a = json.load(open(os.path.join(straight, "summary.json")))
    b = json.load(open(os.path.join(pieces, "summary.json")))
    assert a["test"]["loss"] == b["test"]["loss"]
    assert a["test"]["confusion_matrix"] == b["test"]["confusion_matrix"]
    log = lambda w: {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(w, "metrics.jsonl")))
                     if r["split"] == "train" and r["step"] > 20}
    assert log(straight) == log(pieces)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.train.step=5", "'train.step' (did you mean 'train.steps'?)"),
        ("--config.optim.learning_rate=fast", "'optim.learning_rate': expected float"),
        ("--config.data.batch_size=0", "'data.batch_size': must be > 0"),
        ("--config.model.name=resnet9000", "'model.name': unknown model"),
        ("--config.data.name=digitz", "did you mean 'digits'"),
        ("--config.mesh.data=3", "needs 3 devices"),
    ],
)
def test_bad_overrides_exit_2_with_one_line(override, expected, digits_data_dir, tmp_path):
    result = run_jtrain(["train", "--config", "experiments/digits_cnn.py", override, "--workdir", str(tmp_path)],
                        digits_data_dir)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jtrain: error:") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--config", "experiments/nope.py", "--workdir", "w"], "config file not found: experiments/nope.py"),
        (["train", "--workdir", "w"], "--config"),
        (["eval", "--workdir", "/nonexistent/run"], "config.json: not found"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_commands_exit_2_with_one_line(args, expected, digits_data_dir):
    result = run_jtrain(args, digits_data_dir)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
