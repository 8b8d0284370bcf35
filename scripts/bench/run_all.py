"""`make bench`: every benchmark in turn, then one table of ratios (benchmark, measured, target, met?).

    python scripts/bench/run_all.py [--quick] [--repeats N] [--only overhead,peers] [--markdown FILE]

Each benchmark script runs as its own process (and starts its own fresh worker per measurement); this script
only collects their rows. The machine (CPU model, cores, load before and after, versions) heads the output,
since every number below depends on it. Not a test: nothing here fails on a missed target.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import harness

SCRIPTS = ("overhead", "peers", "input_pipeline", "own_data", "startup", "checkpoint", "time_to_accuracy", "mfu")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions() -> str:
    out = []
    for package in ("jax", "flax", "optax", "orbax-checkpoint", "grain", "keras", "torch"):
        try:
            out.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{package} missing")
    return ", ".join(out)


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0], repeats=0)  # 0: each script's own (5 for the overhead and input rows)
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    p.add_argument("--markdown", default="", help="also write the machine line and the table to this file")
    args = p.parse_args()
    chosen = [s for s in SCRIPTS if not args.only or s in args.only.split(",")]
    machine = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; {versions()}"
    load_start = harness.load()
    print(f"machine: {machine}\nload average at start: {load_start:.2f}\n", flush=True)
    rows, started = [], time.perf_counter()
    with harness.scratch_dir("all") as tmp:
        for name in chosen:
            out = os.path.join(tmp, f"{name}.json")
            argv = [sys.executable, os.path.join(harness.BENCH_DIR, f"{name}.py"), "--json", out, "--share", tmp]
            argv += (["--quick"] if args.quick else []) + (["--repeats", str(args.repeats)] if args.repeats else [])
            print(f"=== {name}", flush=True)
            t = time.perf_counter()
            code = subprocess.run(argv, cwd=harness.ROOT, env=harness.worker_env()).returncode
            if code != 0 or not os.path.exists(out):
                rows.append(harness.row(name, None, note=f"FAILED (exit {code}); see its output above"))
                continue
            with open(out) as f:
                result = json.load(f)
            for r in result["rows"]:
                r["note"] += f" [load {result['load_start']:.1f}->{result['load_end']:.1f}]"
            rows += result["rows"]
            print(f"=== {name}: {time.perf_counter() - t:.0f} s\n", flush=True)
    minutes = (time.perf_counter() - started) / 60
    load_end = harness.load()
    table = harness.format_table(rows)
    summary = (f"machine: {machine}\nload average (1 min): {load_start:.2f} at start, {load_end:.2f} at end; "
               f"{minutes:.1f} minutes{'; --quick: NOT a measurement' if args.quick else ''}\n\n{table}\n")
    print("\n" + summary)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(summary)


if __name__ == "__main__":
    main()
