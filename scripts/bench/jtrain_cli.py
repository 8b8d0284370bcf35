"""The `jtrain train` command as a user runs it, timed from launch to exit; reports the run's summary.

    python scripts/bench/jtrain_cli.py --workdir-parent DIR -- --config experiments/digits_cnn.py [--config.K=V ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from harness import emit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir-parent", required=True, help="a fresh workdir is made (and removed) under it")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="run_", dir=a.workdir_parent)
    extra = [x for x in a.train_args if x != "--"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jtrain", "train", "--workdir", workdir, *extra], check=True,
                   stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    shutil.rmtree(workdir)
    emit({"process_s": elapsed, "test_accuracy": summary["test"]["accuracy"], "steps": summary["step"]})


if __name__ == "__main__":
    main()
