"""Tests for jtrain.config: the default tree, its comments, overrides, validation, JSON and experiment files."""

from __future__ import annotations

import ast
import glob
import io
import os
import tokenize

import ml_collections
import pytest

from jtrain import config as config_lib
from jtrain.config import (
    apply_overrides,
    config_from_json,
    default_config,
    flatten,
    load_experiment,
    set_value,
    to_json,
    validate,
)
from jtrain.errors import ConfigError, UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO_ROOT, "experiments", "*.py")))

# The keys the rest of jtrain (and the README) rely on.
CONTRACT_KEYS = (
    "seed",
    "data.name",
    "data.batch_size",
    "data.splits.train",
    "data.splits.val",
    "data.splits.test",
    "model.name",
    "train.steps",
    "train.epochs",
    "eval.every_steps",
    "optim.name",
    "optim.learning_rate",
    "schedule.name",
    "checkpoint.every_steps",
    "mesh.data",
    "mesh.fsdp",
    "mesh.tensor",
)


# ---------------------------------------------------------------------------------------------
# the default tree


def test_default_config_has_every_contract_key():
    flat = flatten(default_config())
    missing = [k for k in CONTRACT_KEYS if k not in flat]
    assert missing == []


def test_default_config_validates_and_is_locked():
    c = default_config()
    validate(c)
    assert isinstance(c, ml_collections.ConfigDict)
    with pytest.raises(AttributeError):
        c.train.step = 5  # a typo in an experiment file fails at the assignment
    with pytest.raises(TypeError):
        c.train.steps = "many"


def _source(path: str) -> tuple[ast.Module, set[int], list[str]]:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    comment_lines = {
        tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT
    }
    return ast.parse(source), comment_lines, source.splitlines()


def _default_config_fields_from_source() -> dict[str, tuple[str, int, bool]]:
    """Field -> (file, line, has a trailing comment), for each leaf assigned in default_config()'s source, and
    each `model.*` field a model family declares in its file (the keywords of its `dict(...)` of fields)."""
    tree, comment_lines, _ = _source(config_lib.__file__)
    func = next(
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "default_config"
    )
    fields = {}
    for node in ast.walk(func):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        parts = []
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if not (isinstance(target, ast.Name) and target.id == "c") or not parts:
            continue
        value = node.value
        is_section = isinstance(value, ast.Call) and ast.unparse(value.func).endswith("ConfigDict")
        if is_section:
            continue
        fields[".".join(reversed(parts))] = (config_lib.__file__, node.lineno, node.end_lineno in comment_lines)
    models_dir = os.path.join(os.path.dirname(config_lib.__file__), "models")
    for name in sorted(os.listdir(models_dir)):
        if not name.endswith(".py"):
            continue
        path = os.path.join(models_dir, name)
        tree, comment_lines, _ = _source(path)
        declared = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords
                    if kw.arg == "fields"]  # Family(build, fields=dict(...))
        declared += [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and ast.unparse(node.targets[0]).endswith("_FIELDS")]  # fields shared by families
        for node in declared:
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "dict":
                for kw in node.keywords:
                    if kw.arg is not None:
                        fields[f"model.{kw.arg}"] = (path, kw.value.lineno, kw.value.end_lineno in comment_lines)
    return fields


def test_every_default_field_has_a_trailing_comment():
    fields = _default_config_fields_from_source()
    # The parse found exactly the leaves of the tree, so the check below covers every field.
    assert sorted(fields) == sorted(flatten(default_config()))
    uncommented = [f"{key} ({path}:{line})" for key, (path, line, ok) in fields.items() if not ok]
    assert uncommented == []


def test_every_default_comment_is_not_empty():
    fields = _default_config_fields_from_source()
    for key, (path, line, _) in fields.items():
        lines = _source(path)[2]
        comment = lines[line - 1].split("#", 1)[1].strip()
        assert len(comment) >= 3, key


# ---------------------------------------------------------------------------------------------
# overrides


