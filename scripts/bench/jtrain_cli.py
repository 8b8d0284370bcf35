"""The `jtrain train` command as a user runs it, timed from launch to exit; reports the run's summary.

    python scripts/bench/jtrain_cli.py --workdir-parent DIR (--cache-dir DIR | --fresh-cache) -- \
        --config experiments/digits_cnn.py [--config.K=V ...]

--cache-dir: jtrain's cache directory (JTRAIN_CACHE_DIR), warm when an earlier run used it; --fresh-cache: a new
empty one under --workdir-parent (removed afterwards), a cold compilation cache.
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

from harness import emit, jtrain_env


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir-parent", required=True, help="a fresh workdir is made (and removed) under it")
    cache = p.add_mutually_exclusive_group(required=True)
    cache.add_argument("--cache-dir", help="JTRAIN_CACHE_DIR of the run (its compilation cache)")
    cache.add_argument("--fresh-cache", action="store_true", help="a new empty JTRAIN_CACHE_DIR (a cold cache)")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="run_", dir=a.workdir_parent)
    cache_dir = tempfile.mkdtemp(prefix="cache_", dir=a.workdir_parent) if a.fresh_cache else a.cache_dir
    extra = [x for x in a.train_args if x != "--"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jtrain", "train", "--workdir", workdir, *extra], check=True,
                   stdout=subprocess.DEVNULL, env=jtrain_env(cache_dir))
    elapsed = time.perf_counter() - start
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    shutil.rmtree(workdir)
    if a.fresh_cache:
        shutil.rmtree(cache_dir)
    emit({"process_s": elapsed, "test_accuracy": summary["test"]["accuracy"], "steps": summary["step"],
          "compile_s": summary["time"]["compile_s"], "end_s": summary["time"]["end_s"], "time": summary["time"]})


if __name__ == "__main__":
    main()
