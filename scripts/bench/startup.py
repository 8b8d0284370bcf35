"""Start-up: seconds from process start to the first finished training step, the default experiment's CNN.

    python scripts/bench/startup.py [--quick] [--repeats 3] [--json out.json]

jtrain: `python -m jtrain train --config experiments/digits_cnn.py` logging at step 1 (a log line means the
step's metrics reached the host, so the step has finished); the clock stops when that line appears.
Hand-written: handwritten.py on the same model, which prints FIRST_STEP_DONE after its first step returns.
Both clocks start when the parent launches the process (interpreter start, imports, data, compile included).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import harness


def time_to_line(argv: list[str], marker: str) -> float:
    """Seconds from launching `python argv` to the first output line containing `marker`; waits for the exit."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=harness.ROOT, env=harness.worker_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if seen is None and marker in line:
            seen = time.perf_counter() - start
    if proc.wait() != 0 or seen is None:
        raise RuntimeError(f"{' '.join(argv)} failed or never printed {marker!r}:\n{''.join(lines[-15:])}")
    return seen


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    with harness.scratch_dir("startup") as tmp:
        npz = harness.export("cnn", tmp)
        contenders = {
            "jtrain": (["-m", "jtrain", "train", "--config", "experiments/digits_cnn.py", "--config.train.steps=1",
                        "--config.train.log_every_steps=1", "--workdir", f"{tmp}/run"], "step 1/1 train"),
            "handwritten": (["scripts/bench/handwritten.py", "--workload", "cnn", "--data", npz, "--steps", "1",
                             "--warmup", "1"], "FIRST_STEP_DONE"),
        }
        times = {name: [] for name in contenders}
        for r in range(repeats):
            for name in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
                if name == "jtrain":
                    subprocess.run(["rm", "-rf", f"{tmp}/run"], check=True)  # a fresh run, never a resume
                times[name].append(time_to_line(*contenders[name]))
                print(f"  [{r + 1}/{repeats}] {name}: {times[name][-1]:.2f} s to the first finished step")
    jt, hw = statistics.median(times["jtrain"]), statistics.median(times["handwritten"])
    rows = [harness.row("startup to first step: jtrain / hand-written", jt / hw,
                        note=f"{jt:.1f} s vs {hw:.1f} s (no target)")]
    harness.finish(args, "startup", rows, times, load_start)


if __name__ == "__main__":
    main()
