"""The one config tree: every field defined once, here, with a one-line comment.

Experiments (`experiments/*.py`) call `default_config()` and change a few fields; the CLI applies
`--config.SECTION.KEY=VALUE` overrides on top; `validate()` checks the result before anything is built.
The returned ConfigDict is locked: assigning a key that does not exist, or a value of the wrong type,
fails at once with an error that names the key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from typing import Any

import ml_collections

from jtrain.errors import ConfigError


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds parameter init, dropout and data shuffling; same seed -> same run

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # registered dataset: digits, fashion_mnist (see jtrain/data/registry.py)
    c.data.dir = ""  # TFDS data directory; "" = $JTRAIN_DATA_DIR, else ~/.cache/jtrain/tensorflow_datasets
    c.data.batch_size = 64  # global training batch size (split over the data-parallel devices)
    c.data.eval_batch_size = 0  # global eval batch size; 0 = same as batch_size
    c.data.splits = ml_collections.ConfigDict()
    c.data.splits.train = ""  # TFDS split spec for training, e.g. "train[:70%]"; "" = the dataset's default
    c.data.splits.val = ""  # split evaluated during training; "" = the dataset's default ("none" = no val)
    c.data.splits.test = ""  # split evaluated at the end; "" = the dataset's default ("none" = no test)
    c.data.shuffle = True  # reshuffle the training split every epoch (deterministic from seed)
    c.data.normalize = True  # standardise inputs with the dataset's mean and std
    c.data.augment = ""  # comma-separated augmentations on training images: shift, flip, noise
    c.data.prefetch = 2  # batches prepared ahead by a background thread; 0 = none

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"  # registered model (mlp, cnn) or "package.module:factory" for your own
    c.model.num_outputs = 0  # output width; 0 = number of classes (or targets) of the dataset
    c.model.hidden_sizes = (256, 256)  # MLP hidden layer widths
    c.model.conv_features = (32, 64)  # CNN channels per conv block (3x3 conv, [BN], ReLU, 2x2 max-pool)
    c.model.dense_features = 128  # CNN width of the dense layer before the head
    c.model.dropout = 0.0  # dropout rate before each dense layer (training only)
    c.model.batch_norm = False  # batch normalisation after each conv / hidden layer
    c.model.dtype = "float32"  # computation dtype (float32 or bfloat16); parameters stay float32

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "softmax_cross_entropy"  # softmax_cross_entropy or mse
    c.loss.label_smoothing = 0.0  # label smoothing for softmax_cross_entropy

    c.train = ml_collections.ConfigDict()
    c.train.steps = 0  # total optimizer steps; 0 = derive from train.epochs
    c.train.epochs = 0.0  # epochs over the training split, converted to steps when train.steps == 0
    c.train.log_every_steps = 50  # fetch and write training metrics every k steps
    c.train.progress = True  # progress bar on a TTY (also off when JTRAIN_NO_PROGRESS is set)
    c.train.on_nonfinite = "halt"  # non-finite loss/gradients: halt (error naming the step) or skip (drop the update)
    c.train.early_stopping_patience = 0  # stop after this many evals without improving eval.best_metric; 0 = off
    c.train.early_stopping_min_delta = 0.0  # smallest change of eval.best_metric that counts as an improvement

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 0  # evaluate the val split every k steps; 0 = only at the end
    c.eval.best_metric = ""  # val metric that ranks checkpoints and drives early stopping, e.g. accuracy; "" = none
    c.eval.best_mode = "auto"  # max, min, or auto (min for loss/mse/mae, max otherwise)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"  # sgd or adamw
    c.optim.learning_rate = 1e-3  # peak learning rate (the schedule scales it)
    c.optim.momentum = 0.0  # SGD momentum; 0 = plain SGD
    c.optim.nesterov = False  # Nesterov momentum for SGD
    c.optim.b1 = 0.9  # Adam first-moment decay
    c.optim.b2 = 0.999  # Adam second-moment decay
    c.optim.eps = 1e-8  # Adam epsilon
    c.optim.weight_decay = 0.0  # decoupled weight decay (AdamW); biases and norm scales are excluded
    c.optim.grad_clip_norm = 0.0  # clip gradients to this global norm; 0 = no clipping

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "constant"  # constant, cosine (with linear warmup), or warmup_linear
    c.schedule.warmup_steps = 0  # linear warmup from 0 to the peak learning rate
    c.schedule.end_factor = 0.0  # final learning rate as a fraction of the peak (cosine, warmup_linear)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500  # save a checkpoint every k steps (and always at the end); 0 = end only
    c.checkpoint.max_to_keep = 3  # newest checkpoints kept on disk
    c.checkpoint.keep_best = 1  # also keep this many best checkpoints by eval.best_metric (when set)
    c.checkpoint.async_save = True  # write checkpoints in the background while training continues

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel mesh axis size; -1 = fill with the remaining devices
    c.mesh.fsdp = 1  # fully-sharded data-parallel axis size; -1 = fill
    c.mesh.tensor = 1  # tensor-parallel axis size; -1 = fill

    c.lock()
    return c


# ---------------------------------------------------------------- loading


def load_experiment(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/experiment.py[:ARG]` by calling its `get_config([ARG])`."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location("_jtrain_experiment", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a user's file: report where, in one line
        raise ConfigError(f"{path}: failed to load: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except (AttributeError, KeyError, TypeError) as e:
        # A locked ConfigDict rejects unknown keys and wrong types right at the assignment.
        raise ConfigError(f"{path}: {_one_line(e)}") from e
    validate(config)
    return config


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Rebuilds a resolved config (e.g. a workdir's config.json) over the defaults."""
    config = default_config()
    _assign_tree(config, json.loads(text), prefix="")
    validate(config)
    return config


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


