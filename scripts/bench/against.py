"""This checkout against another commit, side by side in one run: the speed guard of a change to the loop.

    python scripts/bench/against.py --base REV [--only overhead,input_pipeline] [--rounds 3] [--quick]

REV is checked out into a temporary git worktree. Every round runs each chosen benchmark script once in each
checkout (one repeat per contender, the two checkouts' order alternating from round to round), so drifting
load on the machine hits both alike; each row is then the median over the rounds, base and new side by side.
Each checkout runs its own scripts with its own jtrain. Not a test: nothing fails on a difference.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import harness


def run_script(checkout: str, name: str, out: str, quick: bool) -> list[dict]:
    argv = [sys.executable, os.path.join(checkout, "scripts", "bench", f"{name}.py"), "--json", out, "--repeats", "1"]
    proc = subprocess.run(argv + (["--quick"] if quick else []), cwd=checkout, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        raise RuntimeError(f"{name}.py in {checkout} failed (exit {proc.returncode}):\n{tail}")
    with open(out) as f:
        return json.load(f)["rows"]


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0], repeats=1)
    p.add_argument("--base", required=True, help="the commit to compare with, e.g. HEAD~3")
    p.add_argument("--only", default="overhead,input_pipeline", help="comma-separated benchmark scripts")
    p.add_argument("--rounds", type=int, default=3, help="runs of every script in each checkout (median reported)")
    args = p.parse_args()
    names = args.only.split(",")
    rounds = 1 if args.quick else args.rounds
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=harness.ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    load_start = harness.load()
    values: dict[str, dict[str, list[float]]] = {}  # benchmark -> checkout -> measured per round
    with tempfile.TemporaryDirectory(prefix="jtrain_bench_against_") as tmp:
        base = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", base, base_rev], cwd=harness.ROOT, check=True)
        try:
            checkouts = {"base": base, "new": harness.ROOT}
            for r in range(rounds):
                order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
                for name in names:
                    for side in order:
                        print(f"round {r + 1}/{rounds}: {name} ({side})", flush=True)
                        out = os.path.join(tmp, f"{side}_{name}_{r}.json")
                        for row in run_script(checkouts[side], name, out, args.quick):
                            if row["measured"] is not None:
                                values.setdefault(row["benchmark"], {}).setdefault(side, []).append(row["measured"])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base], cwd=harness.ROOT, check=False)
    rows = []
    for benchmark, sides in values.items():
        old, new = (statistics.median(sides[s]) if sides.get(s) else None for s in ("base", "new"))
        note = f"base {base_rev}: {old:.3g}" if old is not None else f"base {base_rev}: not measured"
        diff = None if old is None or new is None else new - old
        rows.append(harness.row(benchmark, new, note=note + ("" if diff is None else f"; new - base {diff:+.3f}")))
    harness.finish(args, f"against {base_rev}", rows, values, load_start)


if __name__ == "__main__":
    main()
