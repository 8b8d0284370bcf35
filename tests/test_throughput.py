"""Model FLOPs per token from the architecture agree with XLA's cost analysis of the real train step; MFU
arithmetic; the sequence loss in the train step is a mean over real tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jtrain import config as config_lib, losses, models
from jtrain.state import init_state
from jtrain.methods import supervised
from jtrain.step import make_train_step
from jtrain.throughput import Throughput, device_peak_flops, measured_peak_flops

VOCAB, T, B = 96, 128, 4


def _model_config(**kw) -> ml_collections.ConfigDict:
    c = config_lib.default_config()
    c.model.name = "decoder"
    c.model.vocab_size = VOCAB
    c.model.max_len = T
    for k, v in kw.items():
        setattr(c.model, k, v)
    return c


def _train_step_and_state(c):
    model = models.build(c.model, VOCAB)
    tx = optax.adamw(1e-3)
    loss_fn, task = losses.build(ml_collections.ConfigDict({"name": "masked_sequence_cross_entropy",
                                                            "label_smoothing": 0.0, "task": ""}))
    step = make_train_step(model, tx, supervised.method(loss_fn, task), optax.constant_schedule(1e-3))
    state = init_state(model, tx, jax.random.key(0), jnp.zeros((1, T), jnp.int32))
    return step, state


def test_flops_per_token_match_xla_cost_analysis():
    # Narrow enough that the attention term (12 L T E) is a fifth of the total; within 5% for 2-4 layers, 64-128 wide.
    c = _model_config(num_layers=3, embed_dim=64, mlp_dim=256, num_heads=4)
    step, state = _train_step_and_state(c)
    batch = {"inputs": jnp.zeros((B, T), jnp.int32), "targets": jnp.zeros((B, T), jnp.int32),
             "mask": jnp.ones((B, T), jnp.float32)}
    # The lowered program's HLO cost analysis: the step as written, without paying for a compile.
    cost = jax.jit(step).lower(state, batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_per_token = float(cost["flops"]) / (B * T)
    ours = models.family("decoder").flops_per_token(c.model, models.build(c.model, VOCAB), T)
    # XLA also counts softmax, norms, GELU and the optimizer update: a few percent over the matmuls.
    assert ours == pytest.approx(xla_per_token, rel=0.10), (ours, xla_per_token)


def test_mfu_arithmetic():
    speed = Throughput(tokens_per_step=1024, flops_per_token=6e6, peak_flops=1e11)
    rates = speed.rates(steps_per_sec=4.0)
    assert rates["tokens_per_sec"] == 4096
    assert rates["mfu"] == pytest.approx(4096 * 6e6 / 1e11)


def test_peak_is_the_published_one_for_known_accelerators_and_measured_elsewhere():
    class Device:  # what device_peak_flops reads of a jax.Device
        def __init__(self, kind):
            self.device_kind = kind

    assert device_peak_flops(Device("NVIDIA H100 80GB HBM3")) == 989e12
    assert device_peak_flops(Device("NVIDIA H100 PCIe")) == 756e12  # not the SXM figure
    assert device_peak_flops(Device("TPU v5 lite")) == 197e12
    cpu = jax.devices("cpu")[0]
    assert device_peak_flops(cpu) == measured_peak_flops() > 0  # no published peak for a CPU


def test_sequence_train_loss_is_a_mean_over_real_tokens():
    c = _model_config(num_layers=1, embed_dim=32, mlp_dim=64, num_heads=2)
    step, state = _train_step_and_state(c)
    rng = np.random.default_rng(0)
    t = 16  # short rows: a quick compile
    tokens = rng.integers(0, VOCAB, (B, t + 1)).astype(np.int32)
    mask = (np.arange(t)[None] < np.asarray([[t], [t // 2], [5], [1]])).astype(np.float32)  # (B, t) ragged rows
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "mask": mask}
    _, metrics = jax.jit(step)(state, batch)
    logits = jax.jit(lambda p, x: models.build(c.model, VOCAB).apply({"params": p}, x, train=False))(
        state.params, batch["inputs"])  # (B, t, V)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])  # (B, T)
    expected = float((per_token * mask).sum() / mask.sum())
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
