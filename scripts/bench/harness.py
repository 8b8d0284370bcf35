"""What every benchmark shares: fresh worker processes, alternating order, medians, machine load, the result rows.

A benchmark script is a parent that never imports JAX: it starts one worker process per measurement (a worker
prints one `RESULT {json}` line), rotates the order of the contenders on every repeat so that drifting load
hits each of them alike, and reports medians. Each row it reports is
`{"benchmark", "measured", "unit", "target", "met", "note"}`; run_all.py collects the rows into one table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(BENCH_DIR))
RESULT = "RESULT "


def worker_env(**extra: str) -> dict:
    """The workers import jtrain from this checkout (installed or not) and never draw a progress bar."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, BENCH_DIR] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["JTRAIN_NO_PROGRESS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("KERAS_BACKEND", "jax")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra)
    return env


def jtrain_env(cache_root: str, **extra: str) -> dict:
    """worker_env for a jtrain process whose persistent compilation cache lives in `cache_root` (JTRAIN_CACHE_DIR):
    an empty directory is a cold cache, one a previous run filled a warm one; the user's own cache never counts."""
    env = worker_env(JTRAIN_CACHE_DIR=cache_root, **extra)
    for name in ("JAX_COMPILATION_CACHE_DIR", "JTRAIN_COMPILATION_CACHE"):  # they would override JTRAIN_CACHE_DIR
        if name not in extra:
            env.pop(name, None)
    return env


def cached_compile_env(directory: str) -> dict:
    """worker_env with JAX's persistent compilation cache in `directory`: a repeat loads the executables the
    first run compiled instead of compiling again. Only for steady-state measurements (compilation is not
    timed there); start-up and time-to-accuracy give jtrain an explicit cold or warm cache (jtrain_env)."""
    return worker_env(JAX_COMPILATION_CACHE_DIR=os.path.join(directory, "jax_cache"),
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def run_worker(argv: list[str], timeout: float = 600, env: dict | None = None) -> dict:
    """Runs `python argv...` in a fresh process; returns its RESULT dict plus `wall_s` (the whole process)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env or worker_env(), capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"worker {' '.join(argv)} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len(RESULT):])
    result["wall_s"] = wall
    return result


def export(workload: str, out_dir: str, with_test: bool = False) -> str:
    """The workload's standardised arrays as OUT/<workload>.npz (workloads.py export, in a worker)."""
    argv = ["scripts/bench/workloads.py", "export", "--workload", workload, "--out", out_dir]
    return run_worker(argv + (["--with-test"] if with_test else []))["path"]


def emit(result: dict) -> None:
    """A worker's one line of output for its parent."""
    print(RESULT + json.dumps(result), flush=True)


def alternate(contenders: dict[str, list[str]], repeats: int, env: dict | None = None, log=print
              ) -> dict[str, list[dict]]:
    """Runs each contender's worker `repeats` times, rotating the order each round (A B C, B C A, C A B, ...)."""
    names = list(contenders)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            result = run_worker(contenders[name], env=env)
            out[name].append(result)
            shown = {key: round(v, 4) if isinstance(v, float) else v for key, v in result.items()
                     if not isinstance(v, (list, dict))}
            log(f"  [{r + 1}/{repeats}] {name}: {shown}")
    return out


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def rate(x: float) -> str:
    """A speed with three significant digits: 12600, 131, 0.717."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def load() -> float:
    return os.getloadavg()[0]


def row(benchmark: str, measured: float | None, unit: str = "x", target: str = "", met: bool | None = None,
        note: str = "") -> dict:
    """One line of the table. `met` None = no target (informational) or not measurable here."""
    return {"benchmark": benchmark, "measured": measured, "unit": unit, "target": target, "met": met, "note": note}


def format_measured(r: dict) -> str:
    if r["measured"] is None:
        return "-"
    value = r["measured"]
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{text} {r['unit']}".strip() if r["unit"] != "x" else f"{text}x"


def format_table(rows: list[dict]) -> str:
    header = ("benchmark", "measured", "target", "met?", "note")
    cells = [header] + [(r["benchmark"], format_measured(r), r["target"] or "-",
                         {True: "yes", False: "NO", None: "-"}[r["met"]], r["note"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(header))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def parser(description: str, repeats: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny step counts and 1 repeat: checks that it runs")
    p.add_argument("--repeats", type=int, default=repeats, help="fresh-process repeats per contender (median reported)")
    p.add_argument("--json", default="", help="also write the result rows and details to this file")
    p.add_argument("--share", default="", help=argparse.SUPPRESS)  # run_all.py: overhead.py and peers.py share runs
    return p


def finish(args, name: str, rows: list[dict], details: dict, load_start: float) -> None:
    """Prints the script's rows (with the load at start and end) and writes them for run_all.py."""
    load_end = load()
    print(f"\n{name}: load average {load_start:.2f} at start, {load_end:.2f} at end "
          f"({os.cpu_count()} cores){' [--quick: not a measurement]' if args.quick else ''}")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"name": name, "rows": rows, "details": details, "load_start": load_start,
                       "load_end": load_end, "quick": args.quick}, f, indent=1)


def remove(path: str) -> None:
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"jtrain_bench_{prefix}_")
