"""Validation metrics of a language model are exact over the split: every target token once, token-weighted,
the same whatever the eval batch size; bits and perplexity follow from the nats."""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
import pytest

from jtrain import components, config as config_lib
from jtrain.data import registry
from jtrain.evaluate import evaluate_split


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tfds_lm_eval"))
    registry.prepare("shakespeare_char", path)
    return path


def _config(data_dir: str, eval_batch_size: int):
    c = config_lib.load_experiment("experiments/shakespeare_char_gpt.py")
    config_lib.apply_overrides(c, [
        f"data.dir={data_dir}", "data.seq_len=64", "model.max_len=64", "data.batch_size=8",
        f"data.eval_batch_size={eval_batch_size}", "model.num_layers=1", "model.embed_dim=32", "model.mlp_dim=64",
        "model.num_heads=2", "data.splits.val=val[:1]", "data.splits.test=none", "train.steps=1"])
    return c


def test_lm_eval_is_exact_and_independent_of_batching(text_dir):
    run = components.build(_config(text_dir, 64))
    state = run.init()
    report = evaluate_split(run, state, "val")
    source = run.data.eval_sources["val"]
    assert report["num_tokens"] == source.num_targets  # every target token of the play, once

    # Direct: the per-token loss over every row, summed and divided by the number of tokens.
    forward = jax.jit(lambda p, x: run.model.apply({"params": p}, x, train=False))
    total = 0.0
    for start in range(0, len(source), 512):
        rows = source.rows(np.arange(start, min(start + 512, len(source))))
        per_token = optax.softmax_cross_entropy_with_integer_labels(forward(state.params, rows["inputs"]),
                                                                    rows["targets"])  # (n, T)
        total += float((np.asarray(per_token, np.float64) * rows["mask"]).sum())
    assert report["loss"] == pytest.approx(total / source.num_targets, rel=1e-5)
    assert report["bits_per_char"] == pytest.approx(report["loss"] / math.log(2), rel=1e-6)  # one char per token
    assert report["perplexity"] == pytest.approx(math.exp(report["loss"]), rel=1e-6)

    other = evaluate_split(components.build(_config(text_dir, 48)), state, "val")
    assert other["loss"] == pytest.approx(report["loss"], rel=1e-6)
