"""jtrain's real training loop on a workload: `jtrain.train(config, workdir)` in this (fresh) process.

    python scripts/bench/jtrain_loop.py --workload mlp --steps 1000 --checkpoint-every 500 --workdir-parent DIR

Everything a user's run has is on: the TFDS + grain input pipeline with prefetch, metrics fetched and written
(metrics.jsonl, TensorBoard) every `--log-every` steps with a log line, async checkpoints, the final checkpoint
and summary. Steady-state speed comes from jtrain's own metrics.jsonl: the steps of every log window after
the first (which holds compilation) over the windows' summed time, so checkpoint saves inside the measured
windows are paid for.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time

from harness import emit
from workloads import WORKLOADS, jtrain_config


def steady_steps_per_sec(workdir: str, skip_windows: int = 1, saved_at: tuple[int, ...] = ()) -> tuple[float, int]:
    """(steps / seconds over the train log windows after the first `skip_windows`, steps counted). Windows that
    begin at a step in `saved_at` are left out: the loop logs, then saves, so a save's time falls in the window
    after its step (its background part may reach into the next one)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if r["split"] == "train"]
    steps, seconds, previous = 0, 0.0, 0
    for i, r in enumerate(train):
        window, began = r["step"] - previous, previous
        previous = r["step"]
        if i >= skip_windows and began not in saved_at:
            steps += window
            seconds += window / r["steps_per_sec"]
    return steps / seconds, steps


def count_params(workdir: str) -> int:
    """Parameters in the run's last checkpoint, from its metadata (to check the contenders build the same model)."""
    from jtrain import checkpoint

    directory = os.path.join(workdir, "checkpoints")
    last = max(int(d) for d in os.listdir(directory) if d.isdigit())
    shapes = checkpoint.array_metadata(os.path.join(directory, str(last), "state"))
    return sum(math.prod(shape) for path, (shape, _) in shapes.items() if path.startswith("params/"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True, choices=list(WORKLOADS))
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--workdir-parent", required=True, help="a fresh workdir is made (and removed) under it")
    a = p.parse_args()

    import jtrain  # after argument parsing: a wrong flag fails fast

    config = jtrain_config(a.workload, a.steps, [f"train.log_every_steps={a.log_every}",
                                                 f"checkpoint.every_steps={a.checkpoint_every}"])
    workdir = tempfile.mkdtemp(prefix="run_", dir=a.workdir_parent)
    start = time.perf_counter()
    jtrain.train(config, workdir)
    total = time.perf_counter() - start
    rate, counted = steady_steps_per_sec(workdir)
    saves = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    # What the loop costs apart from its saves: the same windows, less those holding a save.
    between, _ = steady_steps_per_sec(workdir, saved_at=tuple(range(a.checkpoint_every, a.steps, a.checkpoint_every)))
    params = count_params(workdir)
    shutil.rmtree(workdir)
    emit({"steps_per_sec": rate, "steps_counted": counted, "steps_per_sec_between_saves": between,
          "train_call_s": total, "checkpoints_kept": saves, "params": params})


if __name__ == "__main__":
    main()
