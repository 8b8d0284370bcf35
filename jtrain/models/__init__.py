"""Models and the model contract.

A jtrain model is a Flax Linen module (or anything with the same `init`/`apply`) called as
`model.apply(variables, inputs, train=bool, rngs={'dropout': key}, mutable=[...])` and returning
`(B, num_outputs)` outputs. `variables['params']` is trained; every other collection (e.g. `batch_stats`)
is model state, updated by the training forward pass and read in evaluation.

`model.name` picks a built-in model, or "package.module:factory" names your own:
`factory(model_config: ConfigDict, num_outputs: int) -> module`. An NNX module plugs in through
`jtrain.models.nnx_model` (see nnx_adapter.py).
"""

from __future__ import annotations

import difflib
import importlib

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jtrain.errors import ConfigError
from jtrain.models import bert, decoder
from jtrain.models.cnn import CNN
from jtrain.models.mlp import MLP
from jtrain.models.nnx_adapter import nnx_model


def _mlp(config: ml_collections.ConfigDict, num_outputs: int) -> nn.Module:
    return MLP(tuple(config.hidden_sizes), num_outputs, config.dropout, config.batch_norm, jnp.dtype(config.dtype))


def _cnn(config: ml_collections.ConfigDict, num_outputs: int) -> nn.Module:
    return CNN(tuple(config.conv_features), config.dense_features, num_outputs, config.dropout, config.batch_norm,
               jnp.dtype(config.dtype))


MODELS = {"mlp": _mlp, "cnn": _cnn, "decoder": decoder.build, "bert": bert.build}


def build(config: ml_collections.ConfigDict, num_outputs: int) -> nn.Module:
    """The model named by `config.name`, with `num_outputs` outputs unless `config.num_outputs` says otherwise."""
    from jtrain import lora  # adapters wrap any model, yours too: they work on paths of the params tree

    num_outputs = config.num_outputs or num_outputs
    if ":" in config.name:
        return lora.wrap(_import_factory(config.name)(config, num_outputs), config)
    if config.name not in MODELS:
        close = difflib.get_close_matches(config.name, list(MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config key 'model.name': unknown model {config.name!r}{hint}; "
                          f"known: {', '.join(MODELS)}, or 'package.module:factory'")
    return lora.wrap(MODELS[config.name](config, num_outputs), config)


def _import_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config key 'model.name': cannot import {spec!r}: {e}") from e


__all__ = ["CNN", "MLP", "MODELS", "build", "nnx_model"]
