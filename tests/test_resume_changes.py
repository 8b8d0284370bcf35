"""A resume compares the config with the one the checkpoints were trained with: length, intervals and speed
settings may change (one line says which); any other change stops before anything is written, unless
--allow_changes, which metrics.jsonl records. A workdir in use by another run is refused; a killed run's lock
is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import jtrain
from _cli import REPO_ROOT, SMOKE_OVERRIDES, run_jtrain
from jtrain.errors import UserError

ARGS = ["train", "--config", "experiments/digits_mlp_l2.py", *SMOKE_OVERRIDES, "--config.train.steps=20",
        "--config.train.early_stopping_patience=0"]


def _config(data_dir: str, *overrides: str):
    config = jtrain.load_experiment("experiments/digits_mlp_l2.py")
    jtrain.apply_overrides(config, [o.removeprefix("--config.") for o in ARGS[3:]] + [f"data.dir={data_dir}",
                                                                                        *overrides])
    config.train.progress = False
    return config


def _files(workdir: str) -> dict[str, bytes]:
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, workdir)] = f.read()
    return out


def test_changes_on_resume(digits_data_dir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    jtrain.train(_config(digits_data_dir), workdir)
    before = _files(workdir)

    # Another learning rate and width: one line naming both, nothing written, exit 2.
    refused = run_jtrain([*ARGS, "--config.optim.learning_rate=0.05", "--config.model.hidden_sizes=(16,)",
                          "--workdir", workdir], digits_data_dir)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "optim.learning_rate 0.001 -> 0.05" in lines[0] and "model.hidden_sizes" in lines[0]
    assert "--allow_changes" in lines[0] and "new --workdir" in lines[0]
    assert _files(workdir) == before
    with pytest.raises(UserError, match=r"seed 0 -> 3"):  # the same in Python
        jtrain.train(_config(digits_data_dir, "seed=3"), workdir)
    assert _files(workdir) == before

    # Training longer is a resume: one line says so.
    capsys.readouterr()
    assert jtrain.train(_config(digits_data_dir, "train.steps=30"), workdir)["step"] == 30
    assert "resuming with train.steps 20 -> 30" in capsys.readouterr().out

    # allow_changes resumes with another learning rate and records it.
    jtrain.train(_config(digits_data_dir, "train.steps=40", "optim.learning_rate=0.002"), workdir, allow_changes=True)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    change = [r for r in records if r["split"] == "config_change"]
    assert [(r["step"], r.get("optim.learning_rate")) for r in change] == [(20, None), (30, 0.002)]
    assert json.load(open(os.path.join(workdir, "config.json")))["optim"]["learning_rate"] == 0.002


def test_a_workdir_in_use_is_refused_and_a_killed_runs_lock_taken_over(digits_data_dir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "JTRAIN_DATA_DIR": digits_data_dir, "PYTHONPATH": REPO_ROOT,
           "PYTHONUNBUFFERED": "1"}
    long_run = subprocess.Popen([sys.executable, "-m", "jtrain", *ARGS, "--config.train.steps=100000",
                                 "--workdir", workdir], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        for line in long_run.stdout:  # training has begun: the lock is held, a checkpoint is saved
            if "step 30/" in line:
                break
        with pytest.raises(UserError, match=rf"in use by another jtrain run \(PID {long_run.pid} on "):
            jtrain.train(_config(digits_data_dir, "train.steps=100000"), workdir)
    finally:
        long_run.send_signal(signal.SIGKILL)
        long_run.wait()
    capsys.readouterr()
    summary = jtrain.train(_config(digits_data_dir, "train.steps=40"), workdir, allow_changes=True)
    assert f"took over the lock of PID {long_run.pid}" in capsys.readouterr().out
    assert summary["step"] >= 20
