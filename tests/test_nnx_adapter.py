"""An NNX module trains through jtrain's Linen-style contract: params learn, batch stats update, dropout is live."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jtrain
from jtrain.models import build
from jtrain.config import default_config


def _config(data_dir: str):
    config = default_config()
    config.data.dir = data_dir
    config.model.name = "nnx_models:small_cnn"
    config.train.steps = 150
    config.train.log_every_steps = 50
    config.train.progress = False
    config.data.batch_size = 32
    config.optim.learning_rate = 3e-3
    config.checkpoint.every_steps = 0
    return config


def test_nnx_variables_split_into_params_and_batch_stats():
    model = build(_config("").model, 10)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.ones((2, 8, 8, 1)),
                           train=False)
    assert set(variables) == {"params", "batch_stats"}
    assert variables["params"]["conv"]["kernel"].shape == (3, 3, 1, 16)
    assert set(variables["batch_stats"]["norm"]) == {"mean", "var"}

    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    out_a, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
    out_b, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(4)}, mutable=["batch_stats"])
    assert not np.allclose(out_a, out_b), "dropout must draw from the rng passed each step"
    eval_a = model.apply(variables, x, train=False)
    eval_b = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)


def test_nnx_model_trains_and_evaluates(digits_data_dir, tmp_path):
    summary = jtrain.train(_config(digits_data_dir), str(tmp_path))
    assert summary["test"]["accuracy"] >= 0.9, summary["test"]["accuracy"]
    # Batch statistics moved away from their initial values (mean 0) during training.
    from orbax.checkpoint import PyTreeCheckpointer

    restored = PyTreeCheckpointer().restore(str(tmp_path / "checkpoints" / "150" / "state"))
    assert np.abs(np.asarray(restored["model_state"]["batch_stats"]["norm"]["mean"])).max() > 1e-3
    # `jtrain.evaluate` rebuilds the NNX model from the workdir's config and reproduces the test metrics.
    report = jtrain.evaluate(str(tmp_path), "test")
    assert report["accuracy"] == summary["test"]["accuracy"]