@pytest.mark.parametrize(
    "item, key, expected",
    [
        ("train.steps=100", "train.steps", 100),
        ("seed=-3", "seed", -3),
        ("optim.learning_rate=1e-3", "optim.learning_rate", 1e-3),
        ("optim.learning_rate=0.25", "optim.learning_rate", 0.25),
        ("data.shuffle=False", "data.shuffle", False),
        ("model.batch_norm=True", "model.batch_norm", True),
        ("model.conv_features=(16, 32)", "model.conv_features", (16, 32)),
        ("model.hidden_sizes=[8, 4]", "model.hidden_sizes", (8, 4)),
        ("model.hidden_sizes=64", "model.hidden_sizes", (64,)),
        ("optim.name=sgd", "optim.name", "sgd"),
        ("data.splits.train=train[:50%]", "data.splits.train", "train[:50%]"),
        ("data.augment=shift,noise", "data.augment", "shift,noise"),
        ("model.name=my_pkg.models:build", "model.name", "my_pkg.models:build"),
        ("data.splits.val=none", "data.splits.val", "none"),
    ],
)
def test_apply_overrides_parses_values(item, key, expected):
    c = default_config()
    apply_overrides(c, [item])
    value = flatten(c)[key]
    assert value == expected
    assert type(value) is type(expected)


def test_int_override_of_float_field_becomes_float():
    c = default_config()
    apply_overrides(c, ["optim.learning_rate=1", "train.epochs=3"])
    assert c.optim.learning_rate == 1.0 and type(c.optim.learning_rate) is float
    assert c.train.epochs == 3.0 and type(c.train.epochs) is float


def test_overrides_apply_in_order_and_leave_other_fields_alone():
    c = default_config()
    apply_overrides(c, ["train.steps=10", "train.steps=20", "data.batch_size=8"])
    assert c.train.steps == 20
    assert c.data.batch_size == 8
    changed = {k for k, v in flatten(c).items() if v != flatten(default_config())[k]}
    assert changed == {"train.steps", "data.batch_size"}


@pytest.mark.parametrize(
    "item, named, suggested",
    [
        ("train.step=5", "train.step", "train.steps"),
        ("optim.learning_rat=0.1", "optim.learning_rat", "optim.learning_rate"),
        ("data.batchsize=8", "data.batchsize", "data.batch_size"),
    ],
)
def test_unknown_key_names_it_and_suggests_the_closest(item, named, suggested):
    with pytest.raises(ConfigError) as e:
        apply_overrides(default_config(), [item])
    message = str(e.value)
    assert repr(named) in message
    assert f"did you mean {suggested!r}" in message


def test_unknown_key_without_close_match_still_names_it():
    with pytest.raises(ConfigError, match="'zzz'"):
        set_value(default_config(), "zzz", 1)


@pytest.mark.parametrize(
    "item, key",
    [
        ("train.steps=abc", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("train.steps=True", "train.steps"),  # a bool is not an int here
        ("data.shuffle=3", "data.shuffle"),
        ("optim.learning_rate=fast", "optim.learning_rate"),
        ("model.conv_features=(16, 'a')", "model.conv_features"),
        ("data.name=None", "data.name"),
    ],
)
def test_wrong_type_names_the_key(item, key):
    with pytest.raises(ConfigError) as e:
        apply_overrides(default_config(), [item])
    assert repr(key) in str(e.value)


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="train.steps"):
        apply_overrides(default_config(), ["train.steps"])


@pytest.mark.parametrize(
    "item, key",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.batch_size=-4", "data.batch_size"),
        ("data.eval_batch_size=-1", "data.eval_batch_size"),
        ("model.dropout=1.5", "model.dropout"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.dtype=float16", "model.dtype"),
        ("train.steps=-1", "train.steps"),
        ("train.log_every_steps=0", "train.log_every_steps"),
        ("optim.learning_rate=-1e-3", "optim.learning_rate"),
        ("checkpoint.max_to_keep=0", "checkpoint.max_to_keep"),
        ("mesh.data=0", "mesh.data"),
        ("mesh.tensor=-2", "mesh.tensor"),
    ],
)
def test_out_of_range_values_raise(item, key):
    with pytest.raises(ConfigError) as e:
        apply_overrides(default_config(), [item])
    assert repr(key) in str(e.value)


