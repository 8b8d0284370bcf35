"""Generation with the decoder's key-value cache equals recomputing the whole forward pass for every token."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrain.models.decoder import Decoder
from jtrain.sample import choose, generate, init_cache

VOCAB, MAX_LEN = 40, 16


def _model(position: str = "learned", scan_layers: bool = False, attention: str = "einsum") -> tuple[Decoder, dict]:
    model = Decoder(vocab_size=VOCAB, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_len=MAX_LEN,
                    position=position, scan_layers=scan_layers, attention=attention)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, MAX_LEN), jnp.int32), train=False))["params"]
    # Larger weights than the init's: logits far apart, so argmax cannot flip on float rounding.
    params = jax.tree.map(lambda p: p * 8.0 if p.ndim > 1 else p, params)
    return model, params


def _greedy_uncached(model, params, prompt: np.ndarray, steps: int) -> np.ndarray:
    # The full forward pass over the whole (zero-padded) window for every token: causal attention makes the
    # logits at position n - 1 independent of the padding after it, and one shape compiles once.
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))  # (1, L) -> (1, L, V)
    tokens = list(prompt)
    for _ in range(steps):
        window = np.zeros((1, MAX_LEN), np.int32)
        window[0, : len(tokens)] = tokens
        tokens.append(int(jnp.argmax(forward(params, window)[0, len(tokens) - 1])))
    return np.asarray(tokens[len(prompt):])


@pytest.mark.parametrize("position,scan_layers", [("learned", False), ("rotary", True)])
def test_cached_greedy_generation_equals_full_recompute(position, scan_layers):
    model, params = _model(position, scan_layers)
    prompt = np.asarray([3, 1, 4, 1, 5], np.int32)
    steps = MAX_LEN - len(prompt)
    cached = generate(model, params, prompt, steps, jax.random.key(1), temperature=0.0)
    np.testing.assert_array_equal(cached, _greedy_uncached(model, params, prompt, steps))


@pytest.mark.parametrize("attention", ["einsum", "fused"])
def test_cached_logits_match_the_full_forward_pass(attention):
    model, params = _model("rotary", attention=attention)
    tokens = jax.random.randint(jax.random.key(2), (2, MAX_LEN), 0, VOCAB)  # (B, T)
    full = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, tokens)  # (B, T, V)
    decoder = model.clone(decode=True)
    step = jax.jit(lambda cache, x: decoder.apply({"params": params, "cache": cache}, x, train=False,
                                                  mutable=["cache"]))
    # Prefill the first 6 positions at once, then one token at a time.
    logits, mutated = step(init_cache(decoder, batch=2), tokens[:, :6])
    steps = [logits]
    for t in range(6, MAX_LEN):
        logits, mutated = step(mutated["cache"], tokens[:, t:t + 1])
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-4, rtol=1e-4)


def test_generation_continues_past_the_context_window():
    model, params = _model()
    out = generate(model, params, np.asarray([1, 2], np.int32), MAX_LEN + 4, jax.random.key(0), temperature=1.0,
                   top_k=5)
    assert out.shape == (MAX_LEN + 4,) and out.min() >= 0 and out.max() < VOCAB


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = jax.random.normal(jax.random.key(3), (4, VOCAB))
    greedy = choose(logits, jax.random.key(0), 0.0, 0, 1.0)
    np.testing.assert_array_equal(choose(logits, jax.random.key(5), 1.0, 1, 1.0), greedy)
    np.testing.assert_array_equal(choose(logits, jax.random.key(6), 1.0, 0, 1e-6), greedy)
    sampled = np.stack([choose(logits, jax.random.key(i), 1.0, 3, 1.0) for i in range(20)])  # (20, 4)
    top3 = np.argsort(-np.asarray(logits), -1)[:, :3]  # (4, 3)
    assert all(s in top3[row] for draw in sampled for row, s in enumerate(draw))


def test_sample_errors_are_one_line_user_errors(tmp_path):
    import jtrain

    with pytest.raises(jtrain.UserError, match="config.json: not found"):
        jtrain.sample(str(tmp_path), "ROMEO.")
    with pytest.raises(jtrain.UserError, match="max_tokens"):
        jtrain.sample(str(tmp_path), "ROMEO.", max_tokens=0)
