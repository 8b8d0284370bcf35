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
from jtrain.methods import supervised
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
    step = jax.jit(make_train_step(model, tx, supervised.method(loss_fn, task), optax.constant_schedule(0.1)))
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


# ---------------------------------------------------------------------------------------------- as a dataset

PLAY = """THE TRAGEDY OF NOBODY

Laer.
My necessaries are embark'd: farewell:
And, sister, as the winds give benefit
[Aside.]
And convoy is assistant, do not sleep,

Oph.
Do you doubt that?

First Witch.
When shall we three meet again
In thunder, lightning, or in rain?
"""


def test_line_pairs_stay_inside_a_speech_without_names_or_directions():
    assert sft.line_pairs(PLAY) == [
        ("My necessaries are embark'd: farewell:", "And, sister, as the winds give benefit"),
        ("And, sister, as the winds give benefit", "And convoy is assistant, do not sleep,"),
        ("When shall we three meet again", "In thunder, lightning, or in rain?"),
    ]


def _config(**data) -> ml_collections.ConfigDict:
    from jtrain import config as config_lib

    c = config_lib.default_config()
    for key, value in data.items():
        config_lib.set_value(c, f"data.{key}", value)
    return c.data


def test_jsonl_roles_and_evenly_spaced_heldout_examples(tmp_path):
    from jtrain.data import registry

    for role, n in (("train", 10), ("val", 7)):
        lines = [json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) for i in range(n)]
        (tmp_path / f"{role}.jsonl").write_text("\n".join(lines) + "\n")
    config = _config(**{"jsonl.train": str(tmp_path / "train.jsonl"), "jsonl.val": str(tmp_path / "val.jsonl"),
                        "eval_examples": 3})
    records, files = sft.role_records(config, registry.get_spec("shakespeare_sft"), ("prompt", "response"),
                                      builtin=lambda split: pytest.fail("JSONL replaces the builtin pairs"))
    assert set(records) == {"train", "val"} and files["val"].endswith("val.jsonl")  # no test file: no test role
    assert len(records["train"]) == 10  # training keeps everything
    assert [r["prompt"] for _, r in records["val"]] == ["p0", "p3", "p6"]
    assert records["val"][1][0].endswith("val.jsonl:4")  # where: file and line, for later errors


def test_builtin_preference_pairs_reject_a_line_from_another_play(monkeypatch):
    from jtrain.data import preference, registry

    plays = [[(f"w{w} pair {i}", {"prompt": f"w{w} line {i}\n", "response": f"w{w} next {i}" + "!" * (i % 5)})
              for i in range(40)] for w in range(3)]
    monkeypatch.setattr(sft, "builtin_records", lambda spec, split, configured_dir: plays)
    spec = registry.get_spec("shakespeare_pref")
    pairs = preference.builtin_pairs(spec, "val", "")
    assert len(pairs) == 120 and pairs == preference.builtin_pairs(spec, "val", "")  # fixed seed: the same pairs
    for where, record in pairs:
        play = record["prompt"][:2]
        assert record["chosen"].startswith(play) and not record["rejected"].startswith(play)
    gaps = [abs(len(r["chosen"]) - len(r["rejected"])) for _, r in pairs]
    assert np.mean(gaps) < 0.5  # the closest of 8 candidates in length: almost always the same length


def test_sft_train_iterator_resumes_exactly_from_its_saved_state():
    from jtrain.data import registry

    examples = [sft.example_tokens(TOKENIZER, p, r) for p, r in PAIRS * 8]
    rows = sft.PackedRows(sft.pack(examples, T))
    config = _config(batch_size=4, prefetch=0, seq_len=T)
    data = sft.dataset(registry.get_spec("shakespeare_sft"), config, TOKENIZER, {"train": "mine"}, {"train": rows}, {})
    it = iter(data.train_dataset(config, seed=3))
    for _ in range(5):  # into the second epoch (16 rows, 4 per batch): the state holds the reshuffle too
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]
    resumed = iter(data.train_dataset(config, seed=3))
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        assert set(got) == {"inputs", "targets", "mask", "segment_ids"}
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
