"""Curriculum, anti-curriculum, a random order under the same pacing, and plain training, side by side.

    python scripts/curriculum_study.py [--config experiments/digits_curriculum.py] [--seeds 3] [--noise 0.2]
        [--budgets 150,1500] [--markdown FILE]

The training labels get `--noise` of their labels replaced (data.label_noise, the same rows in every run). A
scoring run of another seed trains on them, and `jtrain.score` ranks the training rows by its loss: that file is
every curriculum's difficulty (the flipped labels are among the hardest). Then, per budget (training steps) and
seed, four runs: easy first, hard first, a random ranking under the same pacing (the control), and the plain
shuffled order. Pacing reaches the whole split at 2/3 of the budget. Prints test accuracy, mean +- std over seeds,
and the scoring run's precision at finding the flipped labels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JTRAIN_NO_PROGRESS", "1")

import jtrain  # noqa: E402

ORDERS = ("easy", "hard", "random", "plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "experiments", "digits_curriculum.py"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--budgets", default="150,1500", help="training steps, comma-separated")
    parser.add_argument("--workdir", default="", help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="curriculum-")
    base = jtrain.load_experiment(args.config)
    base.data.label_noise = args.noise

    scorer = base.copy_and_resolve_references()
    scorer.seed = 1000  # not one of the compared seeds
    jtrain.train(scorer, os.path.join(workdir, "scorer"))
    scores = jtrain.score(os.path.join(workdir, "scorer"), "train")
    scores_path = os.path.join(workdir, "scores.csv")
    scores.to_csv(scores_path, index=False)
    flipped = int(scores["flipped"].sum())
    precision = float(scores.head(flipped)["flipped"].mean()) if flipped else float("nan")

    lines = [f"{base.data.name}, {args.noise:.0%} of the training labels replaced; test accuracy, mean +- std over "
             f"{args.seeds} seeds", "", "| steps | " + " | ".join(ORDERS) + " |", "|---" * (len(ORDERS) + 1) + "|"]
    for budget in [int(b) for b in args.budgets.split(",")]:
        cells = []
        for order in ORDERS:
            accs = []
            for seed in range(args.seeds):
                config = base.copy_and_resolve_references()
                config.seed, config.train.steps = seed, budget
                if order != "plain":
                    config.data.curriculum.difficulty = scores_path
                    config.data.curriculum.order = order
                    config.data.curriculum.steps = max(1, 2 * budget // 3)
                summary = jtrain.train(config, os.path.join(workdir, f"{budget}-{order}-{seed}"))
                accs.append(summary["test"]["accuracy"])
            sd = statistics.pstdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.4f} +- {sd:.4f}")
            print(f"steps {budget} {order}: {cells[-1]}", flush=True)
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    lines += ["", f"scoring run (seed 1000): {flipped} flipped labels; precision of the top {flipped} rows by loss "
                  f"{precision:.3f} (chance {flipped / len(scores):.3f})"]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
