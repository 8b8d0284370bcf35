"""Sequence-length warm-up against plain training of the char GPT at rising learning rates.

    python scripts/seq_len_warmup_study.py [--lrs 2e-3,1.6e-2,6.4e-2] [--steps 300] [--warmup 150] [--seeds 1]

For each learning rate (the experiment's is 2e-3) two runs of experiments/shakespeare_char_gpt.py, cut to
`--steps`: as it is, and with data.seq_len_warmup=`--warmup` (the context grows from 16 to 128 tokens). Prints,
per run: the final val loss (nats per character, the 3 held-out plays), the train loss of the last log window, the
largest train-loss rise between consecutive log windows after the first 50 steps (a spike), and whether the loss
went non-finite. A run that diverges is one whose final loss is above the unigram entropy of the characters
(about 3.3 nats) or non-finite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JTRAIN_NO_PROGRESS", "1")

import jtrain  # noqa: E402
from jtrain.errors import TrainingError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lrs", default="2e-3,1.6e-2,6.4e-2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="seq-len-warmup-")
    lines = ["| learning rate | seed | seq_len warm-up | val loss | last train loss | largest rise | non-finite |",
             "|---|---|---|---|---|---|---|"]
    for lr in [float(x) for x in args.lrs.split(",")]:
        for seed in range(args.seeds):
            for warm in (0, args.warmup):
                config = jtrain.load_experiment(os.path.join(ROOT, "experiments", "shakespeare_char_gpt.py"))
                config.seed, config.optim.learning_rate, config.train.steps = seed, lr, args.steps
                config.data.seq_len_warmup = warm
                config.train.log_every_steps, config.eval.every_steps = 10, 0
                config.checkpoint.every_steps = 0
                run_dir = os.path.join(workdir, f"lr{lr:g}-seed{seed}-warm{warm}")
                val, failed = float("nan"), False
                try:
                    val = jtrain.train(config, run_dir)["val"]["loss"]
                except TrainingError:
                    failed = True
                records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
                losses = [(r["step"], r["loss"]) for r in records if r["split"] == "train" and "loss" in r]
                later = [v for s, v in losses if s > 50]
                rise = max((b - a for a, b in zip(later, later[1:])), default=float("nan"))
                nonfinite = failed or any(not math.isfinite(v) for _, v in losses)
                lines.append(f"| {lr:g} | {seed} | {warm or 'off'} | {val:.3f} | {losses[-1][1]:.3f} | {rise:.3f} | "
                             f"{'yes' if nonfinite else 'no'} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
