"""Text data: the Shakespeare builder (split by play), tokenizers saved beside the dataset, packing without
padding, exact eval coverage, and a checkpointable training iterator."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jtrain import config as config_lib
from jtrain import data as data_lib
from jtrain.data import registry, tokenize
from jtrain.data.text import PackedTokens


@pytest.fixture(scope="session")
def text_data_dir(tmp_path_factory) -> str:
    """Shakespeare prepared once for the session (about a second)."""
    path = str(tmp_path_factory.mktemp("tfds_text"))
    registry.prepare("shakespeare_char", path)
    return path


def _data_config(data_dir: str, **overrides):
    c = config_lib.default_config()
    c.data.name = "shakespeare_char"
    c.data.dir = data_dir
    c.data.seq_len = 32
    c.data.batch_size = 8
    c.data.prefetch = 0
    for k, v in overrides.items():
        setattr(c.data, k, v)
    return c.data


def test_packing_uses_every_token_once_without_padding():
    stream = np.arange(1, 24, dtype=np.int32)  # 23 tokens -> 22 targets
    train, full = PackedTokens(stream, 5), PackedTokens(stream, 5, padded=True)
    assert len(train) == 4 and len(full) == 5  # 22 // 5 full rows; the partial fifth only in evaluation
    rows = train.rows(np.arange(len(train)))
    assert rows["mask"].min() == 1.0  # training rows carry no padding
    np.testing.assert_array_equal(rows["targets"][:, :-1], rows["inputs"][:, 1:])  # next token
    np.testing.assert_array_equal(rows["inputs"][1, 0], rows["targets"][0, -1])  # rows overlap by one token
    every = full.rows(np.arange(len(full)))
    assert every["mask"].sum() == 22
    np.testing.assert_array_equal(every["targets"][every["mask"] > 0], stream[1:])  # each target exactly once


def test_builder_splits_by_play_and_tokenizer_sits_beside_the_dataset(text_data_dir):
    works = {role: {int(r["work"]) for r in registry.data_source("shakespeare_char", role, text_data_dir)}
             for role in ("train", "val", "test")}
    assert len(works["val"]) == 3 and len(works["test"]) == 3 and len(works["train"]) > 30
    assert not (works["train"] & works["val"] or works["train"] & works["test"] or works["val"] & works["test"])

    data = data_lib.load(_data_config(text_data_dir))
    dataset_dir = registry.prepare("shakespeare_char", text_data_dir)
    assert os.path.isfile(tokenize.path_for(dataset_dir, "char"))
    tok = data.tokenizer
    assert data.spec.num_classes == tok.vocab_size == len(tok.chars) + 1 < 120
    text = "Shall I compare thee to a summer's day?"
    assert tok.decode(tok.encode(text)) == text
    assert data.target_chars["val"] == data.eval_sources["val"].num_targets  # one character per token


def test_bpe_tokenizer_round_trips_and_reloads(tmp_path):
    texts = ["To be, or not to be, that is the question:\n", "Whether 'tis nobler in the mind to suffer\n"] * 20
    tok = tokenize.load_or_train(str(tmp_path), "bpe", texts, texts)
    again = tokenize.load(str(tmp_path), "bpe")
    ids = again.encode(texts[0])
    assert tok.vocab_size == again.vocab_size and len(ids) < len(texts[0])  # merges happened
    assert again.decode(ids) == texts[0]
    stream = again.encode_documents(texts[:2])
    assert (stream == 0).sum() == 2 and stream[-1] == 0  # end-of-document token after each


def test_text_batches_and_exact_eval_coverage(text_data_dir):
    config = _data_config(text_data_dir, eval_batch_size=64)
    data = data_lib.load(config)
    batch = next(iter(data.train_dataset(config, seed=0)))
    assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
        "inputs": ((8, 32), "int32"), "targets": ((8, 32), "int32"), "mask": ((8, 32), "float32")}
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
    assert batch["mask"].all()

    batches = list(data.eval_batches("val", config))
    assert sum(b["mask"].sum() for b in batches) == data.eval_sources["val"].num_targets
    assert all(b["inputs"].shape == (64, 32) for b in batches)


def test_text_iterator_state_resumes_exactly(text_data_dir):
    config = _data_config(text_data_dir)
    data = data_lib.load(config)
    it = iter(data.train_dataset(config, seed=3))
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it)["inputs"] for _ in range(3)]
    resumed = iter(data.train_dataset(config, seed=3))
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["inputs"], want)
