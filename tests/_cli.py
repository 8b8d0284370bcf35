"""Runs the real `python -m jtrain` entry point in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A shrunk digits run: seconds, not minutes.
SMOKE_OVERRIDES = [
    "--config.train.steps=30",
    "--config.train.epochs=0",
    "--config.train.log_every_steps=10",
    "--config.eval.every_steps=20",
    "--config.checkpoint.every_steps=20",
    "--config.data.batch_size=16",
    "--config.schedule.name=constant",
    "--config.schedule.warmup_steps=0",
]


def run_jtrain(args: list[str], data_dir: str, extra_env: dict | None = None, timeout: float = 600):
    env = {
        **os.environ,
        "JTRAIN_NO_PROGRESS": "1",
        "JTRAIN_DATA_DIR": data_dir,
        "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **(extra_env or {}),
    }
    return subprocess.run([sys.executable, "-m", "jtrain", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def final_state(workdir: str) -> dict:
    """'/'-joined path -> array of every leaf of a finished run's last checkpoint (params, optimizer state, ...)."""
    from jtrain.checkpoint import load_arrays

    ckpt = os.path.join(workdir, "checkpoints")
    last = max((s for s in os.listdir(ckpt) if s.isdigit()), key=int)
    return load_arrays(os.path.join(ckpt, last, "state"))


def assert_same_state(a: dict, b: dict, rtol: float, atol: float) -> None:
    """Every leaf present in both and equal within the tolerance; the message names the worst leaf."""
    import numpy as np

    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    worst = max(a, key=lambda k: float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]), initial=0.0)))
    for key in a:
        assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
        np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=atol,
                                   err_msg=f"{key} (largest difference in {worst})")
