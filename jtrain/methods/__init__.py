"""Training methods: what differs between ways of training, behind one step skeleton (jtrain/step.py).

`method.name` picks one: a name in `METHODS`, or "package.module:factory" for your own. A factory is
`factory(config: ConfigDict) -> Method`, given the whole run config (it reads `loss`, `eval` and its own
`method.<name>` section). A user's factory may carry a `config` attribute, a dict (or ConfigDict) of its own
fields with their defaults: they become `method.<field>` keys, settable with `--config.method.<field>=...`.

A `Method` is a bundle of functions; `model` is the built Flax module, `state` the TrainState (or the method's
subclass of it):

    name           shown in errors
    task           the per-example loss's task (jtrain/losses.py) for supervised learning, "" otherwise;
                   throughput reports tokens for "sequence"
    examples       the DatasetSpec.examples it trains on: "" (arrays, token streams, SFT rows) or "preference";
                   `jtrain plan` builds its shape-only batch from it
    layout         dims between the batch dim and one example's shape: () for most, (2,) for DPO's pairs
    check_data(spec)          raises ConfigError (naming the key) when the dataset does not fit the method
    output_width(spec)        the model's output width it needs (model.num_outputs = 0 takes it)
    loss(model, state, params, batch, model_state, rng, mutable) -> (loss (), aux, new_model_state)
                              the batch's mean loss; the step differentiates it w.r.t. `params` (with the
                              L1/L2 penalty added), `aux` (leading dim B) is handed to train_metrics
    train_metrics(aux, batch, loss) -> {name: () array}   per-step metrics; must include "loss"
    eval_sums(model, state, batch) -> {name: array}       an eval batch's sums (jtrain/metrics.py accumulate)
    report(totals, data, role) -> dict                    a split's metrics from its accumulated sums
    log_keys       metric names shown in the log line beside the learning rate and speed
    init_state(state) -> state   extra state beside the params, added inside the jitted init (None: none)
    begin(state) -> state        once, on the state training starts from (scratch or init.pretrained, never a
                                 resume): DPO freezes those params as its reference (None: nothing)

Adding a method: one module here with a `build(config) -> Method` and one line in `METHODS`.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable

import ml_collections

from jtrain.errors import ConfigError
from jtrain.methods import dpo, supervised
from jtrain.methods.base import Method

__all__ = ["METHODS", "Method", "build", "factory"]

METHODS: dict[str, Callable[[ml_collections.ConfigDict], Method]] = {
    "supervised": supervised.build,  # classification, binary, regression, sequence: the loss's task
    "dpo": dpo.build,  # direct preference optimisation against a frozen reference
}


def factory(name: str) -> Callable[[ml_collections.ConfigDict], Method]:
    """The factory `method.name` names, a built-in one or an imported "package.module:factory"."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"config key 'method.name': cannot import {name!r}: {type(e).__name__}: {e}") from e
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config key 'method.name': unknown method {name!r}{hint}; known: {', '.join(METHODS)}, "
                          f"or 'package.module:factory'")
    return METHODS[name]


def build(config: ml_collections.ConfigDict) -> Method:
    """The method of a run's config."""
    method = factory(config.method.name)(config)
    if not isinstance(method, Method):
        raise ConfigError(f"config key 'method.name': {config.method.name} returned {type(method).__name__}, "
                          f"not a jtrain.methods.Method")
    return method

