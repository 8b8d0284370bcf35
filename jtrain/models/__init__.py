"""Models, the model contract, and the model families.

A jtrain model is a Flax Linen module (or anything with the same `init`/`apply`) called as
`model.apply(variables, inputs, train=bool, rngs={'dropout': key}, mutable=[...])` and returning
`(B, num_outputs)` outputs. `variables['params']` is trained; every other collection (e.g. `batch_stats`)
is model state, updated by the training forward pass and read in evaluation.

A family is what jtrain knows about a kind of model beyond building it (`Family`): its own `model.*` config
fields, its FLOPs per token, whether it samples with a key-value cache, its Hugging Face name table and the
token inputs `jtrain plan` shapes without data. The rest of jtrain asks the family (`family(name)`), never the
model's name.

`model.name` picks a built-in family, or "package.module:factory" names your own:
`factory(model_config: ConfigDict, num_outputs: int) -> module`. The factory may carry `config_fields`, a dict
of its own `model.*` fields and their defaults (then `--config.model.FIELD=...` works, and an experiment file
selects it with `jtrain.config.use_model(c, "package.module:factory")`), or the name may point at a `Family`.
An NNX module plugs in through `jtrain.models.nnx_model` (see nnx_adapter.py).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import ml_collections

from jtrain.errors import ConfigError
from jtrain.models.family import Family, HFNames


def _builtin() -> dict[str, Family]:
    # Imported here: the families import flax and jax, which the config module's users need not pay for.
    from jtrain.models import bert, cnn, decoder, mlp

    return {"mlp": mlp.FAMILY, "cnn": cnn.FAMILY, "decoder": decoder.FAMILY, "bert": bert.FAMILY}


_FAMILIES: dict[str, Family] = {}


def families() -> dict[str, Family]:
    """The built-in families by name."""
    if not _FAMILIES:
        _FAMILIES.update(_builtin())
    return _FAMILIES


def builtin_fields() -> dict[str, Any]:
    """Every built-in family's `model.*` fields (families that share a field give it the same default)."""
    out: dict[str, Any] = {}
    for name, fam in families().items():
        for key, default in fam.fields.items():
            if key in out and out[key] != default:
                raise AssertionError(f"model family {name}: field {key} defaults to {default!r}, another to {out[key]!r}")
            out[key] = default
    return out


def family(name: str) -> Family:
    """The family `model.name` names: a built-in one, or a user's "package.module:factory" (or Family)."""
    if ":" in name:
        target = _import(name)
        if isinstance(target, Family):
            return target
        if not callable(target):
            raise ConfigError(f"config key 'model.name': {name!r} is neither a factory nor a jtrain.models.Family")
        return Family(build=target, fields=dict(getattr(target, "config_fields", {}) or {}))
    known = families()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config key 'model.name': unknown model {name!r}{hint}; "
                          f"known: {', '.join(known)}, or 'package.module:factory'")
    return known[name]


def hf_family(model_type: str) -> Family | None:
    """The built-in family whose Hugging Face table reads checkpoints of `model_type`."""
    return next((f for f in families().values() if f.hf and model_type in f.hf.model_types), None)


def hf_model_types() -> list[str]:
    return [t for f in families().values() if f.hf for t in f.hf.model_types]


def build(config: ml_collections.ConfigDict, num_outputs: int):
    """The model named by `config.name`, with `num_outputs` outputs unless `config.num_outputs` says otherwise."""
    from jtrain import lora  # adapters wrap any model, yours too: they work on paths of the params tree

    num_outputs = config.num_outputs or num_outputs
    return lora.wrap(family(config.name).build(config, num_outputs), config)


def _import(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config key 'model.name': cannot import {spec!r}: {e}") from e


def __getattr__(name: str):
    # The classes and the NNX adapter, for `from jtrain.models import CNN, nnx_model`, without importing flax here.
    if name in ("CNN", "MLP", "nnx_model"):
        module = {"CNN": "cnn", "MLP": "mlp", "nnx_model": "nnx_adapter"}[name]
        return getattr(importlib.import_module(f"jtrain.models.{module}"), name)
    raise AttributeError(f"module 'jtrain.models' has no attribute {name!r}")


__all__ = ["CNN", "Family", "HFNames", "MLP", "build", "family", "families", "nnx_model"]
