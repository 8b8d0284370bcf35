"""The Flax BERT encoder: the Hugging Face name table both ways, export -> import round trip, padding, the registry."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jtrain import config as config_lib
from jtrain import models, pretrained
from jtrain.models import bert
from jtrain.policy import param_paths


def tiny_config(pooling: str = "pooler"):
    c = config_lib.default_config()
    c.model.name = "bert"
    c.model.vocab_size, c.model.num_layers, c.model.num_heads = 50, 2, 2
    c.model.embed_dim, c.model.mlp_dim, c.model.max_len = 16, 32, 12
    c.model.pooling, c.model.dropout = pooling, 0.0
    return c


@pytest.fixture(scope="module")
def tiny():
    """(config, model, params from seed 0, params from seed 1): one compiled init for the whole module."""
    c = tiny_config("pooler")
    model = models.build(c.model, 3)
    init = jax.jit(lambda key: nn.meta.unbox(model.init(key, jnp.zeros((1, 8)), train=False))["params"])
    return c, model, init(jax.random.key(0)), init(jax.random.key(1))


def init_section(path: str, **fields):
    init = config_lib.default_config().init
    with init.unlocked():
        init.pretrained = path
        for k, v in fields.items():
            init[k] = v
    return init


def test_every_parameter_has_one_hf_name_and_back(tiny):
    _, _, params, _ = tiny
    for path in param_paths(params):
        hf_name, kind = bert.path_to_hf(path)
        assert bert.hf_to_path(hf_name) == (path, kind)
        prefixed, _ = bert.path_to_hf(path, with_prefix=True)
        assert bert.hf_to_path(prefixed) == (path, kind)  # BertForSequenceClassification's "bert." names


def test_export_import_export_is_bitwise_identical(tiny, tmp_path):
    c, _, params, fresh = tiny  # fresh: other values everywhere, so every leaf must come from the file
    first = bert.export_hf(params, c.model, str(tmp_path / "first"))
    loaded, report = pretrained.load(init_section(first, format="hf"), {"params": fresh}, log=False)
    assert not report.problems() and len(report.loaded) == len(param_paths(params))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, loaded["params"])
    second = bert.export_hf(loaded["params"], c.model, str(tmp_path / "second"))
    a, b = load_file(os.path.join(first, "model.safetensors")), load_file(os.path.join(second, "model.safetensors"))
    assert sorted(a) == sorted(b) and "bert.encoder.layer.1.output.dense.weight" in a and "classifier.weight" in a
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name
    config = json.load(open(os.path.join(first, "config.json")))
    assert config == json.load(open(os.path.join(second, "config.json")))
    assert bert.model_config_from_hf(first)["num_layers"] == 2 and config["num_labels"] == 3
    # The torch layout: Linear weights are (out, in).
    assert a["bert.encoder.layer.0.intermediate.dense.weight"].shape == (32, 16)


def test_padding_does_not_change_real_tokens_or_the_mean(tiny):
    _, model, params, _ = tiny
    short = jnp.asarray([[5, 6, 7, 8]], jnp.int32)
    padded = jnp.asarray([[5, 6, 7, 8, 0, 0, 0]], jnp.int32)
    encode = jax.jit(lambda p, x: model.encoder.apply({"params": p}, x))
    out_s, out_p = encode(params["encoder"], short), encode(params["encoder"], padded)
    np.testing.assert_allclose(out_s["hidden"], out_p["hidden"][:, :4], atol=1e-5)
    np.testing.assert_allclose(bert.mean_pool(out_s["hidden"], out_s["mask"]),
                               bert.mean_pool(out_p["hidden"], out_p["mask"]), atol=1e-5)
    # jtrain's pipelines feed tokens as float32: the classifier takes them (shapes only, nothing to compile)
    logits = jax.eval_shape(lambda: model.apply({"params": params}, padded.astype(jnp.float32), train=False))
    assert logits.shape == (1, 3)


def test_bad_model_config_is_one_line():
    c = tiny_config()
    c.model.pooling = "max"
    with pytest.raises(config_lib.ConfigError, match="model.pooling"):
        models.build(c.model, 2)
