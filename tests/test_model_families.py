"""Model families own their extras: config fields (a user's model too), FLOPs, sampling, the HF name table."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrain import config as config_lib, models, pretrained
from jtrain.sample import load_run
from jtrain.errors import ConfigError, UserError

USER_MODEL = "user_models:wide_mlp"  # tests/user_models.py: declares config_fields {"width": 16}


def test_builtin_families_declare_their_fields_in_the_default_config():
    c = config_lib.default_config()
    for name, family in models.families().items():
        for key, default in family.fields.items():
            assert c.model[key] == default, (name, key)
    assert models.family("decoder").samples and not models.family("cnn").samples
    assert models.family("decoder").flops_per_token is not None and models.family("mlp").flops_per_token is None


def test_user_model_fields_from_overrides_reach_the_model_and_survive_config_json():
    c = config_lib.default_config()
    config_lib.apply_overrides(c, [f"model.name={USER_MODEL}", "model.width=24"])
    assert c.model.width == 24
    again = config_lib.config_from_json(config_lib.to_json(c))
    assert again.model.width == 24
    params = models.build(again.model, 3).init(jax.random.key(0), jnp.zeros((2, 5)), train=False)["params"]
    assert params["body"]["kernel"].shape == (5, 24)


def test_user_model_field_has_its_declared_default_and_type():
    c = config_lib.default_config()
    config_lib.apply_overrides(c, [f"model.name={USER_MODEL}"])
    assert c.model.width == 16
    with pytest.raises(ConfigError, match="model.width"):
        config_lib.apply_overrides(c, ["model.width=wide"])


def test_a_field_no_family_declares_is_an_error_naming_it():
    c = config_lib.default_config()
    with pytest.raises(ConfigError, match="unknown config key 'model.width'"):
        config_lib.apply_overrides(c, ["model.width=24"])  # the built-in cnn declares no width


def test_experiment_selects_a_user_model_with_use_model(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text("from jtrain.config import default_config, use_model\n"
                    "def get_config():\n"
                    "    c = default_config()\n"
                    f"    use_model(c, {USER_MODEL!r})\n"
                    "    c.model.width = 40\n"
                    "    return c\n")
    assert config_lib.load_experiment(str(path)).model.width == 40


def test_unimportable_user_model_is_one_line_naming_the_key():
    c = config_lib.default_config()
    config_lib.apply_overrides(c, ["model.name=no_such_module:build"])  # may be importable where it runs
    with pytest.raises(ConfigError, match="model.name.*cannot import"):
        models.build(c.model, 3)
    with pytest.raises(ConfigError, match="model.name.*cannot import"):  # not "unknown key": the real cause
        config_lib.apply_overrides(c, ["model.width=3"])


def test_hf_weights_of_a_model_type_no_family_reads_name_the_ones_read(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((2, 2), np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(ConfigError, match="model_type 'mamba'.*'bert'"):
        pretrained.open_source(str(tmp_path), "hf")


def test_sampling_needs_a_family_that_samples(tmp_path):
    c = config_lib.default_config()
    (tmp_path / "config.json").write_text(config_lib.to_json(c))
    with pytest.raises(UserError, match="key-value cache.*model.name='cnn'"):
        load_run(str(tmp_path))
