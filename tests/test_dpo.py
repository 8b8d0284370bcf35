"""DPO: the loss of a toy pair against a hand computation, the frozen reference, and a short run from a small
pretrained decoder that raises held-out preference accuracy."""

from __future__ import annotations

import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jtrain import config as config_lib, losses, methods
from jtrain.data import preference, sft, tokenize
from jtrain.errors import ConfigError
from jtrain.methods import dpo, supervised
from jtrain.models.decoder import Decoder
from jtrain.state import init_state
from jtrain.step import make_eval_step, make_train_step

TOKENIZER = tokenize.CharTokenizer("ab")  # ids: 0 = end of document, 1 = 'a', 2 = 'b'


class Bigram(nn.Module):
    """p(next token | this token) = softmax(table[this token]): log-probabilities one can work out by hand."""

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        table = self.param("table", nn.initializers.zeros, (3, 3))
        return table[tokens.astype(jnp.int32)]  # (B, T, 3)


def _table(rows) -> dict:
    return {"table": jnp.log(jnp.asarray(rows, jnp.float32))}  # log-probabilities are valid logits


# Rows: the distribution of the next token after <end>, 'a', 'b'; columns: <end>, 'a', 'b'.
POLICY = _table([[1 / 3, 1 / 3, 1 / 3], [0.2, 0.3, 0.5], [0.5, 0.25, 0.25]])
REFERENCE = _table([[1 / 3, 1 / 3, 1 / 3], [0.2, 0.4, 0.4], [0.4, 0.3, 0.3]])
BETA = 0.5


def _toy_batch(seq_len: int = 4) -> dict:
    """Prompt "a"; chosen "b", rejected "a" (each followed by the end token), padded to seq_len."""
    chosen = sft.example_tokens(TOKENIZER, "a", "b")  # a b <end>
    rejected = sft.example_tokens(TOKENIZER, "a", "a")  # a a <end>
    return {k: jnp.asarray(v) for k, v in preference.pair_rows([(chosen, rejected)], seq_len).items()}


