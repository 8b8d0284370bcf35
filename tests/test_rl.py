"""Reinforcement learning: PPO learns CartPole, a stopped run resumes exactly, `jtrain eval` plays episodes,
REINFORCE and several vmapped agents train, GAE against a plain loop, and bad input is one line through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jtrain
from jtrain import envs
from jtrain.checkpoint import load_arrays
from jtrain.config import load_experiment, set_value
from jtrain.methods import rl

from _cli import REPO_ROOT, run_jtrain

EXPERIMENT = os.path.join(REPO_ROOT, "experiments", "cartpole_ppo.py")


def _config(**overrides):
    config = load_experiment(EXPERIMENT)
    # A constant learning rate: a run stopped at 32 steps then resumed to 64 follows the same schedule.
    base = {"schedule.name": "constant", "optim.learning_rate": 1e-3, "train.steps": 64, "train.steps_per_call": 16, "train.log_every_steps": 16, "train.progress": False,
            "checkpoint.every_steps": 32, "data.splits.val": "none", "rl.frames": 4}
    for key, value in {**base, **overrides}.items():
        set_value(config, key, value)
    return config


def _random_returns(name: str, episodes: int = 100) -> np.ndarray:
    """Returns of a uniformly random policy: the baseline a trained agent must beat."""
    env = envs.make(name)
    keys = jax.random.split(jax.random.key(123), episodes)

    @jax.jit
    def play(keys):
        obs, state = jax.vmap(env.reset)(keys)

        def body(carry, t):
            state, ret, done = carry
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
            action = jax.vmap(lambda k: jax.random.randint(k, (), 0, env.num_actions))(step_keys)
            _, state, reward, ended = jax.vmap(env.step)(step_keys, state, action)
            return (state, ret + reward * ~done, done | ended), None

        (_, ret, _), _ = jax.lax.scan(body, (state, jnp.zeros(episodes), jnp.zeros(episodes, bool)), jnp.arange(500))
        return ret

    return np.asarray(play(keys))


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    """64 PPO steps on CartPole (65,536 environment steps), checkpoints at 32 and 64."""
    workdir = str(tmp_path_factory.mktemp("rl") / "cartpole")
    summary = jtrain.train(_config(), workdir)
    return workdir, summary


def test_ppo_learns_cartpole_far_above_random(cartpole):
    workdir, summary = cartpole
    random = _random_returns("gymnax:CartPole-v1")
    assert 15 < random.mean() < 30  # the known ~22 of a random CartPole policy
    test = summary["test"]
    assert test["episodes"] == 100
    assert test["return_mean"] >= 200 and test["return_mean"] > 8 * random.mean(), test
    assert test["return_mean"] == test["length_mean"]  # CartPole pays 1 per step
    train = summary["train"]
    for key in ("episode_return", "episode_length", "entropy", "approx_kl", "value_loss", "explained_variance",
                "env_steps_per_sec"):
        assert np.isfinite(train[key]), key
    assert 0 < train["entropy"] < np.log(2) and train["env_steps_per_sec"] > 0
    # The frames of one greedy test episode.
    assert os.path.getsize(os.path.join(workdir, "plots", "episode.png")) > 1000
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    returns = [r["episode_return"] for r in records if r["split"] == "train"]
    assert returns[-1] > 5 * random.mean()  # the training episodes' too


def test_stopped_run_resumes_exactly(cartpole, tmp_path):
    """32 steps, stop, resume to 64 == 64 straight: environments, observations, episode counters, params and
    optimizer state equal bit for bit, and so do the logged metrics."""
    straight, _ = cartpole
    pieces = str(tmp_path / "pieces")
    jtrain.train(_config(**{"train.steps": 32}), pieces)
    jtrain.train(_config(), pieces)
    for step in (32, 64):
        a = load_arrays(os.path.join(straight, "checkpoints", str(step), "state"))
        b = load_arrays(os.path.join(pieces, "checkpoints", str(step), "state"))
        assert a.keys() == b.keys() and any(k.startswith("env") for k in a)
        assert all(np.array_equal(a[k], b[k]) for k in a), [k for k in a if not np.array_equal(a[k], b[k])]
    log = lambda w: [r for r in map(json.loads, open(os.path.join(w, "metrics.jsonl")))
                     if r["split"] == "train" and r["step"] > 32]
    drop = ("steps_per_sec", "examples_per_sec", "env_steps_per_sec")
    assert [{k: v for k, v in r.items() if k not in drop} for r in log(straight)] == \
        [{k: v for k, v in r.items() if k not in drop} for r in log(pieces)]


def test_jtrain_eval_plays_episodes(cartpole):
    workdir, summary = cartpole
    greedy = run_jtrain(["eval", "--workdir", workdir], "", CPU)
    assert greedy.returncode == 0, greedy.stderr[-2000:]
    line = json.loads(greedy.stdout.strip().splitlines()[-1])
    assert line["split"] == "test"
    assert line["return_mean"] == pytest.approx(summary["test"]["return_mean"])  # the same 100 episodes
    sampled = run_jtrain(["eval", "--workdir", workdir, "--split", "sampled:30"], "", CPU)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    line = json.loads(sampled.stdout.strip().splitlines()[-1])
    assert line["split"] == "sampled:30" and line["return_std"] >= 0 and line["return_mean"] > 100
    assert "return_mean  return_std" in sampled.stdout  # the table's header


def test_reinforce_and_vmapped_agents_on_an_env_of_ones_own(tmp_path):
    """REINFORCE with 3 agents as one program on tests/toy_env.py: each agent beats random (4 of 8), per-agent
    metrics are logged, and the agents differ (own initialisation and draws): their training episodes do."""
    config = _config(**{"env.name": "tests.toy_env:make_env", "method.name": "reinforce", "rl.num_seeds": 3,
                        "rl.num_steps": 16, "train.steps": 48, "optim.learning_rate": 1e-2,
                        "data.splits.test": "sampled:50", "checkpoint.every_steps": 0})
    workdir = str(tmp_path / "toy")
    summary = jtrain.train(config, workdir)
    test = summary["test"]
    per_agent = [test[f"seed_{i}/return_mean"] for i in range(3)]
    assert all(r > 6.5 for r in per_agent), per_agent
    assert np.mean(per_agent) == pytest.approx(test["return_mean"])
    first = next(r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r["split"] == "train")
    trained = [first[f"seed_{i}/episode_return"] for i in range(3)]
    assert len(set(trained)) == 3 and first["episode_return_std"] > 0
    assert np.mean(trained) == pytest.approx(first["episode_return"])


def test_gae_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    t, n, gamma, lam = 7, 3, 0.9, 0.8
    reward, value = rng.normal(size=(t, n)).astype(np.float32), rng.normal(size=(t, n)).astype(np.float32)
    done = rng.random((t, n)) < 0.3
    last = rng.normal(size=(n,)).astype(np.float32)
    want = np.zeros((t, n))
    for j in range(n):
        adv, next_value = 0.0, last[j]
        for i in reversed(range(t)):
            live = 0.0 if done[i, j] else 1.0
            adv = reward[i, j] + gamma * next_value * live - value[i, j] + gamma * lam * live * adv
            want[i, j], next_value = adv, value[i, j]
    got = rl.gae(jnp.asarray(reward), jnp.asarray(value), jnp.asarray(done), jnp.asarray(last), gamma, lam)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


CPU = {"JAX_PLATFORMS": "cpu"}  # not the accelerator libraries an earlier in-process run announced in os.environ
DIGITS = os.path.join(REPO_ROOT, "experiments", "digits_mlp_l2.py")
BAD = [  # (overrides, extra env, what the line says)
    (["--config.env.name=gymnax:CartPol-v1"], {}, "'env.name': unknown gymnax environment 'CartPol-v1' (did you mean "
                                                  "'gymnax:CartPole-v1'?)"),
    (["--config.env.name=gymnax:Pendulum-v1"], {}, "'env.name': gymnax:Pendulum-v1 has a Box(shape=(1,)) action space; "
                                                   "ppo supports discrete actions only"),
    (["--config.env.num_envs=3"], {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", **CPU},
     "'env.num_envs': 3 environments are not divisible by the data-parallel size 2"),
    (["--config", DIGITS, "--config.method.name=ppo"], {}, "'env.name': an RL method needs an environment"),
    (["--config", DIGITS, "--config.method.name=ppo", "--config.env.name=gymnax:CartPole-v1",
      "--config.train.steps=5"], {},
     "'data.name': ppo trains in an environment: set data.name=env"),
    (["--config.train.steps=0", "--config.train.epochs=3"], {}, "'train.steps': ppo trains for a number of steps"),
    (["--config.method.name=supervised"], {}, "data.name=env (gymnax:CartPole-v1) trains an agent: method.name=ppo"),
]


@pytest.mark.parametrize("overrides, extra_env, expected", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_input_is_one_line(overrides, extra_env, expected, tmp_path, digits_data_dir):
    workdir = str(tmp_path / "w")
    config = [] if "--config" in overrides else ["--config", EXPERIMENT]  # a later --config wins
    result = run_jtrain(["train", *config, *overrides, "--workdir", workdir], digits_data_dir, {**CPU, **extra_env})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not os.path.exists(workdir)


@pytest.mark.slow
def test_kill_resume_exact():
    """SIGKILL at random moments of a CartPole run, resumed each time: every checkpoint equals an uninterrupted run's."""
    result = subprocess.run([sys.executable, "scripts/kill_resume.py", "--rl", "--kills", "3"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert result.returncode == 0 and "3/3 exact" in result.stdout, result.stdout + result.stderr[-2000:]


_FOUR_STEPS = """
import json, sys
import jtrain
from jtrain.config import load_experiment, set_value
config = load_experiment("experiments/cartpole_ppo.py")
for key, value in {"train.steps": 4, "train.steps_per_call": 1, "train.log_every_steps": 1, "train.progress": False,
                   "data.splits.val": "none", "data.splits.test": "greedy:8", "data.eval_batch_size": 8,
                   "schedule.name": "constant", "checkpoint.every_steps": 0, "rl.frames": 0}.items():
    set_value(config, key, value)
jtrain.train(config, sys.argv[1])
"""


@pytest.mark.slow
def test_four_devices_train_as_one(tmp_path):
    """The 8 environments split over 4 data-parallel devices: the same episodes and, up to float rounding of the
    updates' reductions, the same losses as on one device."""
    logs = []
    for devices in (1, 4):
        workdir = str(tmp_path / f"d{devices}")
        env = {**os.environ, "PYTHONPATH": REPO_ROOT, "JAX_PLATFORMS": "cpu", "JTRAIN_NO_PROGRESS": "1",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        result = subprocess.run([sys.executable, "-c", _FOUR_STEPS, workdir], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        logs.append([r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r["split"] == "train"])
    one, four = logs
    assert len(one) == len(four) == 4
    assert [r["episode_return"] for r in one] == [r["episode_return"] for r in four]
    np.testing.assert_allclose([r["loss"] for r in one], [r["loss"] for r in four], rtol=1e-5)
