"""LoRA: the adapted model starts as the base model, training with the backbone frozen changes only the adapters
and the head, and the merged export computes what the adapted model computes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrain import config as config_lib
from jtrain import lora, models, optim, pretrained
from jtrain.errors import ConfigError
from jtrain.losses import softmax_cross_entropy
from jtrain.models import bert
from jtrain.policy import param_paths
from jtrain.state import init_state
from jtrain.methods import supervised
from jtrain.step import make_train_step


def tiny_config(rank: int = 2):
    c = config_lib.default_config()
    c.model.name = "bert"
    c.model.vocab_size, c.model.num_layers, c.model.num_heads = 40, 2, 2
    c.model.embed_dim, c.model.mlp_dim, c.model.max_len, c.model.dropout = 16, 32, 8, 0.0
    c.model.lora_rank, c.model.lora_alpha = rank, 4.0
    c.model.lora_targets = r"encoder/layer_\d+/(query|value)/kernel"
    return c


TOKENS = jnp.asarray([[3, 7, 9, 2, 0, 0], [5, 6, 1, 8, 4, 2]], jnp.float32)  # (B, T), 0 = padding


def test_adapters_start_at_zero_and_train_alone_with_the_backbone_frozen(tmp_path):
    c = tiny_config()
    model = models.build(c.model, 3)
    base = models.build(tiny_config(rank=0).model, 3)
    c.optim.policy = ("(?!lora/|head/).*=frozen",)
    c.optim.learning_rate = 1e-2
    tx, schedule = optim.build(c.optim, c.schedule, 10)
    state = jax.jit(lambda: init_state(model, tx, jax.random.key(0), TOKENS))()
    assert "lora/encoder/layer_1/value/kernel/b" in param_paths(state.params)
    # B = 0: the adapted model is the base model.
    run_base = jax.jit(lambda params: base.apply({"params": params}, TOKENS, train=False))
    run_adapted = jax.jit(lambda params: model.apply({"params": params}, TOKENS, train=False))
    base_params = {k: v for k, v in state.params.items() if k != "lora"}
    np.testing.assert_array_equal(run_adapted(state.params), run_base(base_params))

    step = jax.jit(make_train_step(model, tx, supervised.method(softmax_cross_entropy(), "classification"), schedule))
    trained = state
    for _ in range(3):
        trained, _ = step(trained, {"inputs": TOKENS, "targets": jnp.asarray([0, 2])})
    changed = {p for p, a, b in zip(param_paths(state.params), jax.tree.leaves(state.params),
                                    jax.tree.leaves(trained.params)) if not np.array_equal(a, b)}
    assert changed and all(p.startswith(("lora/", "head/")) for p in changed), changed
    assert "lora/encoder/layer_0/query/kernel/b" in changed

    # Merged weights: a plain BERT computing the adapted model's outputs, exported in the Hugging Face layout.
    merged = lora.merge(trained.params, c.model.lora_rank, c.model.lora_alpha)
    adapted = run_adapted(trained.params)
    np.testing.assert_allclose(run_base(merged), adapted, atol=1e-6)
    out = bert.export_hf(merged, c.model, str(tmp_path / "merged"))
    init = c.init
    init.pretrained = out
    loaded, report = pretrained.load(init, {"params": jax.tree.map(jnp.zeros_like, merged)}, log=False)
    assert report.problems() == []
    np.testing.assert_allclose(run_base(loaded["params"]), adapted, atol=1e-6)


def test_strict_loading_never_reports_new_adapters_as_missing(tmp_path):
    """A base checkpoint into an adapted model: the adapters are new by construction, not a problem; a base
    parameter the checkpoint lacks still is."""
    base = models.build(tiny_config(rank=0).model, 3)
    params = nn.unbox(jax.jit(lambda: base.init(jax.random.key(0), TOKENS, train=False))()["params"])
    c = tiny_config()
    out = bert.export_hf(params, c.model, str(tmp_path / "base"))
    model = models.build(c.model, 3)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(1), TOKENS, train=False))
    c.init.pretrained = out
    loaded, report = pretrained.load(c.init, {"params": abstract["params"]}, log=False)  # strict by default
    assert report.problems() == [] and len(report.adapters()) == 8  # 2 layers x (query, value) x (a, b)
    assert "4 newly initialised" not in report.format_text() and "8 LoRA adapters" in report.format_text()
    base_loaded = {k: v for k, v in nn.unbox(loaded["params"]).items() if k != "lora"}
    assert jax.tree.all(jax.tree.map(np.array_equal, base_loaded, params))  # every base weight came from it
    c.model.num_layers = 3  # a block the checkpoint lacks: still refused, naming it
    model = models.build(c.model, 3)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(1), TOKENS, train=False))
    with pytest.raises(ConfigError, match=r"missing in checkpoint: encoder/layer_2/") as e:
        pretrained.load(c.init, {"params": abstract["params"]}, log=False)
    assert "missing in checkpoint: lora/" not in str(e.value)


def test_targets_that_match_nothing_are_one_line_errors():
    c = tiny_config()
    c.model.lora_targets = "nothing/.*"
    with pytest.raises(ConfigError, match="model.lora_targets"):
        jax.eval_shape(lambda: models.build(c.model, 3).init({"params": jax.random.key(0)}, TOKENS, train=False))


@pytest.mark.parametrize("name, targets, head", [("user_models:tiny_mlp", "body/kernel", "out/"),
                                                 ("nnx_models:small_cnn", "head/kernel", None)])
def test_adapters_wrap_a_users_factory_model(name, targets, head):
    """model.name = "package.module:factory" (Linen, or NNX through nnx_model) gets adapters like a built-in."""
    c = config_lib.default_config()
    c.model.name, c.model.lora_rank, c.model.lora_alpha, c.model.lora_targets = name, 2, 4.0, targets
    model = models.build(c.model, 3)
    assert isinstance(model, lora.LoRA)
    images = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    c.optim.policy = (f"(?!lora/{'|' + head if head else ''}).*=frozen",)
    c.optim.learning_rate = 1e-2
    tx, schedule = optim.build(c.optim, c.schedule, 10)
    state = jax.jit(lambda: init_state(model, tx, jax.random.key(0), images))()
    assert f"lora/{targets}/a" in param_paths(state.params) and f"lora/{targets}/b" in param_paths(state.params)

    step = jax.jit(make_train_step(model, tx, supervised.method(softmax_cross_entropy(), "classification"), schedule))
    trained = state
    for _ in range(3):
        trained, _ = step(trained, {"inputs": images, "targets": jnp.asarray([0, 2, 1, 0])})
    changed = {p for p, a, b in zip(param_paths(state.params), jax.tree.leaves(state.params),
                                    jax.tree.leaves(trained.params)) if not np.array_equal(a, b)}
    assert f"lora/{targets}/b" in changed
    assert all(p.startswith("lora/") or (head and p.startswith(head)) for p in changed), changed

    # The merged tree is the user's own model's parameters, computing what the adapted model computes.
    base = models.build(_without_lora(c.model), 3)
    merged = lora.merge(trained.params, c.model.lora_rank, c.model.lora_alpha)
    variables = {"params": merged, **trained.model_state}
    adapted = model.apply({"params": trained.params, **trained.model_state}, images, train=False)
    np.testing.assert_allclose(base.apply(variables, images, train=False), adapted, atol=1e-5)


def _without_lora(model_config):
    out = model_config.copy_and_resolve_references()
    out.lora_rank = 0
    return out


def test_adapters_on_the_decoders_3d_attention_kernels_merge_into_an_exact_export(tmp_path):
    """An imported Llama with adapters on query / value (E, H, D): it starts as the base model, and after a change
    of the adapters the merged export computes what the adapted model computes."""
    import os

    from jtrain.models import decoder_hf

    c = config_lib.default_config()
    c.init.pretrained = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf_llm", "llama")
    c = pretrained.with_pretrained_model(c, log=False)
    c.model.lora_rank, c.model.lora_alpha = 4, 8.0
    c.model.lora_targets = r"block_\d+/(query|value)/kernel"
    model = models.build(c.model, 0)
    tokens = jnp.asarray([[5, 9, 2, 33, 7, 1]], jnp.int32)
    variables = jax.jit(lambda: model.init(jax.random.key(0), tokens, train=False))()
    params = nn.unbox(variables["params"])
    assert params["lora"]["block_0"]["query"]["kernel"]["b"].shape == (4, 4, 8)  # (r, H, D)
    loaded, report = pretrained.load(c.init, {"params": variables["params"]}, log=False)
    assert report.problems() == [] and len(report.adapters()) == 8
    params = nn.unbox(loaded["params"])
    base_config = c.model.copy_and_resolve_references()
    base_config.lora_rank = 0
    base = models.build(base_config, 0)
    run = lambda m, p: m.apply({"params": p}, tokens, train=False)
    base_params = {k: v for k, v in params.items() if k != "lora"}
    np.testing.assert_array_equal(run(model, params), run(base, base_params))  # B = 0: the base model
    params = jax.tree.map(lambda x: x + 0.05, params)  # adapters (and weights) moved
    merged = lora.merge(params, 4, 8.0)
    np.testing.assert_allclose(run(base, merged), run(model, params), atol=1e-5)
    decoder_hf.export(merged, c.model, str(tmp_path / "hf"))
    c2 = config_lib.default_config()
    c2.init.pretrained = str(tmp_path / "hf")
    reloaded, _ = pretrained.load(c2.init, {"params": jax.tree.map(jnp.zeros_like, merged)}, log=False)
    np.testing.assert_allclose(run(base, reloaded["params"]), run(model, params), atol=1e-5)
