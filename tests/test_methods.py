"""Training methods (jtrain/methods): the registry's errors, and a method from outside jtrain
(tests/toy_method.py) that trains through the CLI, with its own config field, and evaluates with `jtrain eval`."""

from __future__ import annotations

import json
import os

import pytest

from _cli import SMOKE_OVERRIDES, run_jtrain
from jtrain import methods
from jtrain.config import apply_overrides, config_from_json, default_config, load_experiment, to_json
from jtrain.errors import ConfigError

TOY = "tests.toy_method:factory"


def _config(name: str):
    config = default_config()
    with config.method.unlocked():
        config.method.name = name
    return config


def test_unknown_method_names_the_key_and_the_closest_name():
    # ("dpp" is now as close to ppo as to dpo.)
    with pytest.raises(ConfigError, match=r"^config key 'method.name': unknown method 'dpoo' \(did you mean 'dpo'\?\)"):
        methods.build(_config("dpoo"))


@pytest.mark.parametrize("name", ["no_such_module_xyz:factory", "tests.toy_method:no_such_factory"])
def test_unimportable_factory_is_one_line_naming_the_key(name):
    with pytest.raises(ConfigError, match="config key 'method.name': cannot import") as info:
        methods.build(_config(name))
    assert "\n" not in str(info.value)


def test_old_dpo_loss_points_to_the_method():
    with pytest.raises(ConfigError, match="config key 'loss.name'.*method.name=dpo"):
        apply_overrides(default_config(), ["loss.name=dpo"])
    with pytest.raises(ConfigError, match="method.dpo.beta"):
        apply_overrides(default_config(), ["method.name=dpo", "method.dpo.beta=0"])


def test_a_user_method_declares_config_fields():
    config = default_config()
    apply_overrides(config, [f"method.name={TOY}", "method.logit_weight=0.5"])
    assert config.method.logit_weight == 0.5
    assert config_from_json(to_json(config)).method.logit_weight == 0.5  # what `jtrain eval` rebuilds
    with pytest.raises(ConfigError, match="unknown config key 'method.logit_weight'"):
        apply_overrides(default_config(), ["method.logit_weight=0.5"])  # only the toy method has it


def test_an_experiment_may_name_a_user_method(tmp_path):
    path = tmp_path / "toy_experiment.py"
    path.write_text("from jtrain.config import default_config\n\n\ndef get_config():\n"
                    f"    c = default_config()\n    c.method.name = {TOY!r}\n    return c\n")
    config = load_experiment(str(path))
    assert config.method.logit_weight == 0.01  # the factory's default, settable by --config.method.logit_weight
    apply_overrides(config, ["method.logit_weight=0.2"])
    assert config.method.logit_weight == 0.2


def test_toy_method_from_outside_trains_through_the_cli_and_evaluates(digits_data_dir, tmp_path):
    workdir = str(tmp_path / "toy")
    result = run_jtrain(["train", "--config", "experiments/digits_cnn.py", *SMOKE_OVERRIDES,
                         f"--config.method.name={TOY}", "--config.method.logit_weight=0.05", "--workdir", workdir],
                        digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "logit_penalty=" in result.stdout + result.stderr  # the method's log keys
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [r for r in records if r["split"] == "train"]
    assert train and all(r["logit_penalty"] > 0 and "accuracy" in r for r in train)
    assert all("mean_abs_logit" in r for r in records if r["split"] in ("val", "test"))
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["test"]["mean_abs_logit"] > 0 and "accuracy" in summary["test"]
    assert json.load(open(os.path.join(workdir, "config.json")))["method"]["logit_weight"] == 0.05

    evaluated = run_jtrain(["eval", "--workdir", workdir], digits_data_dir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert report["mean_abs_logit"] == pytest.approx(summary["test"]["mean_abs_logit"], rel=1e-5)
    assert report["accuracy"] == pytest.approx(summary["test"]["accuracy"])
