"""Pruning pays: on digits_cnn, TPE with Hyperband pruning against the full grid, over the same 27 trials.

    python scripts/bench/sweep_pruning.py [--quick] [--repeats 3] [--json out.json]

The space is learning rate x conv width x weight decay, three choices each (27 points). The grid trains every
point to the end; TPE + Hyperband (`jtrain.sweep(..., sampler="tpe", pruner="hyperband")`) runs 27 trials over
the same categorical space, each reporting val accuracy every 1/8 of the run (`--eval-every`) and stopped where
Hyperband says. Every trial has the same settings in both (early stopping off, so a finished trial runs every step).
Measured: each sweep's best val accuracy, the gap in points, the training steps summed over its trials (the
trials.csv `steps` column) and their ratio, and each sweep's wall time. The grid runs once (its trials are
deterministic); TPE once per sampler seed (`--repeats`, seeds 0, 1, ...), the grid's run placed after the
first. Target: the pruned sweep within 0.5 points of the grid's best with <= 50% of its training steps.
Each sweep is one fresh worker process (`worker` subcommand) with its workdir in a scratch directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import harness

EXPERIMENT = "experiments/digits_cnn.py"
SPACE = [
    "optim.learning_rate=choice(1e-3,3e-3,1e-2)",
    "model.conv_features=choice((8,16),(16,32),(32,64))",
    "optim.weight_decay=choice(0.0,1e-4,1e-2)",
]
OBJECTIVE = "val.accuracy"
TRIALS = 27  # the grid's size
GAP_POINTS = 0.5
STEP_RATIO = 0.5
EVAL_EVERY = 148  # digits_cnn's 30 epochs are 1180 steps: Hyperband gets 8 reports a trial


def trial_overrides(quick: bool, eval_every: int = EVAL_EVERY) -> list[str]:
    """The settings of every trial, identical in both sweeps."""
    if quick:
        return ["train.steps=20", "eval.every_steps=5", "checkpoint.every_steps=0", "train.log_every_steps=5",
                "train.early_stopping_patience=0"]
    return ["train.epochs=30", f"eval.every_steps={eval_every}", "train.early_stopping_patience=0"]


# ---------------------------------------------------------------- worker (imports jtrain)


def worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sampler", choices=("grid", "tpe"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=TRIALS)
    p.add_argument("--workdir", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--eval-every", type=int, default=EVAL_EVERY)
    a = p.parse_args(argv)
    import jtrain

    pruner = "none" if a.sampler == "grid" else "hyperband"
    start = time.perf_counter()
    frame = jtrain.sweep(EXPERIMENT, a.workdir, space=SPACE, trials=a.trials, sampler=a.sampler, pruner=pruner,
                         objective=OBJECTIVE, direction="max", seed=a.seed,
                         overrides=trial_overrides(a.quick, a.eval_every))
    sweep_s = time.perf_counter() - start
    trials = []
    for r in frame.to_dict("records"):
        steps = r["steps"]
        if steps is None or (isinstance(steps, float) and math.isnan(steps)):  # a trial stopped by an error
            steps = _summary_step(os.path.join(a.workdir, r["workdir"] or ""))
        value = r[OBJECTIVE]
        trials.append({"trial": int(r["trial"]), "state": r["state"], "steps": int(steps),
                       "value": None if value is None or math.isnan(value) else float(value),
                       "params": {k.split(".")[-1]: r[k] for k in (s.split("=")[0] for s in SPACE)}})
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"]) if complete else None
    harness.emit({"sampler": a.sampler, "seed": a.seed, "sweep_s": sweep_s, "trials": trials,
                  "steps": sum(t["steps"] for t in trials), "pruned": sum(t["state"] == "PRUNED" for t in trials),
                  "best": best["value"] if best else None, "best_params": best["params"] if best else None})


def _summary_step(trial_dir: str) -> int:
    try:
        with open(os.path.join(trial_dir, "summary.json")) as f:
            return int(json.load(f).get("step", 0))
    except (OSError, ValueError):
        return 0


# ---------------------------------------------------------------- parent (never imports JAX)


def spread(xs: list[float]) -> str:
    return f"mean {statistics.mean(xs):.3g}, min {min(xs):.3g}, max {max(xs):.3g}" if len(xs) > 1 else f"{xs[0]:.3g}"


def repeated_steps(trials: list[dict]) -> int:
    """Steps a sweep spent re-training params an earlier trial had already trained at least that far: with the
    same seed such a trial repeats the earlier one's numbers."""
    reached: dict[str, int] = {}
    repeated = 0
    for t in sorted(trials, key=lambda t: t["trial"]):
        key = json.dumps(t["params"], sort_keys=True)
        repeated += min(t["steps"], reached.get(key, 0))
        reached[key] = max(reached.get(key, 0), t["steps"])
    return repeated


