"""Re-measure the README's experiments table: run each experiment as a user would, print its row's figures.

    python scripts/experiments_table.py                 # the quick experiments (seconds each)
    python scripts/experiments_table.py --all           # also the long ones (minutes to an hour each)
    python scripts/experiments_table.py --only digits_mlp_l2,diabetes_regression

Each experiment runs through the CLI (`python -m jtrain train --config experiments/NAME.py`) in a fresh
temporary workdir; the figures come from its summary.json, the wall time from the clock around the command. The
commit measured is printed with every row, so a figure in the README can say where it came from. Runs that need
another run first (SFT and DPO start from the char GPT) get it from this script's own run of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# name -> (quick?, figures from summary.json, experiment it starts from)
EXPERIMENTS = {
    "digits_cnn": (True, lambda s: f"{_pct(s['test']['accuracy'])} test accuracy", None),
    "diabetes_regression": (True, lambda s: f"test R^2 {s['test']['r2']:.3f} (MSE {s['test']['mse']:.0f}, "
                                            f"MAE {s['test']['mae']:.0f} in target units)", None),
    "breast_cancer_binary": (True, lambda s: f"test ROC-AUC {s['test']['roc_auc']:.3f}, accuracy "
                                             f"{_pct(s['test']['accuracy'])}, F1 {s['test']['f1']:.3f}", None),
    "digits_mlp_l2": (True, lambda s: f"stops at step {s['step']} (best {s.get('best', {}).get('step', '?')}), "
                                      f"{_pct(s['test']['accuracy'])} test accuracy", None),
    "fashion_mnist_cnn": (False, lambda s: f"{_pct(s['test']['accuracy'])} test accuracy (val "
                                           f"{_pct(s['val']['accuracy'])})", None),
    "shakespeare_char_gpt": (False, lambda s: f"val {s['val']['loss']:.3f} nats/char, test "
                                              f"{s['test']['loss']:.3f}", None),
    "shakespeare_char_sft": (False, lambda s: f"val response loss {s['val']['loss']:.3f} nats", "shakespeare_char_gpt"),
    "shakespeare_char_dpo": (False, lambda s: f"held-out preference accuracy {_pct(s['val']['preference_accuracy'])}, "
                                              f"reward accuracy {_pct(s['val']['reward_accuracy'])}",
                             "shakespeare_char_gpt"),
    "cartpole_ppo": (True, lambda s: f"greedy test return {s['test'].get('return_mean', float('nan')):.1f}", None),
}


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def run(name: str, workdir: str, pretrained: str | None) -> tuple[dict, float]:
    command = [sys.executable, "-m", "jtrain", "finetune" if pretrained else "train", "--config",
               f"experiments/{name}.py", "--workdir", workdir]
    if pretrained:
        command[4:4] = ["--pretrained", pretrained]
    began = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "JTRAIN_NO_PROGRESS": "1"}, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{name}: exit {result.returncode}\n{result.stderr[-2000:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="also the experiments that take minutes or more")
    parser.add_argument("--only", default="", help="comma-separated experiment names")
    parser.add_argument("--workdir", default="", help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or [n for n, (quick, _, _) in EXPERIMENTS.items()
                                                       if quick or args.all]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiment {unknown[0]!r}; known: {', '.join(EXPERIMENTS)}")
    root = args.workdir or tempfile.mkdtemp(prefix="experiments-")
    at = commit()
    done: dict[str, str] = {}
    print(f"| experiment | result | wall time (s) | commit |\n|---|---|---|---|", flush=True)
    for name in names:
        _, figures, parent = EXPERIMENTS[name]
        if parent and parent not in done:
            run(parent, os.path.join(root, parent), None)
            done[parent] = os.path.join(root, parent)
        summary, seconds = run(name, os.path.join(root, name), done.get(parent) if parent else None)
        done[name] = os.path.join(root, name)
        print(f"| `{name}.py` | {figures(summary)} | {seconds:.0f} | {at} |", flush=True)


if __name__ == "__main__":
    main()