def test_dpo_loss_of_a_toy_pair_equals_the_hand_computation():
    # Response tokens only: the first 'a' is the prompt, never scored.
    #   log p_policy(chosen)   = log p(b|a) + log p(end|b) = log 0.5 + log 0.5 = log 0.25
    #   log p_ref(chosen)      = log 0.4 + log 0.4          = log 0.16
    #   log p_policy(rejected) = log p(a|a) + log p(end|a) = log 0.3 + log 0.2 = log 0.06
    #   log p_ref(rejected)    = log 0.4 + log 0.2          = log 0.08
    # rewards: chosen 0.5 * log(0.25 / 0.16) = log 1.25; rejected 0.5 * log(0.06 / 0.08) = 0.5 * log 0.75
    # margin = log(1.25 / sqrt(0.75)); loss = -log sigmoid(margin) = log(1 + sqrt(0.75) / 1.25) = 0.52640
    chosen_reward, rejected_reward = math.log(1.25), 0.5 * math.log(0.75)
    margin = chosen_reward - rejected_reward
    expected_loss = math.log(1 + math.sqrt(0.75) / 1.25)
    assert expected_loss == pytest.approx(-math.log(1 / (1 + math.exp(-margin))), rel=1e-12)
    assert expected_loss == pytest.approx(0.526396, abs=1e-6)

    batch = _toy_batch()
    model = Bigram()
    policy = dpo.response_logps(model, {"params": POLICY}, batch)  # (1, 2)
    reference = dpo.response_logps(model, {"params": REFERENCE}, batch)
    np.testing.assert_allclose(policy[0], [math.log(0.25), math.log(0.06)], rtol=1e-6)
    np.testing.assert_allclose(reference[0], [math.log(0.16), math.log(0.08)], rtol=1e-6)
    loss, rewards = dpo.dpo_loss(BETA)(policy, reference)
    np.testing.assert_allclose(rewards[0], [chosen_reward, rejected_reward], rtol=1e-5)
    assert float(loss[0]) == pytest.approx(expected_loss, rel=1e-5)

    # The same through the train step and the eval step, with the method from the config's registry.
    config = config_lib.default_config()
    config_lib.apply_overrides(config, ["method.name=dpo", f"method.dpo.beta={BETA}"])
    method = methods.build(config)
    assert method.examples == "preference"
    tx = optax.sgd(0.1)
    state = dpo.DPOState(step=jnp.zeros((), jnp.int32), params=POLICY, opt_state=tx.init(POLICY), model_state={},
                         rng=jax.random.key(0), ref_params=REFERENCE)
    sums = jax.jit(make_eval_step(model, method))(state, batch)
    report = dpo.report(jax.device_get(sums))
    assert float(sums["loss_sum"]) == pytest.approx(expected_loss, rel=1e-5)
    assert report["reward_margin"] == pytest.approx(margin, rel=1e-5)
    assert report["reward_accuracy"] == 1.0 and report["preference_accuracy"] == 1.0  # 0.25 > 0.06
    new_state, metrics = jax.jit(make_train_step(model, tx, method, optax.constant_schedule(0.1)))(state, batch)
    assert float(metrics["loss"]) == pytest.approx(expected_loss, rel=1e-5)
    assert float(metrics["reward_margin"]) == pytest.approx(margin, rel=1e-5)
    assert float(metrics["chosen_reward"]) == pytest.approx(chosen_reward, rel=1e-5)
    assert float(metrics["rejected_reward"]) == pytest.approx(rejected_reward, rel=1e-5)
    # Only the policy learns: the reference is bitwise the same, and the chosen response became more likely.
    np.testing.assert_array_equal(new_state.ref_params["table"], REFERENCE["table"])
    assert not np.array_equal(new_state.params["table"], POLICY["table"])
    after = dpo.response_logps(model, {"params": new_state.params}, batch)
    assert float(after[0, 0] - after[0, 1]) > float(policy[0, 0] - policy[0, 1])


def test_padding_pairs_count_nothing_in_evaluation():
    batch = {k: jnp.concatenate([v, jnp.zeros_like(v)]) for k, v in _toy_batch().items()}  # + one padding pair
    state = dpo.DPOState(step=jnp.zeros((), jnp.int32), params=POLICY, opt_state=(), model_state={},
                         rng=jax.random.key(0), ref_params=REFERENCE)
    sums = make_eval_step(Bigram(), dpo.method(BETA))(state, batch)
    assert float(sums["count"]) == 1.0
    assert float(sums["loss_sum"]) == pytest.approx(math.log(1 + math.sqrt(0.75) / 1.25), rel=1e-5)


def _spec(name: str, examples: str):
    return types.SimpleNamespace(name=name, examples=examples, target_dtype="int32", num_classes=3)


def test_dpo_needs_preference_pairs_and_pairs_need_dpo():
    lm = supervised.method(losses.masked_sequence_cross_entropy(), "sequence", loss_name="masked_sequence_cross_entropy")
    with pytest.raises(ConfigError, match="method.name.*needs preference pairs"):
        dpo.method(BETA).check_data(_spec("shakespeare_sft", "sft"))
    with pytest.raises(ConfigError, match="method.name=dpo"):
        lm.check_data(_spec("shakespeare_pref", "preference"))
    dpo.method(BETA).check_data(_spec("shakespeare_pref", "preference"))


# ---------------------------------------------------------------------------------------------- a short run

LETTERS = "abcdefgh"
WORDS = tokenize.CharTokenizer(LETTERS + " ")
T = 16


def _strings(rng: np.random.Generator, n: int, alphabet: str, length: int = 5) -> list[str]:
    return ["".join(rng.choice(list(alphabet), length)) for _ in range(n)]


