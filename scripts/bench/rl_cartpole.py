"""Reinforcement learning on CartPole: PPO's time to solve it, vmapped agents, and rollout throughput.

    python scripts/bench/rl_cartpole.py [--quick] [--seeds 3] [--json out.json]

Three rows, each measured in fresh processes with an empty compilation cache (a user's first run):

    solve       `jtrain train --config experiments/cartpole_ppo.py` (491,520 environment steps) for each of --seeds
                seeds: the test split's mean return over 100 greedy episodes (solved: >= 475) and the process's
                wall time from launch to exit (target: under 2 minutes)
    agents      the same run with rl.num_seeds=8 against rl.num_seeds=1, seed 0: wall time of the whole process
                and of the training loop (target: 8 agents in under 3x one agent's time)
    rollout     environment steps per second of jtrain's rollout alone (the PPO method's collect, jitted: policy
                forward pass, action draw, gymnax step and reset, episode counters, GAE) against gymnax's own
                step with uniformly random actions, both vmapped over 8 environments and scanned over 128 steps,
                and of whole PPO training steps (rollout + 16 minibatch updates) from the run's log
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENT = "experiments/cartpole_ppo.py"


def train(workdir: str, *overrides: str) -> tuple[float, dict]:
    """(process wall seconds, summary.json) of one CLI training run with a cold compilation cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "JTRAIN_CACHE_DIR": cache,
               "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "jtrain", "train", "--config", EXPERIMENT, *overrides,
                                 "--workdir", workdir], cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"training failed: {result.stderr[-3000:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
        return wall, json.load(f)


def rollout_rates(repeats: int) -> tuple[float, float]:
    """(jtrain rollout env steps/s, gymnax random-policy env steps/s), medians of `repeats` timings."""
    sys.path.insert(0, REPO)
    import gymnax
    import jax
    import jax.numpy as jnp

    from jtrain import components
    from jtrain.config import load_experiment

    config = load_experiment(os.path.join(REPO, EXPERIMENT))
    run = components.build(config)
    state = run.init()
    n, t = config.env.num_envs, config.rl.num_steps
    calls = 50
    collect = jax.jit(lambda state, key: run.method.collect(run.model, state, {}, key)[0])

    env, params = gymnax.make("CartPole-v1")

    @jax.jit
    def random_rollout(carry, key):
        def one(carry, key):
            state = carry
            action_key, step_key = jax.random.split(key)
            action = jax.random.randint(action_key, (n,), 0, 2)
            _, state, reward, done, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(step_key, n), state, action, params)
            return state, reward.sum() + done.sum()

        return jax.lax.scan(one, carry, jax.random.split(key, t))

    _, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(0), n), params)

    def timed(fn, carry):
        keys = jax.random.split(jax.random.key(1), calls + 1)
        carry = jax.block_until_ready(fn(carry, keys[0]))  # compiled
        start = time.perf_counter()
        for key in keys[1:]:
            carry = fn(carry, key)
        jax.block_until_ready(carry)
        return calls * n * t / (time.perf_counter() - start)

    ours = [timed(collect, state) for _ in range(repeats)]
    theirs = [timed(lambda c, k: random_rollout(c, k)[0], env_state) for _ in range(repeats)]
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer steps: checks that it runs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        short = ["--config.train.steps=64"] if args.quick else []
        solved = []
        for seed in range(1 if args.quick else args.seeds):
            wall, summary = train(os.path.join(tmp, f"seed{seed}"), f"--config.seed={seed}", *short)
            solved.append((wall, summary))
            print(f"seed {seed}: test return {summary['test']['return_mean']:.1f} +- "
                  f"{summary['test']['return_std']:.1f} in {wall:.1f} s "
                  f"({summary['train']['env_steps_per_sec']:.0f} env steps/s in training)", flush=True)
        returns = [s["test"]["return_mean"] for _, s in solved]
        walls = [w for w, _ in solved]
        steps = solved[0][1]["step"] * 8 * 128
        rows.append({"benchmark": "PPO CartPole-v1: mean greedy return over 100 episodes", "measured": min(returns),
                     "target": ">= 475", "met": min(returns) >= 475,
                     "note": f"each of {len(returns)} seeds: {', '.join(f'{r:.1f}' for r in returns)}; {steps:,} env steps"})
        rows.append({"benchmark": "PPO CartPole-v1: seconds launch to exit", "measured": max(walls),
                     "target": "< 120", "met": max(walls) < 120,
                     "note": f"slowest of {len(walls)}: {', '.join(f'{w:.1f}' for w in walls)} s (cold compilation cache)"})
        one_wall, one = solved[0]
        eight_wall, eight = train(os.path.join(tmp, "eight"), "--config.rl.num_seeds=8", *short)
        loop = lambda s: s["time"]["total_s"]
        print(f"8 agents: {eight_wall:.1f} s, loop {loop(eight):.1f} s, test return {eight['test']['return_mean']:.1f}",
              flush=True)
        rows.append({"benchmark": "8 vmapped agents / 1 agent, process wall time", "measured": eight_wall / one_wall,
                     "target": "< 3", "met": eight_wall / one_wall < 3,
                     "note": f"{eight_wall:.1f} vs {one_wall:.1f} s; training loop {loop(eight):.1f} vs {loop(one):.1f} s; "
                             f"8 agents' test returns {eight['test']['return_mean']:.1f} +- "
                             f"{eight['test']['seeds_return_std']:.1f} (std over agents)"})
        rows.append({"benchmark": "8 vmapped agents / 1 agent, training loop", "measured": loop(eight) / loop(one),
                     "target": "-", "met": None, "note": "compilation included, as a user waits for it"})
    ours, theirs = rollout_rates(1 if args.quick else 3)
    rows.append({"benchmark": "rollout env steps/s: jtrain PPO collect / gymnax random policy", "measured": ours / theirs,
                 "target": "-", "met": None,
                 "note": f"{ours:,.0f} vs {theirs:,.0f} env steps/s (8 envs x 128 steps a call); whole PPO steps "
                         f"{one['train']['env_steps_per_sec']:,.0f} env steps/s"})
    print(f"\nload average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    width = max(len(r["benchmark"]) for r in rows)
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['benchmark']:<{width}}  {r['measured']:>9.3f}  {r['target']:>7}  {met:>3}  {r['note']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