def test_in_range_edge_values_pass():
    c = default_config()
    apply_overrides(c, ["model.dropout=0.0", "data.batch_size=1", "mesh.data=-1", "mesh.fsdp=2", "model.dtype=bfloat16"])
    assert (c.model.dropout, c.data.batch_size, c.mesh.fsdp, c.model.dtype) == (0.0, 1, 2, "bfloat16")


def test_config_error_is_a_user_error_and_value_error():
    assert issubclass(ConfigError, UserError)
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------------
# JSON


def test_json_round_trip():
    c = default_config()
    apply_overrides(
        c,
        [
            "seed=7",
            "optim.learning_rate=3e-4",
            "model.conv_features=(8, 16, 32)",
            "data.shuffle=False",
            "data.splits.val=none",
            "train.epochs=2.5",
        ],
    )
    back = config_from_json(to_json(c))
    assert flatten(back) == flatten(c)
    assert {k: type(v) for k, v in flatten(back).items()} == {k: type(v) for k, v in flatten(c).items()}
    assert to_json(back) == to_json(c)


def test_config_from_json_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="'train.stepz'"):
        config_from_json('{"train": {"stepz": 3}}')


def test_config_from_json_fills_missing_keys_with_defaults():
    c = config_from_json('{"train": {"steps": 3}}')
    expected = default_config()
    set_value(expected, "train.steps", 3)
    assert flatten(c) == flatten(expected)


# ---------------------------------------------------------------------------------------------
# experiment files


def test_there_are_experiments():
    assert EXPERIMENTS, "experiments/*.py is empty"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[os.path.basename(p) for p in EXPERIMENTS])
def test_experiment_loads_and_validates(path):
    c = load_experiment(path)
    validate(c)
    assert sorted(flatten(c)) == sorted(flatten(default_config()))


def _write(tmp_path, body: str) -> str:
    path = tmp_path / "exp.py"
    path.write_text("from jtrain.config import default_config\n\n\ndef get_config(arg=''):\n" + body)
    return str(path)


def test_experiment_with_unknown_key_raises_config_error(tmp_path):
    path = _write(tmp_path, "    c = default_config()\n    c.train.stepz = 5\n    return c\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    message = str(e.value)
    assert path in message
    assert "stepz" in message


def test_experiment_with_wrong_type_raises_config_error(tmp_path):
    path = _write(tmp_path, "    c = default_config()\n    c.train.steps = 'abc'\n    return c\n")
    with pytest.raises(ConfigError, match="steps"):
        load_experiment(path)


def test_experiment_with_out_of_range_value_raises_config_error(tmp_path):
    path = _write(tmp_path, "    c = default_config()\n    c.model.dropout = 1.5\n    return c\n")
    with pytest.raises(ConfigError, match="'model.dropout'"):
        load_experiment(path)


def test_experiment_argument_is_passed_to_get_config(tmp_path):
    path = _write(tmp_path, "    c = default_config()\n    c.model.name = arg or 'cnn'\n    return c\n")
    assert load_experiment(path).model.name == "cnn"
    assert load_experiment(path + ":mlp").model.name == "mlp"


def test_experiment_that_fails_to_import_raises_config_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="failed to load"):
        load_experiment(str(path))


def test_experiment_without_get_config_raises_config_error(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_experiment(str(path))


def test_missing_experiment_file_raises_config_error(tmp_path):
    missing = str(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match="not found") as e:
        load_experiment(missing)
    assert missing in str(e.value)


def test_help_names_every_section_and_jtrain_config_explains_fields(capsys):
    from jtrain import cli

    assert tuple(sorted(config_lib.default_config().keys())) == config_lib.SECTIONS
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--config.SECTION.KEY=VALUE" in shown and ", ".join(config_lib.SECTIONS) in shown
    assert cli.main(["config", "data.prep"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(config_lib.default_config().data.prep)
    assert any(line.startswith("data.prep.scale = 'standard'") and "# standard | robust" in line for line in lines)
    assert cli.main(["config", "model.num_heads", "--config.model.num_heads=8"]) == 0
    assert "model.num_heads = 8  (int)  # attention heads" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli.main(["config", "data.tagret"])
    assert exited.value.code == 2 and "did you mean 'data.target'" in capsys.readouterr().err
