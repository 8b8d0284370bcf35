"""Input pipeline: jtrain's real TFDS + grain path against batches staged on the device, MLP at batch 128 and 1024.

    python scripts/bench/input_pipeline.py [--quick] [--repeats 5] [--json out.json] [--diagnose]

Each measurement is a fresh worker that builds the run with `jtrain.components.build` and times steady-state
calls of the loop's jitted, donated step (`run.train_call(1)`) fed in one of three ways:
  pipeline  the loop's feed (`jtrain.feed.for_run`: the grain pipeline with data.prefetch=2 stacking T batches,
            one copy to the device per T, uint8 images standardised there, each call taking the next call's
            batch) -> step, as train.py
  staged    the first 32 batches the feed produced, kept on the device and cycled -> the step alone
  loader    the feed's host pipeline alone, no training: batches/s it can deliver
Reported: pipeline / staged (target >= 0.97) and loader / staged (how many times what training consumes).
"""

from __future__ import annotations

import argparse
import time

import harness

# (workload, batch size) -> steps timed. --diagnose times the other workloads at their own batch sizes instead,
# to split overhead.py's gap into the cost of jtrain's step (staged) and of its input (pipeline).
# ~1.5 s a measurement: with 0.6 s (150 and 25 steps) one slow repeat on a shared machine decided the median.
CASES = {("mlp", 128): 400, ("mlp", 1024): 75}
DIAGNOSE = {("tiny", 8): 2000, ("cnn", 32): 500}
TARGET = 0.97


def worker(mode: str, workload: str, batch: int, steps: int) -> None:
    import jax

    from jtrain import components, feed
    from workloads import jtrain_config

    config = jtrain_config(workload, steps, [f"data.batch_size={batch}"])
    run = components.build(config)
    batches = feed.for_run(run, config.seed)
    warmup = 5
    if mode == "loader":
        host = batches.pipeline  # the grain pipeline under the feed: (T, B, ...) per element
        for _ in range(2):
            next(host)
        chunks = max(2, steps // batches.per_transfer)
        start = time.perf_counter()
        for _ in range(chunks):
            next(host)
        harness.emit({"per_sec": chunks * batches.per_transfer / (time.perf_counter() - start)})
        return
    leaves = run.state_codec.flatten(run.init())  # the calls take and return the state as flat arrays
    if mode == "staged":
        # The feed's first 32 batches as its calls receive them (an echo in place of the step), then cycled.
        echo = batches.calls(lambda n: jax.jit(lambda arrays, batch: (arrays, batch)))
        staged = [echo([], 1)[1] for _ in range(min(steps, 32))]
        jax.block_until_ready(staged)
        step = run.train_call(1)  # (arrays, batch) -> (arrays, metrics)
        call = lambda leaves, i: step(leaves, staged[i % len(staged)])
    else:
        loop_call = batches.calls(run.train_call)  # the loop's: the step and the next batch's take in one call
        call = lambda leaves, i: loop_call(leaves, 1)
    for i in range(warmup):  # the first compiles
        leaves, metrics = call(leaves, i)
    jax.block_until_ready(leaves)
    start = time.perf_counter()
    for i in range(steps):
        leaves, metrics = call(leaves, i)
    jax.block_until_ready(leaves)
    harness.emit({"per_sec": steps / (time.perf_counter() - start)})


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0], repeats=5)  # rows within a few percent of the target
    p.add_argument("--diagnose", action="store_true", help="the tiny MLP and the CNN instead (not in make bench)")
    p.add_argument("--worker", nargs=4, metavar=("MODE", "WORKLOAD", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        mode, workload, batch, steps = args.worker
        return worker(mode, workload, int(batch), int(steps))
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    rows, details = [], {}
    cases = DIAGNOSE if args.diagnose else CASES
    with harness.scratch_dir("input") as tmp:
        for (workload, batch), steps in cases.items():
            steps = max(5, steps // 10) if args.quick else steps
            name = f"{workload.upper() if workload == 'mlp' else workload} b{batch}"
            print(f"input pipeline, {name}:")
            argv = lambda mode: ["scripts/bench/input_pipeline.py", "--worker", mode, workload, str(batch), str(steps)]
            results = harness.alternate({m: argv(m) for m in ("pipeline", "staged", "loader")}, repeats,
                                        env=harness.cached_compile_env(tmp))
            pipe, staged, loader = (harness.median(results[m], "per_sec") for m in ("pipeline", "staged", "loader"))
            rows.append(harness.row(f"input pipeline {name}: real / staged", pipe / staged, target=f">= {TARGET}",
                                    met=pipe / staged >= TARGET,
                                    note=f"{harness.rate(pipe)} vs {harness.rate(staged)} steps/s"))
            rows.append(harness.row(f"loader alone {name}: batches/s / steps/s", loader / staged,
                                    note=f"{harness.rate(loader)} batches/s = {loader * batch:.0f} examples/s"))
            details[f"{workload}_b{batch}"] = results
    harness.finish(args, "input_pipeline", rows, details, load_start)


if __name__ == "__main__":
    main()
