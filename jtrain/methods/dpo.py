"""Direct preference optimisation (DPO): learn from (prompt, chosen, rejected) pairs against a frozen reference.

A response's implicit reward is r = beta * (log p_policy(response | prompt) - log p_reference(response | prompt)),
with log p the sum of the response tokens' log-probabilities (prompt tokens are context, never scored). The loss
of a pair is

    -log sigmoid(r_chosen - r_rejected)

so the policy gains by raising the chosen response's likelihood relative to the reference more than the
rejected one's. The reference is the model training started from (scratch or `init.pretrained`), held in the
state beside the trained params (`DPOState.ref_params`): sharded like them (jtrain/sharding.py gives a leaf the
annotation of the parameter its path ends with), saved in checkpoints so a resumed run keeps the same reference,
and never updated - the optimizer sees only `params`.

Config: `method.name = "dpo"`, `method.dpo.beta`; data: a preference dataset
(jtrain/data/preference.py), batches {'inputs', 'targets', 'mask'} of shape (B, 2, T), [chosen, rejected].

Logged in training: loss, reward_margin (mean r_chosen - r_rejected), reward_accuracy (fraction of pairs with
margin > 0), chosen_reward, rejected_reward. At the start policy = reference: evaluation's margins are exactly 0
(reward accuracy 0), while the first training steps show rounding noise (the policy's forward pass runs under
the gradient, the reference's does not, and XLA may order their sums differently). Evaluation adds
preference_accuracy: the fraction of held-out pairs whose chosen response the policy itself finds more likely
than the rejected one (summed log-probabilities) - the before/after measure, meaningful at step 0 too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from jtrain import metrics as metrics_lib
from jtrain.errors import ConfigError
from jtrain.methods.base import Batch, Method
from jtrain.state import TrainState

# (policy, reference) summed response log-probs, each (B, 2) [chosen, rejected] -> (loss (B,), rewards (B, 2))
PreferenceLoss = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@flax.struct.dataclass
class DPOState(TrainState):
    ref_params: Any  # the frozen reference model: the params training started from, never updated


def with_reference(state: TrainState) -> DPOState:
    """`state` plus its params as the frozen reference. Called inside jit, so the copy is a buffer of its own
    (donating the state to a train step never donates the reference through an alias of the params)."""
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(TrainState)}
    return DPOState(**fields, ref_params=jax.tree.map(jnp.copy, state.params))


def reset_reference(state: DPOState) -> DPOState:
    """The params as they are now (e.g. just loaded from init.pretrained) become the reference."""
    return state.replace(ref_params=jax.tree.map(jnp.copy, state.params))


def dpo_loss(beta: float) -> PreferenceLoss:
    def loss(policy: jax.Array, reference: jax.Array) -> tuple[jax.Array, jax.Array]:
        rewards = beta * (policy - reference)  # (B, 2) implicit rewards of [chosen, rejected]
        margin = rewards[:, 0] - rewards[:, 1]  # (B,)
        return -jax.nn.log_sigmoid(margin), rewards  # (B,), (B, 2)

    return loss


def response_logps(model: nn.Module, variables: dict, batch: Batch, train: bool = False, rngs: dict | None = None,
                   mutable: list[str] | bool = False):
    """Summed log-probabilities of the response tokens of both sequences of each pair: (B, 2).
    With `mutable` collections, also returns the model state the forward pass updated."""
    b, pair, t = batch["inputs"].shape  # (B, 2, T)
    out = model.apply(variables, batch["inputs"].reshape(b * pair, t), train=train, rngs=rngs, mutable=mutable)
    logits, new_state = out if mutable is not False else (out, None)  # logits (2B, T, V)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    targets = batch["targets"].reshape(b * pair, t, 1)
    token_logp = jnp.take_along_axis(logp, targets, axis=-1)[..., 0]  # (2B, T)
    summed = (token_logp * batch["mask"].reshape(b * pair, t)).sum(-1).reshape(b, pair)  # (B, 2)
    return (summed, new_state) if mutable is not False else summed


def reward_metrics(rewards: jax.Array) -> dict:
    margin = rewards[:, 0] - rewards[:, 1]  # (B,)
    return {"reward_margin": margin.mean(), "reward_accuracy": (margin > 0).astype(jnp.float32).mean(),
            "chosen_reward": rewards[:, 0].mean(), "rejected_reward": rewards[:, 1].mean()}


def build(config: ml_collections.ConfigDict) -> Method:
    return method(config.method.dpo.beta)


def method(beta: float) -> Method:
    """DPO with reward scale `beta` (method.dpo.beta)."""
    loss_fn = dpo_loss(beta)

    def loss(model: nn.Module, state: DPOState, params, batch: Batch, model_state, rng, mutable):
        # The reference scores the same micro-batch in inference mode, outside the gradient.
        reference = jax.lax.stop_gradient(response_logps(model, {"params": state.ref_params, **model_state},
                                                         batch))  # (B, 2)
        policy, new_model_state = response_logps(model, {"params": params, **model_state}, batch, train=True,
                                                 rngs={"dropout": rng}, mutable=mutable)  # (B, 2)
        losses, rewards = loss_fn(policy, reference)
        return losses.mean(), rewards, new_model_state

    def eval_sums(model: nn.Module, state: DPOState, batch: Batch) -> dict:
        """Sums over a batch of pairs (padding pairs, with no response token, count nothing)."""
        policy = response_logps(model, {"params": state.params, **state.model_state}, batch)  # (B, 2)
        reference = response_logps(model, {"params": state.ref_params, **state.model_state}, batch)  # (B, 2)
        losses, rewards = loss_fn(policy, reference)  # (B,), (B, 2)
        real = (batch["mask"][:, 0].sum(-1) > 0).astype(jnp.float32)  # (B,)
        margin = rewards[:, 0] - rewards[:, 1]
        return {"count": real.sum(), "loss_sum": (losses * real).sum(), "margin_sum": (margin * real).sum(),
                "reward_hits": ((margin > 0) * real).sum(),
                "preference_hits": ((policy[:, 0] > policy[:, 1]) * real).sum(),
                "chosen_reward_sum": (rewards[:, 0] * real).sum(), "rejected_reward_sum": (rewards[:, 1] * real).sum()}

    return Method(
        name="dpo", check_data=check_data, output_width=lambda spec: spec.num_classes, loss=loss,
        train_metrics=lambda rewards, batch, loss_value: {"loss": loss_value, **reward_metrics(rewards)},
        eval_sums=eval_sums, report=lambda totals, data, role: {**metrics_lib.report(totals), **report(totals)},
        log_keys=("loss", "reward_accuracy", "preference_accuracy"), examples="preference", layout=(2,),
        init_state=with_reference, begin=reset_reference)


def report(totals: dict) -> dict:
    """Preference metrics from a split's accumulated eval sums (the loss comes from jtrain/metrics.py report)."""
    n = max(float(totals["count"]), 1.0)
    return {"preference_accuracy": float(totals["preference_hits"]) / n,
            "reward_accuracy": float(totals["reward_hits"]) / n, "reward_margin": float(totals["margin_sum"]) / n,
            "chosen_reward": float(totals["chosen_reward_sum"]) / n,
            "rejected_reward": float(totals["rejected_reward_sum"]) / n}


def check_data(spec) -> None:
    """DPO needs preference pairs (the other way round: jtrain/methods/supervised.py)."""
    if spec.examples != "preference":
        raise ConfigError(f"config key 'method.name': dpo needs preference pairs (data.name=shakespeare_pref, "
                          f"or its data.jsonl files of prompt / chosen / rejected); {spec.name} is not one")
