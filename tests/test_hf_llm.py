"""Hugging Face causal LMs (llama, qwen2, qwen3, mistral, gemma, gpt2) imported into jtrain's decoder reproduce transformers.

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
TYPES = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gpt2")


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


def flat(params) -> dict[str, np.ndarray]:
    return {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.parametrize("model_type", ("llama", "gemma", "gpt2"))
def test_scanned_layers_load_the_same_weights_stacked(model_type):
    directory = os.path.join(FIXTURES, model_type)
    c, _, params, _ = imported(directory)
    _, _, stacked, report = imported(directory, scan_layers=True)
    assert any(p.startswith("layers/") for p in report.loaded)
    one, scanned = flat(params), flat(stacked)
    for path, value in scanned.items():
        if path.startswith("layers/"):
            rest = path[len("layers/"):]
            want = np.stack([one[f"block_{i}/{rest}"] for i in range(c.model.num_layers)])
            np.testing.assert_array_equal(value, want)
        else:
            np.testing.assert_array_equal(value, one[path])


@pytest.mark.parametrize("model_type", TYPES)
def test_export_writes_the_checkpoints_tensors_and_import_export_import_is_bitwise(model_type, tmp_path):
    from safetensors import safe_open

    directory = os.path.join(FIXTURES, model_type)
    c, _, params, _ = imported(directory)
    models.family("decoder").hf.export(params, c.model, str(tmp_path))
    exported = {}
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
        exported = {n: f.get_tensor(n) for n in f.keys()}
    original = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(directory, name), framework="numpy") as f:
                original.update({n: f.get_tensor(n) for n in f.keys()})
    skip = {"lm_head.weight"} if c.model.tie_embeddings else set()
    assert set(exported) == set(original) - skip
    for name, value in exported.items():  # the same names, shapes and values (bfloat16 ones widened exactly)
        np.testing.assert_array_equal(value, original[name].astype(np.float32), err_msg=name)
    hf = json.loads((tmp_path / "config.json").read_text())
    again, _, params2, _ = imported(str(tmp_path))
    assert {k: again.model[k] for k in hf_fields(again)} == {k: c.model[k] for k in hf_fields(c)}
    one, two = flat(params), flat(params2)
    assert one.keys() == two.keys()
    for path in one:
        assert one[path].dtype == two[path].dtype and np.array_equal(one[path], two[path]), path


def test_an_export_above_the_shard_size_is_sharded_with_an_index_and_imports_bitwise(tmp_path):
    c, _, params, _ = imported(os.path.join(FIXTURES, "llama"))
    models.family("decoder").hf.export(params, c.model, str(tmp_path), 20_000)  # bytes: several shards
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (tmp_path / "model.safetensors").exists()
    sizes = [os.path.getsize(tmp_path / f) for f in files]
    assert sum(sizes) >= index["metadata"]["total_size"] and max(sizes) < 20_000 + 16_000  # one tensor may overflow
    _, _, params2, _ = imported(str(tmp_path))
    one, two = flat(params), flat(params2)
    assert one.keys() == two.keys() and all(np.array_equal(one[p], two[p]) for p in one)


def test_a_bad_shard_size_is_one_line_naming_the_flag():
    from jtrain.errors import UserError
    from jtrain.export import parse_size

    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size(1000) == 1000
    for bad in ("5XB", "", "0", "-1GB"):
        with pytest.raises(UserError, match=r"--max_shard_size"):
            parse_size(bad)


def hf_fields(c) -> list[str]:
    return ["vocab_size", "num_layers", "num_heads", "embed_dim", "mlp_dim", "max_len", "position", "norm",
            "norm_eps", "mlp", "num_kv_heads", "head_dim", "rope_theta", "rope_scaling", "bias", "qkv_bias",
            "head_bias", "tie_embeddings", "qk_norm", "norm_unit_offset", "embed_scale"]


def test_dry_run_report_names_missing_and_unused_tensors(tmp_path):
    directory = tmp_path / "llama"
    shutil.copytree(os.path.join(FIXTURES, "llama"), directory)
    hf = json.loads((directory / "config.json").read_text())
    hf["num_hidden_layers"] = 3  # the model has a block the checkpoint lacks
    (directory / "config.json").write_text(json.dumps(hf))
    c = config_lib.default_config()
    config_lib.set_value(c, "init.pretrained", str(directory))
    c = pretrained.with_pretrained_model(c, log=False)
    net = models.build(c.model, 0)
    abstract = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), train=False))
    with pytest.raises(ConfigError, match=r"9 problems.*missing in checkpoint: block_2/ln_attn/scale"):
        pretrained.load(c.init, {"params": abstract["params"]}, log=False)
    c.init.strict = False
    _, report = pretrained.load(c.init, {"params": abstract["params"]}, log=False)
    assert len(report.initialised) == 9 and report.unused == [] and len(report.loaded) == 3 + 2 * 9


def bad_checkpoint(tmp_path, fixture="llama", **changes):
    """A copy of a fixture whose config.json has `changes`."""
    directory = tmp_path / "ckpt"
    shutil.copytree(os.path.join(FIXTURES, fixture), directory)
    hf = json.loads((directory / "config.json").read_text())
    hf.update(changes)
    (directory / "config.json").write_text(json.dumps(hf))
    return str(directory)


@pytest.mark.parametrize("changes, message", [
    (dict(rope_parameters=dict(rope_type="yarn", factor=4.0, rope_theta=10000.0)), r"rope_parameters.rope_type is 'yarn'"),
    (dict(rope_parameters=None, rope_scaling=dict(type="dynamic", factor=2.0)), r"rope_scaling.rope_type is 'dynamic'"),
    (dict(sliding_window=16), r"sliding_window is 16"),
    (dict(num_local_experts=8), r"num_local_experts is 8 \(a mixture of experts\)"),
    (dict(hidden_act="gelu"), r"hidden_act is 'gelu'"),
])
def test_unsupported_config_json_features_are_one_line_naming_the_field(tmp_path, changes, message):
    c = config_lib.default_config()
    config_lib.set_value(c, "init.pretrained", bad_checkpoint(tmp_path, **changes))
    with pytest.raises(ConfigError, match=r"config\.json: " + message) as e:
        pretrained.with_pretrained_model(c, log=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("changes, message", [
    (dict(final_logit_softcapping=30.0), r"final_logit_softcapping is 30.0 \(capped logits\)"),
    (dict(hidden_act="silu"), r"hidden_act is 'silu' \(gemma's gated MLP here uses 'gelu_pytorch_tanh'\)"),
    (dict(use_bidirectional_attention=True), r"use_bidirectional_attention is true"),
])
def test_gemma_features_the_decoder_lacks_are_one_line_naming_the_field(tmp_path, changes, message):
    c = config_lib.default_config()
    config_lib.set_value(c, "init.pretrained", bad_checkpoint(tmp_path, "gemma", **changes))
    with pytest.raises(ConfigError, match=r"config\.json: " + message):
        pretrained.with_pretrained_model(c, log=False)


def test_a_missing_shard_is_named(tmp_path):
    directory = bad_checkpoint(tmp_path, "mistral")
    os.remove(os.path.join(directory, "model-00002-of-00002.safetensors"))
    with pytest.raises(ConfigError, match=r"shard model-00002-of-00002.safetensors is missing"):
        pretrained.open_source(directory)


def test_an_unsupported_model_type_is_one_line_naming_the_supported_ones_exit_2(tmp_path):
    directory = bad_checkpoint(tmp_path, model_type="mixtral")
    result = run_jtrain(["finetune", "--config", "experiments/shakespeare_char_sft.py", "--pretrained", directory,
                         "--workdir", str(tmp_path / "run")], str(tmp_path / "data"), timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model_type 'mixtral'" in lines[0]
    for supported in ("'bert'", "'llama'", "'qwen2'", "'qwen3'", "'mistral'", "'gemma'", "'gpt2'"):
        assert supported in lines[0]


def test_an_fsdp_load_on_8_devices_holds_one_tensor_at_a_time_never_the_model(tmp_path):
    """tests/hf_memory_harness.py: a 91 MB checkpoint onto 8 fake devices. On CPU the devices' arrays live in host
    memory too, so what is bounded is what the loader adds: while it reads a tensor, about that tensor's size
    (its 8 shards' blocks, freed once on the devices), and at its peak well below the model."""
    import subprocess
    import sys

    from _cli import REPO_ROOT

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests", "hf_memory_harness.py"),
                             str(tmp_path / "ckpt")], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["peak"] < 0.6 * measured["model_bytes"], measured["peak"]
    for name, (added, size) in measured["added"].items():
        assert added <= 1.25 * size + 64 * 1024, (name, added, size)
