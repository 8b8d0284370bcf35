"""The training techniques as the pure steps run them: gradient accumulation equals the large batch, L1/L2
penalties in the objective, dropout off in evaluation, batch-norm statistics updated only in training and used
in evaluation, and bfloat16 computation with float32 parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jtrain import losses, microbatch, models
from jtrain.config import default_config
from jtrain.errors import ConfigError
from jtrain.state import init_state
from jtrain.methods import supervised
from jtrain.step import make_eval_step, make_train_step

NUM_CLASSES = 5


def _model(**fields):
    c = default_config().model
    c.name = "mlp"
    c.hidden_sizes = (16, 16)
    for k, v in fields.items():
        c[k] = v
    return models.build(c, NUM_CLASSES)


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(n, 4, 3)).astype(np.float32)  # the MLP flattens
    targets = (inputs.reshape(n, -1)[:, :NUM_CLASSES].argmax(-1)).astype(np.int32)  # a learnable rule
    return {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(targets), "mask": jnp.ones(n, bool)}


def _state(model, tx, seed=0):
    return init_state(model, tx, jax.random.key(seed), jnp.zeros((1, 4, 3)))


def _steps(model, tx, **kwargs):
    loss_fn = losses.softmax_cross_entropy()
    schedule = optax.constant_schedule(0.0)
    train = jax.jit(make_train_step(model, tx, supervised.method(loss_fn, "classification"), schedule, **kwargs))
    evaluate = jax.jit(make_eval_step(model, supervised.method(loss_fn, "classification")))
    return train, evaluate


# ---------------------------------------------------------------------------------------------- accumulation


@pytest.mark.parametrize("tx", [optax.sgd(0.1), optax.adam(1e-2)], ids=["sgd", "adam"])
def test_k_micro_batches_equal_one_k_times_larger_batch(tx):
    model = _model()
    one, _ = _steps(model, tx, grad_norm=True)
    four, _ = _steps(model, tx, accumulate_steps=4, grad_norm=True)
    state_one = state_four = _state(model, tx)
    for step in range(2):
        batch = _batch(seed=step)
        state_one, m_one = one(state_one, batch)
        state_four, m_four = four(state_four, batch)
        assert float(m_four["loss"]) == pytest.approx(float(m_one["loss"]), rel=1e-5)
        assert float(m_four["accuracy"]) == float(m_one["accuracy"])  # outputs back in batch order
        assert float(m_four["grad_norm"]) == pytest.approx(float(m_one["grad_norm"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(state_one.params), jax.tree.leaves(state_four.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(state_four.step) == 2  # one step = one update


def test_micro_batches_interleave_rows_and_merge_back():
    batch = {"x": jnp.arange(12).reshape(6, 2)}
    split = microbatch.split(batch, 3)["x"]  # (3, 2, 2)
    np.testing.assert_array_equal(split[0], [[0, 1], [6, 7]])  # rows 0 and 3: spread over the batch
    np.testing.assert_array_equal(microbatch.merge(split), batch["x"])


def test_accumulation_must_divide_the_batch():
    microbatch.check(64, 4, 8)
    with pytest.raises(ConfigError, match="optim.accumulate_steps"):
        microbatch.check(64, 3, 1)
    with pytest.raises(ConfigError, match="optim.accumulate_steps"):
        microbatch.check(64, 16, 8)  # micro-batches of 4 over 8 devices


# ---------------------------------------------------------------------------------------------- penalties


def test_l2_penalty_adds_to_the_gradient_of_kernels_only():
    model, tx = _model(), optax.sgd(1.0)
    c = default_config().loss
    c.l2 = 0.05
    plain, _ = _steps(model, tx)
    penalised, _ = _steps(model, tx, penalty=losses.penalty(c))
    state = _state(model, tx)
    batch = _batch()
    new_plain, m_plain = plain(state, batch)
    new_pen, m_pen = penalised(state, batch)
    assert float(m_pen["loss"]) == pytest.approx(float(m_plain["loss"]), rel=1e-6)  # logged loss = data loss
    kernels = [p for p in jax.tree.leaves(state.params) if p.ndim > 1]
    assert float(m_pen["penalty"]) == pytest.approx(0.05 * sum(float((k**2).sum()) for k in kernels), rel=1e-5)
    for old, a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_plain.params),
                         jax.tree.leaves(new_pen.params)):
        expected_extra = -2 * 0.05 * old if old.ndim > 1 else 0.0  # lr 1 * d(l2 w^2)/dw
        np.testing.assert_allclose(b - a, expected_extra, atol=1e-5)


# ---------------------------------------------------------------------------------------------- dropout, batch norm


def test_dropout_is_active_in_training_and_off_in_evaluation():
    tx = optax.sgd(0.0)  # nothing changes: isolate the forward passes
    dropped, no_dropout = _model(dropout=0.5), _model(dropout=0.0)
    state = _state(dropped, tx)
    batch = _batch()
    train, evaluate = _steps(dropped, tx)
    _, evaluate_plain = _steps(no_dropout, tx)
    # Evaluation: deterministic and exactly the network without dropout (same parameters).
    first, again = evaluate(state, batch), evaluate(state, batch)
    assert float(first["loss_sum"]) == float(again["loss_sum"])
    assert float(first["loss_sum"]) == pytest.approx(float(evaluate_plain(state, batch)["loss_sum"]), rel=1e-6)
    # Training: dropout draws a fresh mask per step, so the same batch gives different losses.
    state1, m1 = train(state, batch)
    _, m2 = train(state1, batch)
    assert float(m1["loss"]) != float(m2["loss"])
    assert float(m1["loss"]) != pytest.approx(float(first["loss_sum"]) / 32, rel=1e-3)


def test_batch_norm_statistics_update_in_training_and_are_used_in_evaluation():
    model, tx = _model(batch_norm=True), optax.sgd(0.0)
    state = _state(model, tx)
    train, evaluate = _steps(model, tx)
    batch = _batch()
    batch = {**batch, "inputs": batch["inputs"] * 3.0 + 2.0}  # statistics far from the initial (0, 1)
    before = jax.tree.map(np.asarray, state.model_state["batch_stats"])
    eval_sums = evaluate(state, batch)  # returns sums only: evaluation cannot change the state
    new_state, _ = train(state, batch)
    after = jax.tree.map(np.asarray, new_state.model_state["batch_stats"])
    # Training moved the running mean towards the batch mean with momentum 0.9.
    layer = "BatchNorm_0"
    x = np.asarray(batch["inputs"]).reshape(32, -1) @ np.asarray(state.params["Dense_0"]["kernel"]) \
        + np.asarray(state.params["Dense_0"]["bias"])  # (B, 16) pre-normalisation activations
    np.testing.assert_allclose(after[layer]["mean"], 0.9 * before[layer]["mean"] + 0.1 * x.mean(0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(after[layer]["var"], 0.9 * before[layer]["var"] + 0.1 * x.var(0), rtol=1e-4)
    # Evaluation uses the running statistics: each example's output is independent of the rest of the batch.
    variables = {"params": new_state.params, **new_state.model_state}
    full = model.apply(variables, batch["inputs"], train=False)
    single = jnp.concatenate([model.apply(variables, batch["inputs"][i : i + 1], train=False) for i in range(4)])
    np.testing.assert_allclose(full[:4], single, rtol=1e-5, atol=1e-6)
    # ... while training normalises with the batch's own statistics (different outputs for the same input).
    train_out, _ = model.apply(variables, batch["inputs"], train=True, mutable=["batch_stats"])
    assert not np.allclose(train_out, full, atol=1e-3)
    assert float(eval_sums["count"]) == 32


def test_batch_norm_with_micro_batches_updates_statistics_once_per_micro_batch():
    model, tx = _model(batch_norm=True), optax.sgd(0.0)
    state = _state(model, tx)
    train, _ = _steps(model, tx, accumulate_steps=2)
    batch = _batch()
    new_state, _ = train(state, batch)
    x = np.asarray(batch["inputs"]).reshape(32, -1) @ np.asarray(state.params["Dense_0"]["kernel"]) \
        + np.asarray(state.params["Dense_0"]["bias"])  # (B, 16)
    first, second = x[0::2], x[1::2]  # micro-batch i holds rows i, i + 2, ...
    before = np.asarray(state.model_state["batch_stats"]["BatchNorm_0"]["mean"])
    expected = 0.9 * (0.9 * before + 0.1 * first.mean(0)) + 0.1 * second.mean(0)
    np.testing.assert_allclose(new_state.model_state["batch_stats"]["BatchNorm_0"]["mean"], expected, rtol=1e-4,
                               atol=1e-5)


# ---------------------------------------------------------------------------------------------- mixed precision


def test_bfloat16_computes_in_bf16_keeps_float32_params_and_trains():
    model, tx = _model(dtype="bfloat16", hidden_sizes=(64,)), optax.adam(1e-2)
    state = _state(model, tx)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.opt_state) if hasattr(x, "dtype")
               and jnp.issubdtype(x.dtype, jnp.floating))
    batch = _batch(64)
    outputs = model.apply({"params": state.params}, batch["inputs"], train=False)
    assert outputs.dtype == jnp.float32  # the head (and so the loss) is float32
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, batch["inputs"], train=False))(state.params))
    assert "bf16" in jaxpr  # the hidden layer really computes in bfloat16
    train, _ = _steps(model, tx)
    first = None
    for _ in range(40):
        state, m = train(state, batch)
        first = float(m["loss"]) if first is None else first
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    assert np.isfinite(float(m["loss"])) and float(m["loss"]) < 0.5 * first
