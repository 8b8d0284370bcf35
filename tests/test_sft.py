"""SFT building blocks: response-only loss (a gradient test) and packing whose attention never crosses examples."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jtrain import losses
from jtrain.data import sft, tokenize
from jtrain.errors import DataError
from jtrain.models.decoder import Decoder
from jtrain.state import init_state
from jtrain.step import make_train_step

T = 24
TOKENIZER = tokenize.CharTokenizer("abcdefghijklmnopqrstuvwxyz .,?")
PAIRS = [("to be", " or not"), ("fair", " is foul"), ("what light", " breaks?")]


def _decoder(position: str, scan_layers: bool = False) -> tuple[Decoder, dict]:
    model = Decoder(vocab_size=TOKENIZER.vocab_size, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_len=T,
                    position=position, scan_layers=scan_layers)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32), train=False))["params"]
    return model, params


def test_pack_masks_prompts_and_numbers_segments():
    packed = sft.pack([sft.example_tokens(TOKENIZER, p, r) for p, r in PAIRS], T)
    assert packed["inputs"].shape[1] == T and len(packed["inputs"]) == 2  # 12 + 12 positions fill a row, 18 the next
    for row in range(len(packed["inputs"])):
        for seg in set(packed["segment_ids"][row]) - {0}:
            learned = packed["targets"][row][(packed["segment_ids"][row] == seg) & (packed["mask"][row] > 0)]
            assert TOKENIZER.decode(learned) in {r + "\n" for _, r in PAIRS}  # exactly the response + end token
    assert packed["mask"][packed["segment_ids"] == 0].sum() == 0  # padding never counts


@pytest.mark.parametrize("position,scan_layers", [("learned", False), ("rotary", True)])
def test_packed_examples_never_attend_across_boundaries(position, scan_layers):
    model, params = _decoder(position, scan_layers)
    packed = sft.pack([sft.example_tokens(TOKENIZER, p, r) for p, r in PAIRS[:2]], T)
    row, segments = packed["inputs"][:1], packed["segment_ids"][:1]  # (1, T): two examples side by side
    forward = jax.jit(lambda x, s=None: model.apply({"params": params}, x, train=False, segment_ids=s))
    together = forward(row, segments)  # (1, T, V)
    for seg in (1, 2):
        where = np.flatnonzero(segments[0] == seg)
        alone = forward(row[:, where])  # the example on its own, from position 0
        np.testing.assert_allclose(together[0, where], alone[0], atol=1e-5)


def test_prompt_tokens_get_no_gradient():
    """Changing what the prompt positions would have to predict changes neither the loss nor any gradient."""
    model = Decoder(vocab_size=TOKENIZER.vocab_size, num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64, max_len=T)
    tx = optax.sgd(0.1)
    loss_fn, task = losses.build(ml_collections.ConfigDict({"name": "masked_sequence_cross_entropy",
                                                            "label_smoothing": 0.0, "task": ""}))
    step = jax.jit(make_train_step(model, tx, loss_fn, task, optax.constant_schedule(0.1)))
    state = init_state(model, tx, jax.random.key(0), jnp.zeros((1, T), jnp.int32))
    packed = sft.pack([sft.example_tokens(TOKENIZER, p, r) for p, r in PAIRS], T)
    scrambled = dict(packed, targets=np.where(packed["mask"] > 0, packed["targets"], 7).astype(np.int32))
    new_a, metrics_a = step(state, packed)
    new_b, metrics_b = step(state, scrambled)
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    for a, b in zip(jax.tree.leaves(new_a.params), jax.tree.leaves(new_b.params)):
        np.testing.assert_array_equal(a, b)
    # ... while changing a response target does change the update.
    flipped = dict(packed, targets=np.where(packed["mask"] > 0, 7, packed["targets"]).astype(np.int32))
    new_c, _ = step(state, flipped)
    assert any(not np.array_equal(a, c) for a, c in zip(jax.tree.leaves(new_a.params), jax.tree.leaves(new_c.params)))


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2: needs string field\(s\) response"):
        sft.read_jsonl(str(path))