def _pairs(rng: np.random.Generator, n: int) -> dict:
    """Preferred responses use the first half of the alphabet, rejected ones the second; prompts use both."""
    prompts = [p + " " for p in _strings(rng, n, LETTERS)]
    chosen, rejected = _strings(rng, n, LETTERS[:4]), _strings(rng, n, LETTERS[4:])
    rows = [(sft.example_tokens(WORDS, p, c), sft.example_tokens(WORDS, p, r))
            for p, c, r in zip(prompts, chosen, rejected)]
    return preference.pair_rows(rows, T)


def test_short_dpo_run_from_a_pretrained_decoder_raises_heldout_preference_accuracy():
    rng = np.random.default_rng(0)
    model = Decoder(vocab_size=WORDS.vocab_size, num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64, max_len=T)
    tx = optax.adam(3e-3)

    # Pretraining: language modelling of prompt + response strings over the whole alphabet (no preference).
    lm_loss, task = losses.build(ml_collections.ConfigDict({"name": "masked_sequence_cross_entropy",
                                                           "label_smoothing": 0.0, "task": ""}))
    lm_method = supervised.method(lm_loss, task)
    lm_step = jax.jit(make_train_step(model, tx, lm_method, optax.constant_schedule(3e-3)))
    state = init_state(model, tx, jax.random.key(0), jnp.zeros((1, T), jnp.int32))
    for _ in range(30):
        prompts, responses = _strings(rng, 32, LETTERS), _strings(rng, 32, LETTERS)
        packed = sft.pack([sft.example_tokens(WORDS, p + " ", r) for p, r in zip(prompts, responses)], T)
        state, _ = lm_step(state, {k: v for k, v in packed.items() if k != "segment_ids"})

    # DPO from the pretrained params, which also become the frozen reference.
    dpo_state = dpo.with_reference(init_state(model, optax.adam(1e-3), jax.random.key(1), jnp.zeros((1, T), jnp.int32)))
    dpo_state = dpo.reset_reference(dpo_state.replace(params=state.params))
    method = dpo.method(0.1)
    train_step = jax.jit(make_train_step(model, optax.adam(1e-3), method, optax.constant_schedule(1e-3)))
    eval_step = jax.jit(make_eval_step(model, method))
    held_out = _pairs(np.random.default_rng(123), 256)

    def evaluate(s) -> dict:
        return dpo.report(jax.device_get(eval_step(s, held_out)))

    before = evaluate(dpo_state)
    assert before["reward_accuracy"] == 0.0  # policy = reference: every margin is exactly 0
    reference = jax.device_get(dpo_state.ref_params)
    for _ in range(40):
        dpo_state, metrics = train_step(dpo_state, _pairs(rng, 32))
    after = evaluate(dpo_state)
    assert after["preference_accuracy"] > max(before["preference_accuracy"] + 0.3, 0.9), (before, after)
    assert after["reward_accuracy"] > 0.9 and after["reward_margin"] > 0
    assert after["chosen_reward"] > 0 > after["rejected_reward"]
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(jax.device_get(dpo_state.ref_params))):
        np.testing.assert_array_equal(a, b)  # frozen


def test_reference_is_sharded_like_the_params():
    from jtrain import config as config_lib
    from jtrain import sharding

    model = Decoder(vocab_size=WORDS.vocab_size, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_len=T)
    sample = jnp.zeros((1, T), jnp.int32)
    tx = optax.adamw(1e-3)
    abstract = jax.eval_shape(lambda: dpo.with_reference(init_state(model, tx, jax.random.key(0), sample)))
    placements = sharding.plan_state(abstract, {"data": 1, "fsdp": 2, "tensor": 2},
                                     sharding.parse_rules(config_lib.default_config().mesh.rules),
                                     sharding.logical_axes(model, sample))
    specs = {p.path: p.spec for p in placements}
    params = [path for path in specs if path[0] == "params"]
    assert params and any(any(axis is not None for axis in specs[path]) for path in params)  # something is split
    for path in params:
        assert specs[("ref_params", *path[1:])] == specs[path], path
