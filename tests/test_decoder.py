"""The GPT-style decoder (jtrain/models/decoder.py) on one device: shapes, causality, scanned = unscanned, remat,
bfloat16 against float32, annotations."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jtrain import config as config_lib, models, sharding
from jtrain.errors import ConfigError
from jtrain.models.decoder import Decoder

SMALL = dict(vocab_size=32, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_len=16)


def init(model, tokens):
    # Jitted: compiling the init is quicker than running it op by op.
    return nn.unbox(jax.jit(lambda t: model.init(jax.random.key(0), t, train=False))(tokens))["params"]


def tokens(batch=2, length=16, seed=1):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, SMALL["vocab_size"])


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_logits_shape_dtype_and_causality(position):
    model = Decoder(**SMALL, position=position)
    x = tokens()
    params = init(model, x)
    apply = jax.jit(lambda t: model.apply({"params": params}, t, train=False))
    logits = apply(x)
    assert logits.shape == (2, 16, 32) and logits.dtype == jnp.float32
    # Changing token 10 changes no prediction before position 10, and does change the one at 10.
    changed = x.at[:, 10].set((x[:, 10] + 1) % SMALL["vocab_size"])
    other = apply(changed)
    np.testing.assert_allclose(other[:, :10], logits[:, :10], atol=1e-6)
    assert not np.allclose(other[:, 10], logits[:, 10])


def test_bfloat16_compute_keeps_float32_parameters_and_matches_float32_logits():
    x, position = tokens(), "rotary"  # queries and keys rounded to bfloat16 around their float32 rotation
    model = Decoder(**SMALL, position=position, dtype=jnp.bfloat16)
    params = init(model, x)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    half = jax.jit(lambda p: model.apply({"params": p}, x, train=False))(params)  # (B, T, V)
    full = jax.jit(lambda p: Decoder(**SMALL, position=position).apply({"params": p}, x, train=False))(params)
    assert half.dtype == jnp.float32
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9 per operation): through two blocks the logits
    # are off by 0.4% of their largest value (measured); 2% allows for other CPUs' and GPUs' orders of sums,
    # while a block computing the wrong thing would be off by the logits' own size.
    scale = float(jnp.abs(full).max())
    np.testing.assert_allclose(half, full, atol=2e-2 * scale, rtol=0)
    assert not np.array_equal(half, full)  # the blocks did compute in bfloat16


def test_scanned_layers_give_the_unscanned_logits_and_gradients():
    # The same parameters, block_i's leaves stacked on a leading layers axis: the scan runs the same blocks.
    x, position = tokens(), "rotary"
    plain = init(Decoder(**SMALL, position=position), x)
    blocks = [plain[f"block_{i}"] for i in range(SMALL["num_layers"])]
    stacked = {k: v for k, v in plain.items() if not k.startswith("block_")}
    stacked["layers"] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *blocks)
    assert jax.tree.structure(stacked) == jax.tree.structure(init(Decoder(**SMALL, position=position,
                                                                          scan_layers=True), x))

    def logits_and_grads(model, params):
        logits = lambda p: model.apply({"params": p}, x, train=False)  # (B, T, V)
        return jax.jit(lambda p: (logits(p), jax.grad(lambda q: (logits(q) ** 2).mean())(p)))(params)

    a, grads_a = logits_and_grads(Decoder(**SMALL, position=position), plain)
    b, grads_b = logits_and_grads(Decoder(**SMALL, position=position, scan_layers=True), stacked)
    # float32 throughout; only XLA's fusion of the loop body may reorder sums.
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    unstacked = [jax.tree.map(lambda leaf: leaf[i], grads_b["layers"]) for i in range(SMALL["num_layers"])]
    grads_b = {**{k: v for k, v in grads_b.items() if k != "layers"},
               **{f"block_{i}": g for i, g in enumerate(unstacked)}}
    # Against the largest gradient: the keys' bias has a zero gradient in exact arithmetic (rounding noise only).
    grad_scale = max(float(jnp.abs(u).max()) for u in jax.tree.leaves(grads_a))
    jax.tree.map(lambda u, v: np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-5 * grad_scale), grads_a, grads_b)
    other = jax.tree.map(lambda leaf: leaf[::-1], stacked["layers"])  # blocks in the other order: other logits
    c = jax.jit(lambda p: Decoder(**SMALL, position=position, scan_layers=True).apply({"params": p}, x, train=False))(
        {**stacked, "layers": other})
    assert not np.allclose(c, a, rtol=1e-3, atol=1e-4)


def test_scan_stacks_layers_and_remat_changes_no_number():
    x = tokens()
    plain = jax.eval_shape(lambda: init(Decoder(**SMALL), x))
    scanned = init(Decoder(**SMALL, scan_layers=True), x)
    assert sum(a.size for a in jax.tree.leaves(plain)) == sum(a.size for a in jax.tree.leaves(scanned))
    assert scanned["layers"]["mlp_in"]["kernel"].shape == (2, 32, 64)  # (layers, embed, mlp)

    def grads(model):
        return jax.jit(jax.grad(lambda p: model.apply({"params": p}, x, train=False).sum()))(scanned)

    # Rematerialisation recomputes the forward pass in the backward one: the same gradients, whatever it keeps.
    a = grads(Decoder(**SMALL, scan_layers=True))
    for policy in ("full", "dots"):
        b = grads(Decoder(**SMALL, scan_layers=True, remat=True, remat_policy=policy))
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("packed", [False, True])
def test_fused_attention_gives_the_einsum_forms_logits_and_gradients(dtype, tolerance, packed):
    # On a CPU both are XLA's einsums; on a GPU in bfloat16 the fused one is cuDNN's flash attention (is_causal,
    # unpacked), which rounds differently: hence the bfloat16 tolerance.
    x = tokens(batch=3)
    segments = jnp.array([[1] * 6 + [2] * 10, [1] * 16, [1] * 3 + [2] * 3 + [3] * 10]) if packed else None  # (B, T)
    params = init(Decoder(**SMALL, position="rotary"), x)

    def logits_and_grads(attention):
        model = Decoder(**SMALL, position="rotary", attention=attention, dtype=dtype)
        logits = lambda p: model.apply({"params": p}, x, train=False, segment_ids=segments)  # (B, T, V)
        return jax.jit(lambda p: (logits(p), jax.grad(lambda q: (logits(q) ** 2).mean())(p)))(params)

    (a, grads_a), (b, grads_b) = logits_and_grads("einsum"), logits_and_grads("fused")
    scale = float(jnp.abs(a).max())
    np.testing.assert_allclose(b, a, atol=tolerance * scale, rtol=tolerance)
    # Against the largest gradient, not each leaf's own: the keys' bias has a zero gradient in exact arithmetic
    # (softmax ignores a constant added to every score), so its leaf holds rounding noise alone.
    grad_scale = max(float(jnp.abs(u).max()) for u in jax.tree.leaves(grads_a))
    for u, v in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(v, u, atol=tolerance * grad_scale, rtol=tolerance)


def test_bfloat16_head_rounds_only_the_logits():
    x = tokens()
    params = init(Decoder(**SMALL), x)
    full = Decoder(**SMALL, dtype=jnp.bfloat16).apply({"params": params}, x, train=False)  # (B, T, V)
    half = Decoder(**SMALL, dtype=jnp.bfloat16, head_float32=False).apply({"params": params}, x, train=False)
    assert half.dtype == jnp.float32
    # bfloat16 keeps 8 significant bits: the logits agree to about 1% of their range, and differ.
    np.testing.assert_allclose(half, full, atol=1e-2 * float(jnp.abs(full).max()))
    assert not np.array_equal(half, full)


def test_every_parameter_is_named_and_every_name_has_a_default_rule():
    rules = sharding.parse_rules(config_lib.default_config().mesh.rules)
    for scan in (False, True):
        axes = sharding.logical_axes(Decoder(**SMALL, scan_layers=scan), tokens())
        params = jax.eval_shape(lambda: init(Decoder(**SMALL, scan_layers=scan), tokens()))
        assert len(axes) == len(jax.tree.leaves(params))
        names = {n for names in axes.values() for n in names if n is not None}
        assert names <= set(rules.table)
        assert names >= {"vocab", "embed", "heads", "kv", "mlp"} | ({"layers"} if scan else set())


def test_registered_as_decoder_and_config_mistakes_name_the_key():
    config = config_lib.default_config()
    config_lib.apply_overrides(config, ["model.name=decoder", "model.vocab_size=32", "model.embed_dim=32",
                                        "model.mlp_dim=64", "model.max_len=16", "model.position=rotary"])
    model = models.build(config.model, num_outputs=10)
    assert isinstance(model, Decoder) and model.vocab_size == 32  # model.vocab_size wins over the dataset's
    config_lib.apply_overrides(config, ["model.vocab_size=0"])
    assert models.build(config.model, num_outputs=10).vocab_size == 10
    for override, key in [("model.num_heads=5", "model.embed_dim"), ("model.position=alibi", "model.position"),
                          ("model.attention=flash", "model.attention"),
                          ("model.remat_policy=minimal", "model.remat_policy")]:
        bad = config.copy_and_resolve_references()
        config_lib.apply_overrides(bad, [override])
        with pytest.raises(ConfigError, match=f"'{key}'"):
            models.build(bad.model, 10)
    with pytest.raises(ConfigError, match="'model.max_len': sequence length 17 exceeds"):
        model.init(jax.random.key(0), tokens(length=17), train=False)


def test_a_few_steps_learn_a_counting_sequence():
    """Masked next-token cross-entropy on (next = previous + 1) sequences: the loss falls fast."""
    model = Decoder(**SMALL, position="rotary", scan_layers=True)
    start = jax.random.randint(jax.random.key(2), (16, 1), 0, 32)
    seq = (start + jnp.arange(17)) % 32  # (B, T + 1)
    mask = (jnp.arange(16) < 12).astype(jnp.float32)[None].repeat(16, 0)  # (B, T): the tail is padding
    params = init(model, seq[:, :-1])
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_of(p):
            logits = model.apply({"params": p}, seq[:, :-1], train=False)  # (B, T, V)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, seq[:, 1:])  # (B, T)
            return (losses * mask).sum() / mask.sum()

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(30):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[0] > 3.0 and losses[-1] < 0.5 * losses[0], losses
