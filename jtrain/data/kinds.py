"""Which reader opens `data.name`: the one place that dispatches on the kind of dataset.

    env                        an RL run's placeholder batches and evaluation episodes of `env.name` (jtrain/data/env.py)
    csv: parquet: json: npz: images: hf:   your own files (jtrain/data/own.py)
    tfds:NAME                  a TFDS catalog dataset (jtrain/data/catalog.py)
    "package.module:factory"   your own source: factory(config.data) returns it (jtrain/data/source.py)
    a builtin name             by its registry spec (jtrain/data/registry.py):
        examples = sft / preference, or data.jsonl.*   post-training rows (jtrain/data/sft.py, preference.py)
        a tokenizer                                    token streams packed into rows (jtrain/data/text.py)
        otherwise                                      image / tabular records (jtrain/data/pipeline.py)

A source passed in Python (`jtrain.train(config, workdir, data=source)`) is recorded in config.json as
`data.name = "python:<its class>"`, which no reader opens: `jtrain.evaluate(workdir, split, data=source)` and
a resume need the object again. A source object with `bind(config.data)` (jtrain.data.from_arrays) is bound to
the run's data config first (`bind`).
"""

from __future__ import annotations

import importlib

import ml_collections

from jtrain.data import catalog, env, folds, own, pipeline, preference, registry, rows, sft, text, transforms
from jtrain.data.source import DatasetSpec, Source
from jtrain.errors import ConfigError, DataError

PYTHON_PREFIX = "python:"


def load(config: ml_collections.ConfigDict, fitted: dict | None = None,
         env_config: ml_collections.ConfigDict | None = None) -> Source:
    """The source of `config.data` (a builtin dataset is prepared on first use). `fitted` is what a run of one's
    own files saved (WORKDIR/preparation.json): its data is prepared with it instead of fitting again.
    `env_config` is the run's env section, which data.name="env" describes."""
    transforms.parse_augmentations(config.augment)  # up front: the pipeline that applies them runs in threads
    if config.name == env.NAME:
        _no_folds(config, "an environment has no rows to fold")
        source = env.load(config, env_config)
    else:
        source = _open(config, fitted)
    if config.seq_len_warmup and (not isinstance(source, text.TextSource) or source.spec.examples):
        raise ConfigError(f"config key 'data.seq_len_warmup': grows the context of a packed token stream; "
                          f"{source.spec.name} is not one")
    return rows.apply(source, config)  # data.label_noise, data.train_rows, the curriculum's difficulty


def _open(config: ml_collections.ConfigDict, fitted: dict | None) -> Source:
    if config.name.startswith(PYTHON_PREFIX):
        raise DataError(f"data.name={config.name!r}: this run was trained on a data source given in Python; pass "
                        f"it again: jtrain.evaluate(workdir, split, data=source) or "
                        f"jtrain.train(config, workdir, data=source)")
    if own.kind_of(config.name):
        return own.load(config, fitted)
    if config.name.startswith("tfds:"):
        return catalog.load(config)
    if ":" in config.name:
        _no_folds(config, "a source of your own (package.module:factory) splits its own data")
        return external(config)
    spec = registry.get_spec(config.name)
    if spec.is_text or spec.examples or config.jsonl.train:
        _no_folds(config, f"{config.name} is text")
    if spec.examples == "preference":
        return preference.load(config, spec)
    if spec.examples or config.jsonl.train or config.jsonl.val or config.jsonl.test:
        return sft.load(config, spec)  # refuses JSONL files for a dataset that is no post-training one
    if spec.is_text:
        return text.load(config, spec)
    return pipeline.load(config, spec)


def _no_folds(config: ml_collections.ConfigDict, why: str) -> None:
    if folds.active(config):
        raise ConfigError(f"config key 'data.cv.folds': {folds.CV_TEXT}; {why}")


def spec_of(config: ml_collections.ConfigDict) -> DatasetSpec:
    """What one example of `config.data` looks like; a builtin's without reading its data."""
    if ":" in config.name:
        return load(config).spec
    return registry.get_spec(config.name)


def external(config: ml_collections.ConfigDict) -> Source:
    """factory(config.data) of data.name="package.module:factory"."""
    module_name, _, attr = config.name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as e:
        raise DataError(f"data.name={config.name!r}: cannot import {module_name}: {e}") from e
    except AttributeError as e:
        raise DataError(f"data.name={config.name!r}: {module_name} has no {attr!r}") from e
    source = factory(config)
    missing = [m for m in ("spec", "splits", "stats", "num_examples", "train_dataset", "eval_batches", "device_finish")
               if not hasattr(source, m)]
    if missing:
        raise DataError(f"data.name={config.name!r}: the factory's {type(source).__name__} lacks {', '.join(missing)} "
                        f"(see jtrain/data/source.py; jtrain.data.Source and ArraySource provide them)")
    return source


def python_name(source) -> str:
    """The data.name config.json records for a source passed in Python."""
    return f"{PYTHON_PREFIX}{type(source).__module__}.{type(source).__qualname__}"


def bind(source, config: ml_collections.ConfigDict, fitted: dict | None = None) -> Source:
    """A source given in Python, bound to the run's data config when it asks to be (jtrain.data.from_arrays)."""
    if hasattr(source, "bind"):
        return rows.apply(source.bind(config, fitted), config)
    _no_folds(config, "pass the data as jtrain.data.from_arrays(x, y) to fold it")
    return rows.apply(source, config)