def result_rows(results: dict[str, dict], seeds: list[int]) -> list[dict]:
    grid = results["grid"]
    tpes = [results[f"tpe{s}"] for s in seeds]
    gaps = [100 * (grid["best"] - t["best"]) for t in tpes]  # points below the grid's best
    ratios = [t["steps"] / grid["steps"] for t in tpes]
    walls = [t["sweep_s"] / grid["sweep_s"] for t in tpes]
    met = [g <= GAP_POINTS and q <= STEP_RATIO for g, q in zip(gaps, ratios)]
    per_seed = "; ".join(f"seed {s}: {t['steps']} steps ({repeated_steps(t['trials'])} re-running params already "
                         f"tried), {sum(x['state'] == 'COMPLETE' for x in t['trials'])} run to the end, "
                         f"best {t['best']:.4f}" for s, t in zip(seeds, tpes))
    near = sum(t["value"] is not None and 100 * (grid["best"] - t["value"]) <= GAP_POINTS for t in grid["trials"])
    tpe_walls = ", ".join(f"{t['sweep_s']:.0f}" for t in tpes)
    return [
        harness.row("sweep pruning: TPE+Hyperband / grid training steps", statistics.mean(ratios),
                    target=f"<= {STEP_RATIO} and gap <= {GAP_POINTS} pt", met=all(met),
                    note=f"{len(tpes)} seed(s), ratio {spread(ratios)}; grid {grid['steps']} steps; {per_seed}"),
        harness.row("sweep pruning: grid best - TPE+Hyperband best val acc", statistics.mean(gaps), unit="points",
                    target=f"<= {GAP_POINTS}", met=all(g <= GAP_POINTS for g in gaps),
                    note=f"gap {spread(gaps)}; grid best {grid['best']:.4f} {grid['best_params']}; {near} of "
                         f"{len(grid['trials'])} grid points within {GAP_POINTS} pt of it"),
        harness.row("sweep pruning: TPE+Hyperband / grid wall time", statistics.mean(walls),
                    note=f"ratio {spread(walls)}; grid {grid['sweep_s']:.0f} s, TPE+Hyperband "
                         f"{tpe_walls} s (no target)"),
    ]


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        return worker(sys.argv[2:])
    p = harness.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--eval-every", type=int, default=EVAL_EVERY,
                   help="eval.every_steps of every trial: Hyperband's rungs (full runs only)")
    args = p.parse_args()
    load_start = harness.load()
    seeds = list(range(1 if args.quick else args.repeats))
    trials = 4 if args.quick else TRIALS
    script = os.path.relpath(os.path.abspath(__file__), harness.ROOT)
    order = [("tpe", seeds[0]), ("grid", 0)] + [("tpe", s) for s in seeds[1:]]
    results: dict[str, dict] = {}
    with harness.scratch_dir("sweep") as tmp:
        for sampler, seed in order:
            name = "grid" if sampler == "grid" else f"tpe{seed}"
            argv = [script, "worker", "--sampler", sampler, "--seed", str(seed), "--trials", str(trials),
                    "--workdir", os.path.join(tmp, name), "--eval-every", str(args.eval_every)]
            argv += ["--quick"] if args.quick else []
            r = harness.run_worker(argv, timeout=3600)
            results[name] = r
            print(f"  {name}: best {r['best']:.4f} {r['best_params']}, {r['steps']} steps, {r['pruned']} pruned, "
                  f"{r['sweep_s']:.0f} s", flush=True)
    rows = result_rows(results, seeds)
    harness.finish(args, "sweep_pruning", rows, results, load_start)


if __name__ == "__main__":
    main()
