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

Optional, for methods that train a model of their own around the family's network (jtrain/methods/autoencoder.py,
vae.py, contrastive.py); None leaves each out:

    wrap_model(model, data) -> module
                   the module the run trains, holding `model` (model.name's network, built with output_width
                   outputs) as its encoder plus the method's parts (decoder, projection head); `data` is the
                   source (its spec and stats). Every model.apply of the run goes to this module.
    check_batch(global_batch, data_parallel) -> None
                   raises ConfigError (naming data.batch_size) when the batch does not suit the method
    embed(model, state, inputs) -> (B, D)
                   the frozen encoder's embeddings. With it, the end of a run scores them against the labels
                   the method never trained on (jtrain/probe.py: linear probe, kNN, k-means), beside those of
                   the same architecture at its initialisation
    pictures(model, state, batch, key) -> {name: (N, H, W, C) images in [0, 1]}
                   drawn as grids into WORKDIR/plots/NAME.png at the end of a run (e.g. inputs over their
                   reconstructions, samples)
    probabilities(model, state, batch, rng) -> (B, C)
                   class probabilities; rng None = evaluation mode, a key = dropout on (one Monte Carlo pass).
                   With it, `jtrain score` ranks examples (jtrain/score.py) and `jtrain active` queries labels

Optional, for methods that make their own data in the step (reinforcement learning: jtrain/methods/rl.py, whose
data source is a placeholder, jtrain/data/env.py); None leaves each out:

    collect(model, state, batch, rng) -> (state, batch, metrics)
                   runs first in every train step, inside the jitted step: e.g. a rollout of the environments
                   (held in the method's extra state) with the current params. The returned batch is what the
                   loss sees; `metrics` ({name: () array}) join the step's metrics. `rng` is the step's own key
                   (a function of the seed and the step, apart from the dropout key)
    minibatches(batch, rng) -> batch of (U, ...) leaves
                   the step makes U optimizer updates, one per minibatch in order (PPO's epochs x minibatches),
                   and still counts as one step (the learning rate is the step's; metrics the updates' means)
    updates_per_step
                   that U (the optimizer's count runs U times faster than the step; the schedule stays per step)
    rates(steps_per_sec) -> {name: float}
                   the log's speed metrics for the method, e.g. environment steps per second

Adding a method: one module here with a `build(config) -> Method` and one line in `METHODS`.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable

import ml_collections

from jtrain.errors import ConfigError
from jtrain.methods import autoencoder, contrastive, dpo, ppo, reinforce, reward, supervised, vae
from jtrain.methods.base import Method

__all__ = ["METHODS", "Method", "build", "factory"]

METHODS: dict[str, Callable[[ml_collections.ConfigDict], Method]] = {
    "supervised": supervised.build,  # classification, binary, regression, sequence: the loss's task
    "dpo": dpo.build,  # direct preference optimisation against a frozen reference
    "reward": reward.build,  # a reward model: the decoder with a scalar head, Bradley-Terry loss on preference pairs
    "autoencoder": autoencoder.build,  # reconstruct the inputs through a bottleneck (MSE or Bernoulli)
    "vae": vae.build,  # variational autoencoder: ELBO with KL warm-up, samples from the prior
    "contrastive": contrastive.build,  # SimCLR: NT-Xent between two augmented views over the global batch
    "ppo": ppo.build,  # reinforcement learning: PPO's clipped objective, GAE, value loss, entropy bonus
    "reinforce": reinforce.build,  # reinforcement learning: REINFORCE with a learned baseline
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

