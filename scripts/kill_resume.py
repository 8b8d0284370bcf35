"""Kill a training run with SIGKILL at random moments, resume it each time, and check it stays exact.

A reference run trains uninterrupted and keeps every checkpoint. The trial run is started, killed with
SIGKILL after a random delay (during a step, an async save or an eval), restarted, killed again, ... and finally
run to the end. Every checkpoint the trial wrote must equal the reference's checkpoint of the same step, bit for
bit, and so must the final parameters. A kill counts only when it interrupted a live run and the attempt wrote a
checkpoint that was compared; kills that landed after the run had finished or before anything was saved are
listed but not counted.

    python scripts/kill_resume.py --kills 20   # prints "C/20 kills compared a checkpoint; C/C exact" when exact
    python scripts/kill_resume.py --rl --kills 5    # the same for PPO on CartPole (environments in the state)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jtrain.checkpoint import load_arrays  # noqa: E402

STEPS = 80
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = [
    f"--config.train.steps={STEPS}", "--config.train.epochs=0", "--config.train.log_every_steps=5",
    "--config.eval.every_steps=20", "--config.checkpoint.every_steps=5", "--config.checkpoint.max_to_keep=1000",
    "--config.data.batch_size=16", "--config.schedule.name=cosine", "--config.schedule.warmup_steps=10",
]


# PPO on CartPole, one step per call: environments, observations and episode counters are part of what must match.
RL_OVERRIDES = [
    f"--config.train.steps={STEPS}", "--config.train.steps_per_call=1", "--config.train.log_every_steps=5",
    "--config.eval.every_steps=20", "--config.checkpoint.every_steps=5", "--config.checkpoint.max_to_keep=1000",
    "--config.schedule.name=cosine", "--config.schedule.warmup_steps=10",
]
RL = False  # --rl


def command(workdir: str) -> list[str]:
    experiment, overrides = ("experiments/cartpole_ppo.py", RL_OVERRIDES) if RL else ("experiments/digits_cnn.py",
                                                                                     OVERRIDES)
    return [sys.executable, "-m", "jtrain", "train", "--config", experiment, *overrides, "--workdir", workdir]


def environment(data_dir: str | None) -> dict:
    env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if data_dir:
        env["JTRAIN_DATA_DIR"] = data_dir
    return env


def identical(a_dir: str, b_dir: str) -> bool:
    a, b = load_arrays(os.path.join(a_dir, "state")), load_arrays(os.path.join(b_dir, "state"))
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def logged_step(workdir: str) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.endswith("}")]
    return json.loads(lines[-1])["step"] if lines else 0


def steps_in(workdir: str) -> list[int]:
    ckpt = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) if os.path.isdir(ckpt) else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: jtrain's)")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--rl", action="store_true", help="PPO on CartPole (experiments/cartpole_ppo.py) instead")
    args = parser.parse_args()
    global RL
    RL = args.rl
    rng = random.Random(args.seed)
    env = environment(args.data_dir)
    root = tempfile.mkdtemp(prefix="jtrain_kill_resume_")
    reference, trial = os.path.join(root, "reference"), os.path.join(root, "trial")

    start = time.perf_counter()
    result = subprocess.run(command(reference), cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"reference run failed: {result.stderr[-2000:]}")
    print(f"reference run: {time.perf_counter() - start:.1f} s, checkpoints {steps_in(reference)}")

    exact = compared = 0
    differences = []
    for i in range(args.kills):
        before = steps_in(trial)
        # A random moment in training progress, not in wall time (start-up time varies with load): wait until
        # a random step has been logged, then a random fraction of a second more - inside a step, an async
        # save (every 5 steps) or an eval (every 20).
        target = rng.randint((before[-1] if before else 0) + 1, STEPS)
        extra = rng.uniform(0.0, 0.5)
        proc = subprocess.Popen(command(trial), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        began, began_wall = time.perf_counter(), time.time()
        metrics = os.path.join(trial, "metrics.jsonl")
        # Lines from before this start do not count (the resumed run rewrites them).
        while proc.poll() is None and not (os.path.exists(metrics) and os.path.getmtime(metrics) > began_wall
                                           and logged_step(trial) >= target):
            time.sleep(0.02)
        time.sleep(extra)
        delay = time.perf_counter() - began
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Every checkpoint this attempt added must equal the reference's, whatever the attempt's end; the next
        # attempt resumes from them.
        new = [s for s in steps_in(trial) if s not in before]
        same = [identical(os.path.join(trial, "checkpoints", str(s)), os.path.join(reference, "checkpoints", str(s)))
                for s in new]
        differences += [s for s, ok in zip(new, same) if not ok]
        finished = bool(steps_in(trial)) and steps_in(trial)[-1] >= STEPS
        # Only a kill of a live run that then wrote a checkpoint on resume tests resume: one that landed after the
        # run ended, or before the attempt saved anything, compared nothing and is not counted as exact.
        if not killed or finished:
            outcome = f"not counted: the attempt ended by itself (exit {proc.returncode})" if not killed else \
                "not counted: the run had finished before the kill"
        elif not new:
            outcome = "not counted: no new checkpoint to compare"
        else:
            compared += 1
            exact += all(same)
            outcome = "exact" if all(same) else "DIFFERENT"
        if finished or (not killed and proc.returncode):
            if not killed and proc.returncode:
                differences.append(f"attempt {i + 1} failed with exit {proc.returncode}")
            # Start over so later kills interrupt a live run.
            shutil.rmtree(trial)
        print(f"kill {i + 1}: {delay:.2f} s after start (step {target} logged + {extra:.2f} s), "
              f"new checkpoints {new}: {outcome}", flush=True)

    subprocess.run(command(trial), cwd=REPO, env=env, check=True, capture_output=True)
    final_ok = identical(os.path.join(trial, "checkpoints", str(STEPS)), os.path.join(reference, "checkpoints", str(STEPS)))
    print(f"final parameters after all resumes: {'exact' if final_ok else 'DIFFERENT'}")
    if differences:
        print(f"differing checkpoints or failed attempts: {differences}")
    print(f"{compared}/{args.kills} kills compared a checkpoint; {exact}/{compared} exact")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if compared and exact == compared and not differences and final_ok else 1


if __name__ == "__main__":
    sys.exit(main())
