"""Framework overhead: jtrain's real training loop vs the hand-written jitted loop, steady-state steps/s.

    python scripts/bench/overhead.py [--quick] [--repeats 3] [--json out.json]

jtrain side (jtrain_loop.py): `jtrain.train(config, workdir)` with the input pipeline, metrics and log lines
every 50 steps (jtrain's default), and an async checkpoint in the middle of the run (every steps/2 steps: more
often than a real run saves, so the ratio is if anything pessimistic); speed from its metrics.jsonl windows
after the first.
Hand-written side (handwritten.py): same model, optimizer and batch size, batches staged on the device
beforehand, state donated. Ratio = jtrain / hand-written, medians of fresh-process repeats in rotating order.
"""

from __future__ import annotations

import harness
from workloads import WORKLOADS

# (jtrain steps, its log interval, hand-written timed steps): a few seconds of steady state on 2 CPU cores.
# The decoder's ~0.7 s steps allow only a short run; its log interval is short so that windows after the first
# (compilation) remain, which makes jtrain pay for ten times more log steps than its experiment's 100.
STEPS = {"tiny": (1000, 50, 20000), "mlp": (200, 50, 300), "cnn": (500, 50, 1000), "decoder": (15, 5, 8)}
QUICK = {"tiny": (120, 10, 200), "mlp": (40, 10, 20), "cnn": (60, 10, 20), "decoder": (6, 2, 2)}
TARGET = {"tiny": 0.8, "mlp": 0.98, "cnn": 0.98, "decoder": 0.98}


def contenders(workload: str, npz: str, workdir: str, quick: bool) -> dict[str, list[str]]:
    jt, log_every, hw = (QUICK if quick else STEPS)[workload]
    return {
        "jtrain": ["scripts/bench/jtrain_loop.py", "--workload", workload, "--steps", str(jt), "--log-every",
                   str(log_every), "--checkpoint-every", str(jt // 2), "--workdir-parent", workdir],
        "handwritten": ["scripts/bench/handwritten.py", "--workload", workload, "--data", npz, "--steps", str(hw)],
    }


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    rows, details = [], {}
    with harness.scratch_dir("overhead") as tmp:
        for workload in WORKLOADS:
            missing = harness.run_worker(["scripts/bench/workloads.py", "available", "--workload", workload])["missing"]
            if missing:  # the decoder, until its model, data and experiment are all in this checkout
                rows.append(harness.row(f"overhead {workload}: jtrain / hand-written", None,
                                        target=f">= {TARGET[workload]}", note=f"not yet: {missing}"))
                continue
            npz = harness.export(workload, tmp)
            print(f"overhead {workload}:")
            results = harness.alternate(contenders(workload, npz, tmp, args.quick), repeats)
            jt, hw = (harness.median(results[k], "steps_per_sec") for k in ("jtrain", "handwritten"))
            same = results["jtrain"][0]["params"] == results["handwritten"][0]["params"]
            ratio = jt / hw
            rows.append(harness.row(f"overhead {workload}: jtrain / hand-written", ratio, target=f">= {TARGET[workload]}",
                                    met=ratio >= TARGET[workload],
                                    note=f"{jt:.0f} vs {hw:.0f} steps/s" + ("" if same else "; PARAMETER COUNTS DIFFER")))
            details[workload] = results
    harness.finish(args, "overhead", rows, details, load_start)


if __name__ == "__main__":
    main()
