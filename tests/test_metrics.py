"""Tests for jtrain.metrics (exact split metrics against scikit-learn), jtrain.losses and jtrain.optim."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
)

from jtrain import losses, metrics, optim
from jtrain.config import default_config
from jtrain.errors import ConfigError

NUM_CLASSES = 7

# Jitted once per input shape: far quicker than dispatching the ops one by one (eager use is tested below).
_classification_sums = jax.jit(metrics.classification_sums)
_regression_sums = jax.jit(metrics.regression_sums)


def _classification_batch(seed: int, n_real: int, n_pad: int, num_classes: int = NUM_CLASSES):
    """Random logits / labels; the last n_pad rows are padding (mask False) with their own random content."""
    rng = np.random.default_rng(seed)
    n = n_real + n_pad
    labels = rng.integers(0, num_classes, n)
    # Logits that favour the true class somewhat, so the confusion matrix is neither diagonal nor uniform.
    logits = rng.normal(size=(n, num_classes)) + 1.5 * np.eye(num_classes)[labels]
    mask = np.arange(n) < n_real
    per_example_loss = rng.uniform(0.0, 3.0, n)
    return logits.astype(np.float32), labels.astype(np.int32), mask, per_example_loss.astype(np.float32)


def _sums(logits, labels, mask, loss):
    return _classification_sums(np.asarray(logits), np.asarray(labels), np.asarray(mask), np.asarray(loss))


def _add(a: dict, b: dict) -> dict:
    return jax.tree.map(lambda x, y: x + y, a, b)


def _assert_matches_sklearn(rep: dict, y_true, y_pred, num_classes: int):
    labels = np.arange(num_classes)
    assert rep["num_examples"] == len(y_true)
    assert rep["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert rep["precision_macro"] == pytest.approx(p, abs=1e-12)
    assert rep["recall_macro"] == pytest.approx(r, abs=1e-12)
    assert rep["f1_macro"] == pytest.approx(f, abs=1e-12)
    _, _, fw, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    assert rep["f1_weighted"] == pytest.approx(fw, abs=1e-12)
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    assert list(rep["per_class"]) == [str(i) for i in labels]
    for i, name in enumerate(rep["per_class"]):
        row = rep["per_class"][name]
        assert row["precision"] == pytest.approx(pc[i], abs=1e-12)
        assert row["recall"] == pytest.approx(rc[i], abs=1e-12)
        assert row["f1"] == pytest.approx(fc[i], abs=1e-12)
        assert row["support"] == sc[i]
    assert rep["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()


# ---------------------------------------------------------------------------------------------
# classification


def test_classification_report_matches_sklearn_and_ignores_padding():
    logits, labels, mask, loss = _classification_batch(seed=0, n_real=300, n_pad=45)
    rep = metrics.report(_sums(logits, labels, mask, loss))
    y_true, y_pred = labels[mask], logits[mask].argmax(-1)
    _assert_matches_sklearn(rep, y_true, y_pred, NUM_CLASSES)
    assert rep["loss"] == pytest.approx(float(np.mean(loss[mask].astype(np.float64))), rel=1e-6)
    # The padding rows really would change the answer if they counted.
    all_pred = logits.argmax(-1)
    assert confusion_matrix(labels, all_pred).tolist() != rep["confusion_matrix"]


def test_padding_content_does_not_matter():
    logits, labels, mask, loss = _classification_batch(seed=1, n_real=50, n_pad=14)
    rep = metrics.report(_sums(logits, labels, mask, loss))
    rng = np.random.default_rng(99)
    logits2, labels2, loss2 = logits.copy(), labels.copy(), loss.copy()
    logits2[~mask] = rng.normal(size=logits2[~mask].shape) * 100
    labels2[~mask] = rng.integers(0, NUM_CLASSES, (~mask).sum())
    loss2[~mask] = 1e6
    assert metrics.report(_sums(logits2, labels2, mask, loss2)) == rep


def test_absent_and_never_predicted_classes_count_as_zero():
    # Class 3 never occurs and is never predicted; class 2 occurs but is never predicted; class 4 is
    # predicted but never occurs: scikit-learn's zero_division=0 convention over all classes.
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 4, 1, 0])
    num_classes = 5
    logits = np.eye(num_classes, dtype=np.float32)[y_pred]
    rep = metrics.report(_sums(logits, y_true, np.ones(len(y_true), bool), np.zeros(len(y_true), np.float32)))
    _assert_matches_sklearn(rep, y_true, y_pred, num_classes)
    assert rep["per_class"]["3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["per_class"]["2"]["recall"] == 0.0


def test_sums_over_batches_equal_one_batch():
    logits, labels, mask, loss = _classification_batch(seed=2, n_real=250, n_pad=0)
    # Pad the last batch, as the eval pipeline does.
    batch, n = 64, len(labels)
    num_batches = -(-n // batch)
    pad = num_batches * batch - n
    logits_p = np.concatenate([logits, np.zeros((pad, NUM_CLASSES), np.float32)])
    labels_p = np.concatenate([labels, np.zeros(pad, np.int32)])
    mask_p = np.concatenate([mask, np.zeros(pad, bool)])
    loss_p = np.concatenate([loss, np.full(pad, 5.0, np.float32)])
    total = None
    for i in range(num_batches):
        s = slice(i * batch, (i + 1) * batch)
        sums = _sums(logits_p[s], labels_p[s], mask_p[s], loss_p[s])
        total = sums if total is None else _add(total, sums)
    one = metrics.report(_sums(logits, labels, mask, loss))
    many = metrics.report(total)
    loss_one, loss_many = one.pop("loss"), many.pop("loss")
    assert many == one  # confusion-derived metrics are exact
    assert loss_many == pytest.approx(loss_one, rel=1e-6)  # float32 sums in a different order


def test_report_uses_class_names():
    logits, labels, mask, loss = _classification_batch(seed=3, n_real=20, n_pad=0, num_classes=3)
    rep = metrics.report(_sums(logits, labels, mask, loss), class_names=("cat", "dog", "eel"))
    assert list(rep["per_class"]) == ["cat", "dog", "eel"]
    assert metrics.scalars(rep).keys() == {
        "loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
    }


def test_classification_sums_eager_equal_jitted():
    logits, labels, mask, loss = _classification_batch(seed=4, n_real=40, n_pad=24)
    eager = metrics.classification_sums(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), jnp.asarray(loss))
    assert metrics.report(eager) == metrics.report(_sums(logits, labels, mask, loss))


# ---------------------------------------------------------------------------------------------
# regression


@pytest.mark.parametrize("num_targets", [1, 3])
def test_regression_report_matches_sklearn_and_ignores_padding(num_targets):
    rng = np.random.default_rng(num_targets)
    n_real, n_pad = 400, 37
    y = rng.normal(0.5, 2.0, (n_real + n_pad, num_targets)).astype(np.float32)
    out = (y * 0.8 + rng.normal(0.0, 0.7, y.shape)).astype(np.float32)
    out[n_real:] += 50.0  # padding rows with huge errors must not count
    mask = np.arange(n_real + n_pad) < n_real
    loss = np.mean((out - y) ** 2, -1).astype(np.float32)
    targets = y[:, 0] if num_targets == 1 else y  # (B,) targets are allowed for one output
    sums = _regression_sums(out, targets, mask, loss)
    rep = metrics.report(sums)
    yt, yp = y[:n_real].astype(np.float64), out[:n_real].astype(np.float64)
    assert rep["num_examples"] == n_real
    # Sums are float32 on device: agreement to float32 accuracy.
    assert rep["mse"] == pytest.approx(mean_squared_error(yt, yp), rel=1e-5)
    assert rep["mae"] == pytest.approx(mean_absolute_error(yt, yp), rel=1e-5)
    assert rep["r2"] == pytest.approx(r2_score(yt, yp), abs=1e-5)
    assert rep["loss"] == pytest.approx(mean_squared_error(yt, yp), rel=1e-5)
    assert "accuracy" not in rep


def test_regression_sums_over_batches_equal_one_batch():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(96, 2)).astype(np.float32)
    out = rng.normal(size=(96, 2)).astype(np.float32)
    mask, loss = np.ones(96, bool), np.mean((out - y) ** 2, -1).astype(np.float32)
    args = lambda s: (out[s], y[s], mask[s], loss[s])  # noqa: E731
    one = metrics.report(_regression_sums(*args(slice(None))))
    total = _regression_sums(*args(slice(0, 32)))
    for s in (slice(32, 64), slice(64, 96)):
        total = _add(total, _regression_sums(*args(s)))
    many = metrics.report(total)
    for k in ("mse", "mae", "r2", "loss"):
        assert many[k] == pytest.approx(one[k], rel=1e-5), k
    assert many["num_examples"] == one["num_examples"] == 96


def test_regression_r2_with_large_target_mean():
    # SST from float32 sum(y^2) - (sum y)^2 / n would cancel catastrophically here; report() uses the batch's
    # squared deviations from its mean instead (merged across batches by accumulate(), tested in test_losses_metrics).
    rng = np.random.default_rng(6)
    y = (1000.0 + rng.normal(size=(500, 1))).astype(np.float32)
    out = (y + 0.3 * rng.normal(size=y.shape)).astype(np.float32)
    sums = _regression_sums(out, y, np.ones(500, bool), np.zeros(500, np.float32))
    assert metrics.report(sums)["r2"] == pytest.approx(r2_score(y.astype(np.float64), out.astype(np.float64)), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# losses


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_softmax_cross_entropy_int_labels_equal_one_hot_and_numpy():
    rng = np.random.default_rng(0)
    logits = (3 * rng.normal(size=(32, 10))).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    loss_fn = losses.softmax_cross_entropy()
    from_int = np.asarray(loss_fn(jnp.asarray(logits), jnp.asarray(labels)))
    from_one_hot = np.asarray(loss_fn(jnp.asarray(logits), jnp.asarray(np.eye(10, dtype=np.float32)[labels])))
    reference = -_log_softmax(logits)[np.arange(32), labels]
    assert from_int.shape == (32,)
    np.testing.assert_allclose(from_int, from_one_hot, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_int, reference, rtol=1e-5, atol=1e-6)


def test_label_smoothing_follows_optax_smooth_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 16)
    alpha = 0.2
    smoothed = np.asarray(losses.softmax_cross_entropy(alpha)(jnp.asarray(logits), jnp.asarray(labels)))
    plain = np.asarray(losses.softmax_cross_entropy(0.0)(jnp.asarray(logits), jnp.asarray(labels)))
    one_hot = np.eye(5)[labels]
    targets = np.asarray(optax.smooth_labels(jnp.asarray(one_hot), alpha), np.float64)
    np.testing.assert_allclose(targets, one_hot * (1 - alpha) + alpha / 5, atol=1e-7)  # what smooth_labels means
    reference = -(targets * _log_softmax(logits)).sum(-1)
    np.testing.assert_allclose(smoothed, reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(smoothed, plain)


def test_mse_equals_numpy():
    rng = np.random.default_rng(2)
    out = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.normal(size=(20, 3)).astype(np.float32)
    got = np.asarray(losses.mean_squared_error()(jnp.asarray(out), jnp.asarray(y)))
    np.testing.assert_allclose(got, ((out.astype(np.float64) - y) ** 2).mean(-1), rtol=1e-6)
    # (B,) targets against (B, 1) outputs
    got1 = np.asarray(losses.mean_squared_error()(jnp.asarray(out[:, :1]), jnp.asarray(y[:, 0])))
    np.testing.assert_allclose(got1, (out[:, 0].astype(np.float64) - y[:, 0]) ** 2, rtol=1e-6)


def test_losses_build():
    c = default_config().loss
    fn, task = losses.build(c)
    assert task == "classification"
    c.name = "mse"
    assert losses.build(c)[1] == "regression"
    c.name = "softmax_crossentropy"
    with pytest.raises(ConfigError, match="did you mean 'softmax_cross_entropy'"):
        losses.build(c)


# ---------------------------------------------------------------------------------------------
# optimizers and schedules


def _params():
    return {
        "dense": {"kernel": jnp.full((3, 4), 2.0), "bias": jnp.full((4,), 2.0)},
        "norm": {"scale": jnp.full((4,), 2.0)},
    }


def _optim(**fields):
    c = default_config()
    for key, value in fields.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


def _one_update(tx, params, grads):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    return optax.apply_updates(params, updates)


def test_sgd_step_is_minus_lr_times_gradient():
    c = _optim(optim__name="sgd", optim__learning_rate=0.1)
    tx, lr = optim.build(c.optim, c.schedule, total_steps=10)
    params = _params()
    grads = jax.tree.map(lambda p: jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape), params)
    new = _one_update(tx, params, grads)
    for p, g, n in zip(jax.tree.leaves(params), jax.tree.leaves(grads), jax.tree.leaves(new)):
        np.testing.assert_allclose(n, p - 0.1 * g, rtol=1e-6)
    assert float(lr(0)) == pytest.approx(0.1)


def test_adamw_first_step_moves_each_weight_by_lr():
    c = _optim(optim__name="adamw", optim__learning_rate=0.01)
    tx, _ = optim.build(c.optim, c.schedule, total_steps=10)
    params = _params()
    grads = jax.tree.map(lambda p: jnp.where(jnp.arange(p.size).reshape(p.shape) % 2 == 0, 3.0, -0.5), params)
    new = _one_update(tx, params, grads)
    for p, g, n in zip(jax.tree.leaves(params), jax.tree.leaves(grads), jax.tree.leaves(new)):
        np.testing.assert_allclose(n, p - 0.01 * jnp.sign(g), rtol=1e-5)  # Adam's first step: lr * sign(g)


def test_unknown_optimizer_raises_config_error():
    c = _optim(optim__name="adamww")  # ("adam" itself is an optimizer now)
    with pytest.raises(ConfigError) as e:
        optim.build(c.optim, c.schedule, total_steps=10)
    assert "optim.name" in str(e.value)
    assert "did you mean 'adamw'" in str(e.value)


def test_unknown_schedule_raises_config_error():
    c = _optim(schedule__name="cosin")
    with pytest.raises(ConfigError, match="'schedule.name'.*did you mean 'cosine'"):
        optim.build(c.optim, c.schedule, total_steps=10)


def test_cosine_schedule_with_warmup():
    c = _optim(optim__learning_rate=0.5, schedule__name="cosine", schedule__warmup_steps=10, schedule__end_factor=0.1)
    _, lr = optim.build(c.optim, c.schedule, total_steps=110)
    values = np.array([float(lr(s)) for s in range(111)])
    assert values[0] == 0.0
    assert values[5] == pytest.approx(0.25)  # linear warmup
    assert values[10] == pytest.approx(0.5)
    assert values.max() == pytest.approx(0.5)
    assert values[60] == pytest.approx((0.5 + 0.05) / 2)  # half-way through the cosine
    assert values[110] == pytest.approx(0.05)
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) <= 1e-9)


def test_constant_and_warmup_linear_schedules():
    c = _optim(optim__learning_rate=0.2, schedule__name="constant", schedule__warmup_steps=4)
    _, lr = optim.build(c.optim, c.schedule, total_steps=20)
    assert [float(lr(s)) for s in (0, 2, 4, 19)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    c = _optim(optim__learning_rate=0.2, schedule__name="warmup_linear", schedule__warmup_steps=4, schedule__end_factor=0.5)
    _, lr = optim.build(c.optim, c.schedule, total_steps=24)
    assert [float(lr(s)) for s in (0, 4, 14, 24)] == pytest.approx([0.0, 0.2, 0.15, 0.1])


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_skips_biases_and_norm_scales(name):
    lr, wd = 0.1, 0.5
    c = _optim(optim__name=name, optim__learning_rate=lr, optim__weight_decay=wd)
    tx, _ = optim.build(c.optim, c.schedule, total_steps=10)
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    new = _one_update(tx, params, zeros)
    np.testing.assert_array_equal(new["dense"]["bias"], params["dense"]["bias"])
    np.testing.assert_array_equal(new["norm"]["scale"], params["norm"]["scale"])
    np.testing.assert_allclose(new["dense"]["kernel"], params["dense"]["kernel"] * (1 - lr * wd), rtol=1e-6)


def test_grad_clipping_bounds_the_update():
    c = _optim(optim__name="sgd", optim__learning_rate=1.0, optim__grad_clip_norm=1.0)
    tx, _ = optim.build(c.optim, c.schedule, total_steps=10)
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 10.0), params)
    new = _one_update(tx, params, grads)
    step = jax.tree.map(lambda a, b: a - b, params, new)
    norm = float(optax.global_norm(step))
    assert norm == pytest.approx(1.0, rel=1e-5)
