"""Start-up and the ends of a run: `import jtrain`, `jtrain --help`, the first step, a re-run's compilation from
the persistent cache, the end of a run and `jtrain eval`, each in fresh processes, medians over the repeats.

    python scripts/bench/startup.py [--quick] [--repeats 3] [--json out.json]

Whole-process wall times, from the parent's launch to the child's exit: `python -c "import jtrain"`,
`python -m jtrain --help` (beside `python -c pass`, the interpreter alone).
First step: `python -m jtrain train --config experiments/digits_cnn.py` logging at step 1 (a log line means the
step's metrics reached the host, so the step has finished); the clock stops when that line appears, launch to
line, with an empty compilation cache. Hand-written: handwritten.py on the same model, which prints
FIRST_STEP_DONE after its first step returns.
Compilation cache: each repeat trains digits_cnn twice in fresh workdirs with JTRAIN_CACHE_DIR at one new empty
directory, cold the first time and warm the second; compared are summary.json's time.compile_s (the loop's
compilation). The end of a run: the warm run's time.end_s (final evaluation and checkpoint, plots).
`python -m jtrain eval --workdir` on the warm run's finished workdir, with that warm cache.
Every jtrain process gets its JTRAIN_CACHE_DIR explicitly (harness.jtrain_env): the user's cache never counts.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import harness

DIGITS = ["--config", "experiments/digits_cnn.py"]


def time_to_line(argv: list[str], marker: str, env: dict) -> float:
    """Seconds from launching `python argv` to the first output line containing `marker`; waits for the exit."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=harness.ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if seen is None and marker in line:
            seen = time.perf_counter() - start
    if proc.wait() != 0 or seen is None:
        raise RuntimeError(f"{' '.join(argv)} failed or never printed {marker!r}:\n{''.join(lines[-15:])}")
    return seen


