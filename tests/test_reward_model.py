"""Reward models (method.name=reward): the score read at the last response token, the Bradley-Terry loss, a run
that learns a preference rule from JSONL pairs and resumes exactly."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _cli import run_jtrain
from jtrain.config import default_config
from jtrain.methods import reward
from jtrain.models import decoder


def _tiny_scored():
    c = default_config().model
    c.num_layers, c.num_heads, c.embed_dim, c.mlp_dim, c.max_len = 1, 2, 16, 32, 8
    model = reward.wrap(decoder.build(c, 11), None)
    params = model.init(jax.random.key(0), jnp.zeros((2, 8), jnp.int32), train=False)["params"]
    return model, params


def test_reward_is_the_score_at_the_last_response_token():
    model, params = _tiny_scored()
    assert "score" in params and "head" not in params  # the LM head is replaced
    inputs = jax.random.randint(jax.random.key(1), (3, 2, 8), 1, 11)
    mask = np.zeros((3, 2, 8), np.float32)
    mask[0, 0, 2:5] = 1  # last response target at 4
    mask[0, 1, 1:8] = 1  # at 7
    mask[1, :, 3] = 1  # a one-token response: at 3
    # pair 2 is padding: no response token
    batch = {"inputs": inputs, "targets": inputs, "mask": jnp.asarray(mask)}
    r = np.asarray(reward.rewards(model, {"params": params}, batch))
    scores = np.asarray(model.apply({"params": params}, inputs.reshape(6, 8), train=False)).reshape(3, 2, 8)
    np.testing.assert_allclose(r[0], [scores[0, 0, 4], scores[0, 1, 7]], rtol=1e-6)
    np.testing.assert_allclose(r[1], scores[1, :, 3], rtol=1e-6)
    # causal: what follows the last response token never changes its reward
    changed = inputs.at[0, 0, 5:].set(1)
    r2 = np.asarray(reward.rewards(model, {"params": params}, {**batch, "inputs": changed}))
    np.testing.assert_allclose(r2[0, 0], r[0, 0], rtol=1e-6)


def test_bradley_terry_loss_with_margin_and_centering():
    model, params = _tiny_scored()
    m = reward.method(margin=0.5, center=0.1)
    inputs = jax.random.randint(jax.random.key(2), (4, 2, 8), 1, 11)
    mask = jnp.zeros((4, 2, 8)).at[:, :, 2:6].set(1)
    batch = {"inputs": inputs, "targets": inputs, "mask": mask}
    value, r, _ = m.loss(model, None, params, batch, {}, jax.random.key(0), [])
    r = np.asarray(r, np.float64)
    gap = r[:, 0] - r[:, 1]
    expected = np.mean(np.log1p(np.exp(-(gap - 0.5))) + 0.1 * (r[:, 0] + r[:, 1]) ** 2)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> str:
    from jtrain.data import registry

    path = str(tmp_path_factory.mktemp("tfds_reward"))
    registry.prepare("shakespeare_char", path)
    return path


def _pairs(path, n: int, seed: int) -> str:
    """Pairs whose chosen line is the lowercase version of the rejected one: a rule a reward model can learn."""
    rng = np.random.default_rng(seed)
    words = ["my lord", "good night", "what news", "the king", "fair lady", "come away", "i pray you", "no more"]
    with open(path, "w") as f:
        for _ in range(n):
            line = " ".join(rng.choice(words, size=2))
            prompt = rng.choice(words).capitalize() + "."
            f.write(json.dumps({"prompt": prompt, "chosen": line, "rejected": line.upper()}) + "\n")
    return str(path)


TINY = ["--config.model.num_layers=1", "--config.model.num_heads=2", "--config.model.embed_dim=32",
        "--config.model.mlp_dim=64", "--config.model.max_len=48", "--config.data.seq_len=48",
        "--config.data.batch_size=16", "--config.data.eval_batch_size=32", "--config.eval.best_metric=",
        "--config.eval.every_steps=0", "--config.checkpoint.every_steps=0", "--config.train.log_every_steps=10",
        "--config.optim.learning_rate=3e-3", "--config.schedule.name=constant", "--config.schedule.warmup_steps=0",
        "--config.data.splits.test=none"]


@pytest.mark.slow
def test_reward_model_learns_a_preference_and_resumes_exactly(text_dir, tmp_path):
    train, val = _pairs(tmp_path / "train.jsonl", 256, 0), _pairs(tmp_path / "val.jsonl", 64, 1)
    common = ["train", "--config", "experiments/shakespeare_char_reward.py", *TINY,
              f"--config.data.jsonl.train={train}", f"--config.data.jsonl.val={val}"]
    straight, pieces = str(tmp_path / "straight"), str(tmp_path / "pieces")
    result = run_jtrain([*common, "--config.train.steps=60", "--workdir", straight], text_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(os.path.join(straight, "summary.json")))
    assert summary["val"]["reward_accuracy"] >= 0.95 and summary["val"]["num_examples"] == 64, summary["val"]
    assert summary["val"]["loss"] < 0.35  # from log 2 = 0.69 at the start
    assert run_jtrain([*common, "--config.train.steps=30", "--workdir", pieces], text_dir).returncode == 0
    resumed = run_jtrain([*common, "--config.train.steps=60", "--workdir", pieces], text_dir)
    assert resumed.returncode == 0 and "resuming at step 30" in resumed.stderr, resumed.stderr[-3000:]
    assert json.load(open(os.path.join(pieces, "summary.json")))["val"] == summary["val"]


def test_reward_model_refuses_data_without_pairs(text_dir, tmp_path):
    result = run_jtrain(["train", "--config", "experiments/shakespeare_char_reward.py", *TINY,
                         "--config.data.name=shakespeare_char", "--workdir", str(tmp_path / "w")], text_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "a reward model learns from preference pairs" in lines[0], result.stderr
