"""Tests for jtrain.optim and jtrain.policy: every optimizer against its published update rule written out in NumPy,
every schedule against its definition (StepLR's documented values at every epoch boundary), clipping, weight-decay
masks and the per-parameter policy table (frozen parameters bitwise unchanged with no optimizer state)."""

from __future__ import annotations

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jtrain import optim, policy
from jtrain.config import default_config
from jtrain.errors import ConfigError


def _config(**fields):
    """Default config with `section__key=value` fields set."""
    c = default_config()
    for key, value in fields.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


def _build(total_steps=100, steps_per_epoch=None, **fields):
    c = _config(**fields)
    return optim.build(c.optim, c.schedule, total_steps, steps_per_epoch=steps_per_epoch)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "backbone": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                     "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
        "head": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                 "bias": jnp.asarray(rng.normal(size=(2,)), jnp.float32)},
        "norm": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, size=(3,)), jnp.float32)},
    }


def _grads(params, step):
    """Deterministic gradients that vary with the step and the parameter (a quadratic bowl plus noise)."""
    rng = np.random.default_rng(100 + step)
    return jax.tree.map(lambda p: 0.5 * p + jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)


def _run(tx, params, steps=5):
    state = tx.init(params)
    for step in range(steps):
        updates, state = tx.update(_grads(params, step), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------- optimizers

LR, B1, B2, EPS, WD, MOM, RHO = 0.01, 0.8, 0.95, 1e-6, 0.05, 0.7, 0.85


# Each optimizer's published update rule in float64 NumPy, one step over {path: array}, with jtrain's settings:
# weight decay only on arrays of 2+ dims, coupled (added to the gradient) for sgd, adam, rmsprop and adagrad,
# decoupled for the others. `s` is the per-parameter state (a dict), `t` the 1-based step.


def _coupled(g, p, decays):
    return g + WD * p if decays else g


def _np_sgd(p, g, s, t, decays):  # Sutskever et al. 2013, PyTorch's Nesterov form
    g = _coupled(g, p, decays)
    s["v"] = MOM * s.get("v", 0.0) + g
    return p - LR * (g + MOM * s["v"])


def _np_adam(p, g, s, t, decays, decoupled=False):  # Kingma & Ba 2015, Algorithm 1
    g = g if decoupled else _coupled(g, p, decays)
    s["m"] = B1 * s.get("m", 0.0) + (1 - B1) * g
    s["v"] = B2 * s.get("v", 0.0) + (1 - B2) * g**2
    step = (s["m"] / (1 - B1**t)) / (np.sqrt(s["v"] / (1 - B2**t)) + EPS)
    return p - LR * (step + (WD * p if decoupled and decays else 0.0))  # AdamW: Loshchilov & Hutter 2019


def _np_rmsprop(p, g, s, t, decays):
    # Hinton's RMSprop, eps inside the root (optax's form), with Nesterov momentum on the scaled gradient.
    g = _coupled(g, p, decays)
    s["nu"] = RHO * s.get("nu", 0.0) + (1 - RHO) * g**2
    scaled = g / np.sqrt(s["nu"] + EPS)
    s["b"] = MOM * s.get("b", 0.0) + scaled
    return p - LR * (scaled + MOM * s["b"])


def _np_adagrad(p, g, s, t, decays):
    # Duchi et al. 2011: the running sum of squared gradients, started at 0.1 (TensorFlow's and optax's default).
    g = _coupled(g, p, decays)
    s["G"] = s.get("G", 0.1) + g**2
    return p - LR * g / np.sqrt(s["G"] + EPS)


def _np_lion(p, g, s, t, decays):  # Chen et al. 2023, Algorithm 2
    m = s.get("m", 0.0)
    c = B1 * m + (1 - B1) * g
    s["m"] = B2 * m + (1 - B2) * g
    return p - LR * (np.sign(c) + (WD * p if decays else 0.0))


def _np_lamb(p, g, s, t, decays):
    # You et al. 2020, Algorithm 2: Adam's step plus decoupled decay, rescaled by the layer's trust ratio
    # ||p|| / ||update|| (1 when either norm is 0).
    s["m"] = B1 * s.get("m", 0.0) + (1 - B1) * g
    s["v"] = B2 * s.get("v", 0.0) + (1 - B2) * g**2
    r = (s["m"] / (1 - B1**t)) / (np.sqrt(s["v"] / (1 - B2**t)) + EPS) + (WD * p if decays else 0.0)
    pn, rn = np.linalg.norm(p), np.linalg.norm(r)
    return p - LR * (pn / rn if pn > 0 and rn > 0 else 1.0) * r


def _np_adafactor(p, g, s, t, decays):
    # Shazeer & Stern 2018, Algorithms 4 and 5: second moments decayed by 1 - t^-0.8, eps1 = 1e-30 added to
    # g^2, factored into row and column sums for matrices (optax factors when both sides are >= 128), update
    # clipping at RMS d = 1, step scaled by max(eps2 = 1e-3, RMS(p)); the given learning rate instead of the
    # relative step size; momentum as an undebiased moving average; decay wd * p per step, not scaled by the rate.
    beta = 1.0 - t**-0.8
    g2 = g**2 + 1e-30
    if p.ndim == 2 and min(p.shape) >= 128:
        s["R"] = beta * s.get("R", 0.0) + (1 - beta) * g2.sum(1)  # (n,) row sums
        s["C"] = beta * s.get("C", 0.0) + (1 - beta) * g2.sum(0)  # (m,) column sums
        v = np.outer(s["R"], s["C"]) / s["R"].sum()
    else:
        v = s["v"] = beta * s.get("v", 0.0) + (1 - beta) * g2
    u = g / np.sqrt(v)
    u = u / max(1.0, np.sqrt(np.mean(u**2)))
    u = LR * max(1e-3, np.sqrt(np.mean(p**2))) * u
    s["m"] = MOM * s.get("m", 0.0) + (1 - MOM) * u
    return p - (s["m"] + (WD * p if decays else 0.0))


NUMPY_RULES = {"sgd": _np_sgd, "adam": _np_adam, "rmsprop": _np_rmsprop, "adagrad": _np_adagrad,
               "lion": _np_lion, "lamb": _np_lamb, "adafactor": _np_adafactor,
               "adamw": lambda p, g, s, t, d: _np_adam(p, g, s, t, d, decoupled=True)}


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_optimizer_follows_its_published_update_rule(name):
    tx, _ = _build(optim__name=name, optim__learning_rate=LR, optim__b1=B1, optim__b2=B2, optim__eps=EPS,
                   optim__weight_decay=WD, optim__momentum=MOM, optim__nesterov=True, optim__rmsprop_decay=RHO)
    params = _params()
    # A 128 x 130 kernel too: Adafactor factors its second moments only when both sides are >= 128.
    params["wide"] = {"kernel": jnp.asarray(np.random.default_rng(1).normal(size=(128, 130)), jnp.float32)}
    flat = lambda tree: {"/".join(k.key for k in path): np.asarray(x, np.float64)  # noqa: E731
                         for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    expected, states, rule = flat(params), {}, NUMPY_RULES[name]
    state = tx.init(params)
    for t in range(1, 6):
        grads = _grads(params, t)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for key, g in flat(grads).items():
            expected[key] = rule(expected[key], g, states.setdefault(key, {}), t, expected[key].ndim > 1)
        for key, value in flat(params).items():
            np.testing.assert_allclose(value, expected[key], rtol=2e-5, atol=1e-6, err_msg=f"{name} step {t} {key}")
    assert not np.allclose(params["head"]["kernel"], _params()["head"]["kernel"])  # it did train


def test_sgd_nesterov_matches_the_textbook_formula():
    # PyTorch's form: v = mu v + g; step = g + mu v (Nesterov); p -= lr step.
    tx, _ = _build(optim__name="sgd", optim__learning_rate=0.1, optim__momentum=0.9, optim__nesterov=True)
    params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
    p, v = np.asarray(params["w"], np.float64), np.zeros(3)
    state = tx.init(params)
    for step in range(4):
        g = np.asarray(_grads(params, step)["w"], np.float64)
        updates, state = tx.update(_grads(params, step), state, params)
        params = optax.apply_updates(params, updates)
        v = 0.9 * v + g
        p = p - 0.1 * (g + 0.9 * v)
        np.testing.assert_allclose(params["w"], p, rtol=1e-5)


def test_adam_matches_the_paper():
    tx, _ = _build(optim__name="adam", optim__learning_rate=0.01)
    params = {"w": jnp.asarray([0.5, -1.0])}
    p, m, v = np.asarray(params["w"], np.float64), np.zeros(2), np.zeros(2)
    state = tx.init(params)
    for t in range(1, 5):
        g = np.asarray(_grads(params, t)["w"], np.float64)
        updates, state = tx.update(_grads(params, t), state, params)
        params = optax.apply_updates(params, updates)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        p = p - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(params["w"], p, rtol=1e-5)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_weight_decay_never_touches_biases_or_norm_scales(name):
    tx, _ = _build(optim__name=name, optim__learning_rate=0.1, optim__weight_decay=0.5)
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = tx.init(params)
    updates, _ = tx.update(zeros, state, params)
    new = optax.apply_updates(params, updates)
    for group in ("backbone", "head"):
        np.testing.assert_array_equal(new[group]["bias"], params[group]["bias"])
        assert not np.allclose(new[group]["kernel"], params[group]["kernel"]), name  # kernels do decay
    np.testing.assert_array_equal(new["norm"]["scale"], params["norm"]["scale"])


def test_clip_by_value_then_sgd():
    tx, _ = _build(optim__name="sgd", optim__learning_rate=1.0, optim__grad_clip_value=0.5)
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.asarray([-3.0, -0.2, 0.3, 7.0])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [0.5, 0.2, -0.3, -0.5])


def test_negative_clip_is_a_config_error():
    with pytest.raises(ConfigError, match="optim.grad_clip_value"):
        _build(optim__grad_clip_value=-1.0)


# ---------------------------------------------------------------------------------------------- schedules


def _lrs(schedule, steps) -> np.ndarray:
    values = jax.jit(jax.vmap(schedule))(jnp.arange(steps))
    return np.asarray(values, np.float64)


def test_step_decay_matches_pytorch_steplr_at_every_epoch_boundary():
    # torch.optim.lr_scheduler.StepLR docs: lr = 0.05 for epochs 0-29, 0.005 for 30-59, 0.0005 for 60-89, ...
    steps_per_epoch = 10  # 320 examples, batch 32
    total = 100 * steps_per_epoch
    _, lr = _build(total, fractions.Fraction(320, 32), optim__learning_rate=0.05, schedule__name="step",
                   schedule__unit="epochs", schedule__step_size=30, schedule__gamma=0.1)
    values = _lrs(lr, total + 1)
    for epoch in range(100):
        expected = 0.05 * 0.1 ** (epoch // 30)
        first, last = epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1
        assert values[first] == pytest.approx(expected, rel=1e-6), epoch
        assert values[last] == pytest.approx(expected, rel=1e-6), epoch
    assert values[0] == pytest.approx(0.05) and values[299] == pytest.approx(0.05)
    assert values[300] == pytest.approx(0.005) and values[599] == pytest.approx(0.005)
    assert values[600] == pytest.approx(0.0005) and values[899] == pytest.approx(0.0005)
    assert values[900] == pytest.approx(0.00005)


def test_step_decay_with_fractional_steps_per_epoch():
    # digits' 1258 training examples in batches of 32: an epoch is 39.3125 steps and batches straddle epochs;
    # the epoch of step s is floor(s * 32 / 1258) (examples consumed before it).
    n, b, total = 1258, 32, 2000
    _, lr = _build(total, fractions.Fraction(n, b), optim__learning_rate=0.1, schedule__name="step",
                   schedule__unit="epochs", schedule__step_size=7, schedule__gamma=0.5)
    values = _lrs(lr, total + 1)
    expected = [0.1 * 0.5 ** ((s * b // n) // 7) for s in range(total + 1)]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_step_decay_in_steps():
    _, lr = _build(50, optim__learning_rate=1.0, schedule__name="step", schedule__step_size=7, schedule__gamma=0.5)
    np.testing.assert_allclose(_lrs(lr, 50), [0.5 ** (s // 7) for s in range(50)], rtol=1e-6)


def test_multistep_matches_pytorch_multisteplr():
    # torch MultiStepLR docs: milestones [30, 80], gamma 0.1: 0.05 if epoch < 30, 0.005 if < 80, else 0.0005.
    _, lr = _build(1000, 10, optim__learning_rate=0.05, schedule__name="multistep", schedule__unit="epochs",
                   schedule__milestones=(30, 80), schedule__gamma=0.1)
    values = _lrs(lr, 1000)
    expected = [0.05 if s // 10 < 30 else 0.005 if s // 10 < 80 else 0.0005 for s in range(1000)]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_exponential_per_epoch_and_per_step():
    _, lr = _build(200, 10, optim__learning_rate=0.1, schedule__name="exponential", schedule__unit="epochs",
                   schedule__gamma=0.9)
    np.testing.assert_allclose(_lrs(lr, 200), [0.1 * 0.9 ** (s // 10) for s in range(200)], rtol=1e-5)
    _, lr = _build(200, optim__learning_rate=0.1, schedule__name="exponential", schedule__gamma=0.99)
    np.testing.assert_allclose(_lrs(lr, 200), [0.1 * 0.99**s for s in range(200)], rtol=1e-5)


def test_piecewise_factors():
    _, lr = _build(40, optim__learning_rate=0.2, schedule__name="piecewise", schedule__boundaries=(10, 25),
                   schedule__factors=(1.0, 0.5, 0.1))
    values = _lrs(lr, 40)
    np.testing.assert_allclose(values, [0.2] * 10 + [0.1] * 15 + [0.02] * 15, rtol=1e-6)


def test_one_cycle_is_optax_with_pytorch_defaults():
    _, lr = _build(1000, optim__learning_rate=0.1, schedule__name="one_cycle")
    values = _lrs(lr, 1001)
    reference = optax.cosine_onecycle_schedule(1000, 0.1, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    np.testing.assert_allclose(values, _lrs(reference, 1001), rtol=1e-6)
    assert values[0] == pytest.approx(0.1 / 25)
    assert values.max() == pytest.approx(0.1) and int(values.argmax()) == 300
    assert values[1000] == pytest.approx(0.1 / 25 / 1e4, rel=1e-3)


def test_warmup_scales_a_decay_schedule_without_moving_its_boundaries():
    _, lr = _build(60, optim__learning_rate=1.0, schedule__name="step", schedule__step_size=20,
                   schedule__gamma=0.1, schedule__warmup_steps=10)
    values = _lrs(lr, 60)
    np.testing.assert_allclose(values[:10], np.arange(10) / 10, rtol=1e-6)
    np.testing.assert_allclose(values[10:20], 1.0)
    np.testing.assert_allclose(values[20:40], 0.1, rtol=1e-6)


@pytest.mark.parametrize("fields, key", [
    (dict(schedule__name="step", schedule__unit="epochs"), "schedule.unit"),  # no steps per epoch given
    (dict(schedule__name="step", schedule__unit="epoch"), "schedule.unit"),
    (dict(schedule__name="step", schedule__step_size=0), "schedule.step_size"),
    (dict(schedule__name="multistep"), "schedule.milestones"),
    (dict(schedule__name="multistep", schedule__milestones=(30, 10)), "schedule.milestones"),
    (dict(schedule__name="piecewise", schedule__boundaries=(10,), schedule__factors=(1.0,)), "schedule.factors"),
    (dict(schedule__name="exponential", schedule__gamma=0.0), "schedule.gamma"),
    (dict(schedule__name="one_cycle", schedule__pct_start=1.5), "schedule.pct_start"),
    (dict(schedule__name="stepp"), "schedule.name"),
])
def test_bad_schedule_fields_name_the_key(fields, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _build(**fields)


# ---------------------------------------------------------------------------------------------- policy table


def test_policy_syntax_errors_name_the_rule():
    for rule, fragment in [("backbone", "not 'REGEX=ACTION'"), ("x=fly", "unknown action 'fly'"),
                           ("x=lr:fast", "needs a number"), ("([=frozen", "bad regex"), ("x=wd:-1", ">= 0")]:
        with pytest.raises(ConfigError, match=fragment) as e:
            policy.parse((rule,))
        assert "optim.policy" in str(e.value) and rule in str(e.value)


def test_policy_rule_matching_nothing_is_an_error():
    tx, _ = _build(optim__policy=("backbone/.*=frozen", "backbon/kernel=lr:2"))
    with pytest.raises(ConfigError, match="'backbon/kernel=lr:2' matches no parameter"):
        tx.init(_params())


def test_policy_resolution_first_matching_rule_wins_per_attribute():
    rules = policy.parse(("head/.*=lr:10", ".*bias=wd:0,lr:2", "backbone/.*=frozen"))
    table = dict(policy.describe(_params(), rules))
    assert table["head/bias"] == policy.ParamPolicy(frozen=False, lr_mult=10.0, wd_mult=0.0)
    assert table["head/kernel"] == policy.ParamPolicy(lr_mult=10.0)
    assert table["backbone/bias"] == policy.ParamPolicy(frozen=True, lr_mult=2.0, wd_mult=0.0)
    assert table["norm/scale"] == policy.ParamPolicy()
    assert policy.param_paths(_params()) == list(table)
    (rule,) = policy.parse(("x=y=lr:3",))
    assert rule.pattern.pattern == "x=y" and rule.lr_mult == 3.0  # split at the last '='


def test_frozen_parameters_are_bitwise_unchanged_and_have_no_optimizer_state():
    params = _params()
    params["backbone"]["bias"] = params["backbone"]["bias"].at[0].set(-0.0)  # -0.0 + 0.0 would flip the sign bit
    tx, _ = _build(optim__name="adam", optim__learning_rate=0.1, optim__grad_clip_norm=1.0,
                   optim__policy=("backbone/.*=frozen",))
    new, state = _run(tx, params, steps=3)
    for name in ("kernel", "bias"):
        assert np.asarray(new["backbone"][name]).tobytes() == np.asarray(params["backbone"][name]).tobytes()
    assert np.signbit(new["backbone"]["bias"][0])
    assert not np.allclose(new["head"]["kernel"], params["head"]["kernel"])
    # The optimizer state holds moments for the trainable parameters only: exactly what Adam on them alone holds.
    trainable = {"head": params["head"], "norm": params["norm"]}
    size = lambda tree: sum(int(np.size(x)) for x in jax.tree.leaves(tree))  # noqa: E731
    assert size(state) == size(optax.adam(optax.constant_schedule(0.1)).init(trainable))
    # ... and the trainable ones trained as if the frozen ones were absent (clipping norm included).
    alone = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    state_alone = alone.init(trainable)
    for step in range(3):
        grads = _grads({**trainable, "backbone": params["backbone"]}, step)
        grads.pop("backbone")
        updates, state_alone = alone.update(grads, state_alone, trainable)
        trainable = optax.apply_updates(trainable, updates)
    _assert_trees_close({"head": new["head"], "norm": new["norm"]}, trainable)


def test_learning_rate_and_weight_decay_multipliers():
    lr, wd = 0.1, 0.2
    tx, _ = _build(optim__name="adamw", optim__learning_rate=lr, optim__weight_decay=wd,
                   optim__policy=("head/kernel=lr:3,wd:0", "backbone/kernel=wd:2"))
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["head"]["kernel"], params["head"]["kernel"])  # wd 0
    np.testing.assert_allclose(new["backbone"]["kernel"], params["backbone"]["kernel"] * (1 - lr * wd * 2), rtol=1e-6)
    # With gradients, Adam's first step moves each weight by lr * sign(g) * lr multiplier.
    tx, _ = _build(optim__name="adamw", optim__learning_rate=lr, optim__policy=("head/kernel=lr:3",))
    grads = _grads(params, 0)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["kernel"], -3 * lr * np.sign(grads["head"]["kernel"]), rtol=1e-5)
    np.testing.assert_allclose(updates["backbone"]["kernel"], -lr * np.sign(grads["backbone"]["kernel"]), rtol=1e-5)


def test_policy_multiplier_follows_the_schedule():
    tx, lr = _build(total_steps=20, optim__name="sgd", optim__learning_rate=1.0, schedule__name="step",
                    schedule__step_size=2, schedule__gamma=0.5, optim__policy=("head/.*=lr:4",))
    params = {"head": {"w": jnp.ones(2)}, "body": {"w": jnp.ones(2)}}
    state = tx.init(params)
    ones = jax.tree.map(jnp.ones_like, params)
    for step in range(5):
        updates, state = tx.update(ones, state, params)
        np.testing.assert_allclose(updates["body"]["w"], -float(lr(step)), rtol=1e-6)
        np.testing.assert_allclose(updates["head"]["w"], -4 * float(lr(step)), rtol=1e-6)
    assert math.isclose(float(lr(4)), 0.25)