def process_wall(argv: list[str], env: dict) -> float:
    """Seconds from launching `python argv` to its exit."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=harness.ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return wall


def train(workdir: str, cache_root: str, overrides: list[str]) -> dict:
    """A whole `jtrain train` of digits_cnn: its process wall time and summary.json's time fields."""
    wall = process_wall(["-m", "jtrain", "train", *DIGITS, *overrides, "--workdir", workdir],
                        harness.jtrain_env(cache_root))
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    return {"wall_s": wall, "test_accuracy": summary["test"]["accuracy"], **summary["time"]}


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    overrides = ["--config.train.epochs=1"] if args.quick else []
    details: dict[str, list] = {k: [] for k in ("python", "import", "help", "jtrain_first_step",
                                                "handwritten_first_step", "cold", "warm", "eval")}
    with harness.scratch_dir("startup") as tmp:
        npz = harness.export("cnn", tmp)
        unused_cache = os.path.join(tmp, "no_cache")  # import and --help compile nothing; never the user's cache
        light = {"python": ["-c", "pass"], "import": ["-c", "import jtrain"], "help": ["-m", "jtrain", "--help"]}
        for r in range(repeats):
            names = list(light)[r % 3:] + list(light)[:r % 3]
            for name in names:
                details[name].append(process_wall(light[name], harness.jtrain_env(unused_cache)))
            print(f"  [{r + 1}/{repeats}] " + ", ".join(f"{n} {details[n][-1]:.3f} s" for n in light))

            first_step = {
                "jtrain_first_step": ["-m", "jtrain", "train", *DIGITS, "--config.train.steps=1",
                                      "--config.train.log_every_steps=1", "--workdir",
                                      tempfile.mkdtemp(prefix="first_", dir=tmp)],
                "handwritten_first_step": ["scripts/bench/handwritten.py", "--workload", "cnn", "--data", npz,
                                           "--steps", "1", "--warmup", "1"],
            }
            markers = {"jtrain_first_step": "step 1/1 train", "handwritten_first_step": "FIRST_STEP_DONE"}
            for name in (list(first_step) if r % 2 == 0 else list(first_step)[::-1]):
                env = harness.jtrain_env(tempfile.mkdtemp(prefix="cache_", dir=tmp))  # empty: compiles from scratch
                details[name].append(time_to_line(first_step[name], markers[name], env))
            print(f"  [{r + 1}/{repeats}] first step: jtrain {details['jtrain_first_step'][-1]:.2f} s, "
                  f"hand-written {details['handwritten_first_step'][-1]:.2f} s")

            cache = tempfile.mkdtemp(prefix="cache_", dir=tmp)  # empty: the first run is cold, the second warm
            for state in ("cold", "warm"):
                workdir = tempfile.mkdtemp(prefix=f"{state}_", dir=tmp)
                details[state].append(train(workdir, cache, overrides))
                t = details[state][-1]
                print(f"  [{r + 1}/{repeats}] train, {state} cache: {t['wall_s']:.2f} s (before train "
                      f"{t.get('before_train_s', float('nan')):.2f}, build {t['build_s']:.2f}, loop {t['total_s']:.2f}"
                      f" of which compile {t['compile_s']:.2f}, end {t['end_s']:.2f}), test acc {t['test_accuracy']:.3f}")
            details["eval"].append(process_wall(["-m", "jtrain", "eval", "--workdir", workdir],
                                                harness.jtrain_env(cache)))
            print(f"  [{r + 1}/{repeats}] jtrain eval, warm cache: {details['eval'][-1]:.2f} s")

    med = {k: statistics.median(v) for k, v in details.items() if v and not isinstance(v[0], dict)}
    cold = {k: statistics.median(t[k] for t in details["cold"]) for k in details["cold"][0] if k != "test_accuracy"}
    warm = {k: statistics.median(t[k] for t in details["warm"]) for k in details["warm"][0] if k != "test_accuracy"}
    compile_ratio = statistics.median(w["compile_s"] / c["compile_s"] for c, w in zip(details["cold"], details["warm"]))

    def breakdown(t: dict) -> str:
        return (f"before train {t.get('before_train_s', float('nan')):.2f}, build {t['build_s']:.2f}, loop "
                f"{t['total_s']:.2f} (compile {t['compile_s']:.2f}), end {t['end_s']:.2f}")

    rows = [
        harness.row("import jtrain (whole process)", med["import"], unit="s", target="< 0.5 s",
                    met=med["import"] < 0.5, note=f"python -c pass {med['python']:.3f} s"),
        harness.row("jtrain --help (whole process)", med["help"], unit="s", target="< 0.5 s", met=med["help"] < 0.5,
                    note=f"python -c pass {med['python']:.3f} s"),
        harness.row("startup to first step: jtrain / hand-written", med["jtrain_first_step"] /
                    med["handwritten_first_step"], note=f"{med['jtrain_first_step']:.1f} s vs "
                    f"{med['handwritten_first_step']:.1f} s, empty compilation caches (no target)"),
        harness.row("compile warm / cold (digits_cnn re-run)", compile_ratio, target="< 0.2", met=compile_ratio < 0.2,
                    note=f"time.compile_s {warm['compile_s']:.2f} s vs {cold['compile_s']:.2f} s (medians)"),
        harness.row("digits_cnn train, cold cache (whole process)", cold["wall_s"], unit="s",
                    note=breakdown(cold) + " (no target)"),
        harness.row("digits_cnn train, warm cache (whole process)", warm["wall_s"], unit="s",
                    note=breakdown(warm) + " (no target)"),
        harness.row("end of a run (time.end_s, warm cache)", warm["end_s"], unit="s", target="< 0.5 s",
                    met=warm["end_s"] < 0.5, note=f"cold cache {cold['end_s']:.2f} s"),
        harness.row("jtrain eval on a finished digits run (whole process, warm cache)", med["eval"], unit="s",
                    target="< 2 s", met=med["eval"] < 2),
    ]
    harness.finish(args, "startup", rows, details, load_start)


if __name__ == "__main__":
    main()
