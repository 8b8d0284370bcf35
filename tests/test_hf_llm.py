"""Hugging Face causal LMs (llama, qwen2, mistral, gpt2) imported into jtrain's decoder reproduce transformers.

The fixtures in tests/fixtures/hf_llm/ come from scripts/make_llm_reference.py (tiny random models made by
PyTorch `transformers`, their logits on padded prompts and their greedy generations); this test never imports
torch. Also: the dry-run report, scanned layers, export -> import bitwise, and one-line errors for checkpoints
jtrain cannot read.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrain import config as config_lib
from jtrain import models, pretrained
from jtrain.sample import generate
from jtrain.errors import ConfigError
from jtrain.policy import param_path

from _cli import run_jtrain

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf_llm")
TYPES = ("llama", "qwen2", "mistral", "gpt2")


def imported(directory: str, **model):
    """(config, model, params) of the decoder config.json describes, loaded from `directory` (strict)."""
    c = config_lib.default_config()
    config_lib.set_value(c, "init.pretrained", directory)
    for key, value in model.items():
        config_lib.set_value(c, f"model.{key}", value)
    c = pretrained.with_pretrained_model(c, log=False)
    net = models.build(c.model, 0)
    abstract = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), train=False))
    variables, report = pretrained.load(c.init, {"params": abstract["params"]}, log=False)
    assert report.problems() == [] and report.loaded
    return c, net, variables["params"], report


@pytest.mark.parametrize("model_type", TYPES)
def test_logits_and_greedy_generation_match_transformers(model_type):
    directory = os.path.join(FIXTURES, model_type)
    ref = np.load(os.path.join(directory, "reference.npz"))
    c, net, params, _ = imported(directory)
    assert c.model.name == "decoder" and c.model.vocab_size == ref["logits"].shape[-1]
    logits = np.asarray(jax.jit(lambda p, x: net.apply({"params": p}, x, train=False))(params, ref["input_ids"]))
    real = ref["attention_mask"].astype(bool)  # right padding: padded positions come after every real one
    np.testing.assert_allclose(logits[real], ref["logits"][real], atol=1e-4, rtol=0)
    for i in range(len(ref["input_ids"])):
        want = ref[f"generated_{i}"]
        got = generate(net, params, ref[f"prompt_{i}"], len(want), jax.random.key(0), temperature=0.0)
        np.testing.assert_array_equal(got, want)