# ---------------------------------------------------------------- overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Applies `SECTION.KEY=VALUE` strings (the part after `--config.`) in order."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq:
            raise ConfigError(f"--config.{item}: expected --config.KEY=VALUE")
        set_value(config, key, _parse_value(raw))
    validate(config)


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Sets a dotted key, with the default's type; errors name the key and the closest valid one."""
    flat = flatten(default_config())
    if key not in flat:
        raise ConfigError(f"unknown config key {key!r}{_suggest(key, flat)}")
    expected = flat[key]
    value = _coerce(key, value, expected)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    with node.unlocked():
        node[leaf] = value


def _parse_value(raw: str) -> Any:
    # Python literals ("1e-3", "(32, 64)", "True"); anything else stays a string ("adamw").
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _coerce(key: str, value: Any, expected: Any) -> Any:
    want = type(expected)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is tuple and isinstance(value, (list, tuple)):
        value = tuple(value)
        if expected and not all(isinstance(v, type(expected[0])) for v in value):
            raise ConfigError(f"config key {key!r}: expected a tuple of {type(expected[0]).__name__}, got {value!r}")
        return value
    if want is tuple and isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    if want is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. --config.data.augment=0 is still a string field
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r}: expected {want.__name__}, got {value!r} ({type(value).__name__})")
    return value


# ---------------------------------------------------------------- validation


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Every key known, every value of the default's type, values within range."""
    flat, defaults = flatten(config), flatten(default_config())
    for key, value in flat.items():
        if key not in defaults:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, defaults)}")
        _coerce(key, value, defaults[key])
    _check_ranges(config)


def _check_ranges(c: ml_collections.ConfigDict) -> None:
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"config key {key!r}: {msg}")

    need(c.data.batch_size > 0, "data.batch_size", f"must be > 0, got {c.data.batch_size}")
    need(c.data.eval_batch_size >= 0, "data.eval_batch_size", "must be >= 0")
    need(c.train.steps >= 0, "train.steps", "must be >= 0")
    need(c.train.epochs >= 0, "train.epochs", "must be >= 0")
    need(c.train.log_every_steps > 0, "train.log_every_steps", "must be > 0")
    need(c.eval.every_steps >= 0, "eval.every_steps", "must be >= 0")
    need(c.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0")
    need(c.checkpoint.max_to_keep >= 1, "checkpoint.max_to_keep", "must be >= 1")
    need(c.checkpoint.keep_best >= 0, "checkpoint.keep_best", "must be >= 0")
    need(c.train.on_nonfinite in ("halt", "skip"), "train.on_nonfinite", f"must be halt or skip, got {c.train.on_nonfinite!r}")
    need(c.train.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
    need(c.eval.best_mode in ("auto", "max", "min"), "eval.best_mode", f"must be auto, max or min, got {c.eval.best_mode!r}")
    need(not c.train.early_stopping_patience or (c.eval.best_metric and c.eval.every_steps),
         "train.early_stopping_patience", "needs eval.best_metric and eval.every_steps > 0")
    need(c.optim.learning_rate >= 0, "optim.learning_rate", "must be >= 0")
    need(0.0 <= c.model.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {c.model.dropout}")
    need(c.model.dtype in ("float32", "bfloat16"), "model.dtype", f"must be float32 or bfloat16, got {c.model.dtype!r}")
    for axis in ("data", "fsdp", "tensor"):
        size = c.mesh[axis]
        need(size == -1 or size >= 1, f"mesh.{axis}", f"must be -1 (fill) or >= 1, got {size}")


def _suggest(key: str, valid: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _assign_tree(config: ml_collections.ConfigDict, tree: dict, prefix: str) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            _assign_tree(config, v, f"{prefix}{k}.")
        else:
            set_value(config, f"{prefix}{k}", v)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().strip("'\"")
    return text.splitlines()[0] if text else type(e).__name__


__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_json",
    "default_config",
    "flatten",
    "load_experiment",
    "set_value",
    "to_json",
    "validate",
]
