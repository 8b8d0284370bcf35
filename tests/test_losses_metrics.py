"""Tests for the toolbox's losses (against NumPy / scikit-learn formulas), L1/L2 penalties, and metrics computed
exactly over padded batches (top-k, binary P/R/F1, ROC curve and ROC-AUC, R^2 with a large target mean, metrics
in target units) against scikit-learn on random inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from jtrain import losses, metrics
from jtrain.config import default_config
from jtrain.errors import ConfigError


def _loss_config(**fields):
    c = default_config().loss
    for k, v in fields.items():
        c[k] = v
    return c


def user_loss(outputs, targets):
    """A user-supplied loss, referenced as "test_losses_metrics:user_loss"."""
    return jnp.abs(outputs[:, 0] - targets) ** 3


user_loss.task = "regression"


def _batches(n_real: int, batch: int, *arrays):
    """Splits arrays into padded batches (padding rows hold garbage) plus masks, as the eval pipeline does."""
    rng = np.random.default_rng(123)
    num = -(-n_real // batch)
    for i in range(num):
        rows = slice(i * batch, min((i + 1) * batch, n_real))
        real = rows.stop - rows.start
        out = []
        for a in arrays:
            pad = rng.normal(size=(batch - real, *a.shape[1:])) * 50 if a.dtype.kind == "f" else \
                rng.integers(0, 2, size=(batch - real, *a.shape[1:]))
            out.append(np.concatenate([a[rows], pad.astype(a.dtype)]))
        yield (*out, np.arange(batch) < real)


# ---------------------------------------------------------------------------------------------- losses


def test_mae_and_huber_equal_their_definitions():
    rng = np.random.default_rng(0)
    out = rng.normal(size=(40, 2)).astype(np.float32) * 3
    y = rng.normal(size=(40, 2)).astype(np.float32)
    err = out.astype(np.float64) - y
    mae = np.asarray(losses.mean_absolute_error()(jnp.asarray(out), jnp.asarray(y)))
    np.testing.assert_allclose(mae, np.abs(err).mean(-1), rtol=1e-6)
    delta = 1.5
    huber = np.asarray(losses.huber(delta)(jnp.asarray(out), jnp.asarray(y)))
    reference = np.where(np.abs(err) <= delta, 0.5 * err**2, delta * (np.abs(err) - 0.5 * delta)).mean(-1)
    np.testing.assert_allclose(huber, reference, rtol=1e-5)
    assert (np.abs(err) > delta).any() and (np.abs(err) <= delta).any()  # both branches exercised


def test_sigmoid_binary_cross_entropy_equals_sklearn_log_loss():
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(64, 1)) * 3).astype(np.float32)
    labels = rng.integers(0, 2, 64)
    per_example = np.asarray(losses.sigmoid_binary_cross_entropy()(jnp.asarray(logits), jnp.asarray(labels)))
    assert per_example.shape == (64,)
    prob = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
    assert per_example.mean() == pytest.approx(log_loss(labels, prob), rel=1e-5)
    # Label smoothing 0.2 moves the targets to 0.1 / 0.9.
    smoothed = np.asarray(losses.sigmoid_binary_cross_entropy(0.2)(jnp.asarray(logits), jnp.asarray(labels)))
    t = labels * 0.8 + 0.1
    np.testing.assert_allclose(smoothed, -(t * np.log(prob) + (1 - t) * np.log(1 - prob)), rtol=1e-4)


def test_masked_sequence_cross_entropy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32)  # (B, T, V)
    tokens = rng.integers(0, 7, (3, 5))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    fn = losses.masked_sequence_cross_entropy()
    got = np.asarray(fn(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask)))
    z = logits.astype(np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[..., None], -1)[..., 0]  # (B, T)
    np.testing.assert_allclose(got[0], nll[0, :3].mean(), rtol=1e-5)
    np.testing.assert_allclose(got[1], nll[1].mean(), rtol=1e-5)
    assert got[2] == 0.0  # no real token
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(logits), jnp.asarray(tokens))), nll.mean(-1), rtol=1e-5)
    _, task = losses.build(_loss_config(name="masked_sequence_cross_entropy"))
    assert task == "sequence"


@pytest.mark.parametrize("name, task", [("mse", "regression"), ("mae", "regression"), ("huber", "regression"),
                                        ("softmax_cross_entropy", "classification"),
                                        ("sigmoid_binary_cross_entropy", "binary")])
def test_each_loss_declares_its_task(name, task):
    assert losses.build(_loss_config(name=name))[1] == task


def test_user_supplied_loss_by_module_and_function():
    fn, task = losses.build(_loss_config(name="test_losses_metrics:user_loss"))
    assert task == "regression" and fn is user_loss
    _, task = losses.build(_loss_config(name="test_losses_metrics:user_loss", task="binary"))
    assert task == "binary"  # loss.task wins over the attribute
    with pytest.raises(ConfigError, match="loss.task"):
        losses.build(_loss_config(name="test_losses_metrics:_loss_config"))  # no task anywhere
    with pytest.raises(ConfigError, match="'loss.name': cannot import"):
        losses.build(_loss_config(name="no_such_module_xyz:loss"))
    with pytest.raises(ConfigError, match="did you mean 'huber'"):
        losses.build(_loss_config(name="hubber"))


def test_loss_must_fit_the_datasets_targets():
    with pytest.raises(ConfigError, match="'loss.name'.*needs class labels.*diabetes"):
        losses.check_data("classification", "softmax_cross_entropy", "float32", 0, "diabetes")
    with pytest.raises(ConfigError, match="needs two classes"):
        losses.check_data("binary", "sigmoid_binary_cross_entropy", "int32", 10, "digits")
    with pytest.raises(ConfigError, match="mse regresses numbers, but digits has class labels"):
        losses.check_data("regression", "mse", "int32", 10, "digits")  # a silent wrong run otherwise
    assert losses.output_width("binary", 2) == 1 and losses.output_width("classification", 10) == 10


def test_l1_l2_penalties_cover_kernels_only():
    params = {"dense": {"kernel": jnp.asarray([[1.0, -2.0], [3.0, 0.5]]), "bias": jnp.asarray([10.0, -10.0])},
              "norm": {"scale": jnp.asarray([5.0])}}
    assert losses.penalty(_loss_config()) is None
    l1 = losses.penalty(_loss_config(l1=0.1))(params)
    l2 = losses.penalty(_loss_config(l2=0.01))(params)
    both = losses.penalty(_loss_config(l1=0.1, l2=0.01))(params)
    assert float(l1) == pytest.approx(0.1 * 6.5)
    assert float(l2) == pytest.approx(0.01 * 14.25)
    assert float(both) == pytest.approx(0.65 + 0.1425)
    grad = jax.grad(losses.penalty(_loss_config(l2=0.01)))(params)
    np.testing.assert_allclose(grad["dense"]["kernel"], 0.02 * params["dense"]["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(grad["dense"]["bias"], 0.0)


# ---------------------------------------------------------------------------------------------- metrics

_top_k_sums = jax.jit(metrics.classification_sums, static_argnums=4)
_binary_sums = jax.jit(metrics.binary_sums)
_regression_sums = jax.jit(metrics.regression_sums)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_accuracy_matches_sklearn_over_padded_batches(k):
    rng = np.random.default_rng(k)
    n, c = 203, 8
    labels = rng.integers(0, c, n).astype(np.int32)
    logits = (rng.normal(size=(n, c)) + 0.8 * np.eye(c)[labels]).astype(np.float32)
    totals = None
    for lg, lb, loss, mask in _batches(n, 64, logits, labels, np.zeros(n, np.float32)):
        totals = metrics.accumulate(totals, _top_k_sums(lg, lb, mask, loss, k))
    rep = metrics.report(totals)
    assert rep["top_k_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=k, labels=range(c)), abs=1e-12)
    assert rep["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(-1)), abs=1e-12)
    assert "top_k_accuracy" in metrics.scalars(rep)


@pytest.mark.parametrize("ties", [False, True])
def test_binary_report_and_roc_match_sklearn_over_padded_batches(ties):
    rng = np.random.default_rng(7 + ties)
    n = 301
    labels = rng.integers(0, 2, n).astype(np.int32)
    logits = (rng.normal(size=n) + 1.2 * labels).astype(np.float32)
    if ties:
        logits = np.round(logits * 2) / 2  # many equal scores: thresholds must group them
    loss = rng.uniform(size=n).astype(np.float32)
    totals = None
    for lg, lb, ls, mask in _batches(n, 48, logits[:, None], labels, loss):
        totals = metrics.accumulate(totals, _binary_sums(lg, lb, mask, ls))
    rep = metrics.report(totals, class_names=("neg", "pos"))
    pred = (logits > 0).astype(int)
    assert rep["num_examples"] == n
    assert rep["loss"] == pytest.approx(loss.astype(np.float64).mean(), rel=1e-6)  # float32 batch sums
    assert rep["accuracy"] == pytest.approx(accuracy_score(labels, pred), abs=1e-12)
    assert rep["precision"] == pytest.approx(precision_score(labels, pred), abs=1e-12)
    assert rep["recall"] == pytest.approx(recall_score(labels, pred), abs=1e-12)
    assert rep["f1"] == pytest.approx(f1_score(labels, pred), abs=1e-12)
    assert rep["f1_macro"] == pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-12)
    assert rep["roc_auc"] == pytest.approx(roc_auc_score(labels, logits), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, logits)
    np.testing.assert_allclose(rep["roc_curve"]["fpr"], fpr, atol=1e-12)
    np.testing.assert_allclose(rep["roc_curve"]["tpr"], tpr, atol=1e-12)
    assert list(rep["per_class"]) == ["neg", "pos"]
    # One batch's sums (not accumulated) report the same, padding dropped by its mask.
    lg, lb, ls, mask = next(_batches(n, 512, logits[:, None], labels, loss))
    one = metrics.report(_binary_sums(lg, lb, mask, ls), class_names=("neg", "pos"))
    assert one["roc_auc"] == pytest.approx(rep["roc_auc"], abs=1e-12) and one["f1"] == rep["f1"]


def test_roc_needs_both_classes():
    rep = metrics.report(_binary_sums(np.ones((4, 1), np.float32), np.ones(4, np.int32), np.ones(4, bool),
                                      np.zeros(4, np.float32)))
    assert "roc_auc" not in rep and rep["recall"] == 1.0


def test_r2_with_large_target_mean_over_many_batches():
    rng = np.random.default_rng(6)
    n = 997
    y = (1000.0 + rng.normal(size=(n, 1))).astype(np.float32)
    out = (y + 0.3 * rng.normal(size=y.shape)).astype(np.float32)
    totals = None
    for o, t, ls, mask in _batches(n, 64, out, y, np.zeros(n, np.float32)):
        totals = metrics.accumulate(totals, _regression_sums(o, t, mask, ls))
    rep = metrics.report(totals)
    yt, yp = y.astype(np.float64), out.astype(np.float64)
    assert rep["r2"] == pytest.approx(r2_score(yt, yp), abs=1e-4)
    assert rep["mse"] == pytest.approx(mean_squared_error(yt, yp), rel=1e-4)
    # Plainly added float32 sums lose R^2 here: the reason for accumulate().
    plain = None
    for o, t, ls, mask in _batches(n, 64, out, y, np.zeros(n, np.float32)):
        s = _regression_sums(o, t, mask, ls)
        plain = s if plain is None else jax.tree.map(jnp.add, plain, s)
    assert abs(metrics.report(plain)["r2"] - r2_score(yt, yp)) > 1e-3


def test_regression_metrics_in_target_units():
    rng = np.random.default_rng(8)
    n, mean, std = 150, 152.0, 77.0
    y = rng.normal(mean, std, n)
    pred = y + rng.normal(0, 40, n)
    # What the pipeline and model see: standardised targets and outputs.
    ys = ((y - mean) / std).astype(np.float32)[:, None]
    ps = ((pred - mean) / std).astype(np.float32)[:, None]
    losses_ = ((ps - ys) ** 2)[:, 0]
    totals = None
    for o, t, ls, mask in _batches(n, 32, ps, ys, losses_):
        totals = metrics.accumulate(totals, _regression_sums(o, t, mask, ls))
    rep = metrics.report(totals, target_scale=np.float32(std))
    assert rep["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-4)
    assert rep["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-4)
    assert rep["r2"] == pytest.approx(r2_score(y, pred), abs=1e-5)
    assert rep["loss"] == pytest.approx(mean_squared_error(ys, ps), rel=1e-5)  # the objective, standardised


def test_accumulate_equals_plain_sums_for_classification():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(100, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 100).astype(np.int32)
    loss = rng.uniform(size=100).astype(np.float32)
    totals, plain = None, None
    for lg, lb, ls, mask in _batches(100, 32, logits, labels, loss):
        s = _top_k_sums(lg, lb, mask, ls, 0)
        totals = metrics.accumulate(totals, s)
        plain = s if plain is None else jax.tree.map(jnp.add, plain, s)
    a, b = metrics.report(totals), metrics.report(plain)
    assert a.pop("loss") == pytest.approx(b.pop("loss"), rel=1e-6)
    assert a == b


def test_sums_fn_per_task():
    logits = jnp.asarray([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    targets, mask, loss = jnp.asarray([1, 2]), jnp.asarray([True, True]), jnp.asarray([0.5, 1.5])
    rep = metrics.report(metrics.sums_fn("classification", top_k=2)(logits, targets, mask, loss))
    assert rep["top_k_accuracy"] == 1.0 and rep["accuracy"] == 0.5
    seq = metrics.report(metrics.sums_fn("sequence")(None, None, jnp.asarray([True, False]), loss))
    assert seq == {"loss": 0.5, "num_examples": 1}
