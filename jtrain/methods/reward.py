"""Reward models for RLHF: the decoder with a scalar head, trained on preference pairs with the Bradley-Terry loss.

A sequence's reward r is the score head (one Dense unit over the decoder's final normalised states) at its last
response token: the position whose input is the response's last token and whose target is the end of text, so the
score has read the whole of prompt and response. The loss of a pair is

    -log sigmoid(r_chosen - r_rejected - margin)

(`method.reward.margin`, 0 by default, asks for a gap; Llama 2's reward models use one), plus
`method.reward.center` * (r_chosen + r_rejected)^2, which keeps rewards near 0 (the scale a later policy
optimisation sees). The LM head is not part of the model; starting from a language model's checkpoint
(init.pretrained) loads everything else, and its head shows as unused in the load report.

Data: the pairs DPO reads (jtrain/data/preference.py): batches {'inputs', 'targets', 'mask'} (B, 2, T),
[chosen, rejected]. Logged and reported: loss, reward_accuracy (the fraction of pairs with r_chosen > r_rejected:
held-out pairwise accuracy in evaluation), reward_margin, chosen_reward, rejected_reward.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jtrain import metrics as metrics_lib
from jtrain.errors import ConfigError
from jtrain.methods import dpo
from jtrain.methods.base import Batch, Method
from jtrain.models.decoder import Decoder, _init, _zeros


class ScoredDecoder(Decoder):
    """The decoder's layers with a scalar score per position instead of next-token logits: (B, T) float32."""

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool, segment_ids: jax.Array | None = None) -> jax.Array:
        states = super().__call__(tokens, train=train, segment_ids=segment_ids, hidden=True)  # (B, T, E)
        score = nn.Dense(1, dtype=jnp.float32, name="score", kernel_init=_init(0.02, ("embed", None)),
                         bias_init=_zeros((None,)))(states)  # (B, T, 1)
        return score[..., 0]


def wrap(model, data) -> ScoredDecoder:
    """model.name's decoder, rebuilt with the score head."""
    del data
    if not isinstance(model, Decoder):
        raise ConfigError(f"config key 'model.name': a reward model scores with the decoder; "
                          f"{type(model).__name__} is not one")
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.init and f.name not in ("parent", "name")}
    return ScoredDecoder(**fields)


def rewards(model: nn.Module, variables: dict, batch: Batch, train: bool = False, rngs: dict | None = None,
            mutable: list[str] | bool = False):
    """(B, 2) rewards of [chosen, rejected]; with `mutable`, also the updated model state."""
    b, pair, t = batch["inputs"].shape
    out = model.apply(variables, batch["inputs"].reshape(b * pair, t), train=train, rngs=rngs, mutable=mutable)
    scores, new_state = out if mutable is not False else (out, None)  # (2B, T)
    mask = batch["mask"].reshape(b * pair, t) > 0
    last = t - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # (2B,) the last response target (an empty row: T - 1)
    r = jnp.take_along_axis(scores, last[:, None], axis=1)[:, 0].reshape(b, pair)  # (B, 2)
    return (r, new_state) if mutable is not False else r


def build(config: ml_collections.ConfigDict) -> Method:
    return method(config.method.reward.margin, config.method.reward.center)


def method(margin: float = 0.0, center: float = 0.0) -> Method:
    def pair_losses(r: jax.Array) -> jax.Array:
        gap = r[:, 0] - r[:, 1]  # (B,)
        return -jax.nn.log_sigmoid(gap - margin) + center * (r[:, 0] + r[:, 1]) ** 2  # (B,)

    def loss(model: nn.Module, state, params, batch: Batch, model_state, rng, mutable):
        del state
        r, new_model_state = rewards(model, {"params": params, **model_state}, batch, train=True,
                                     rngs={"dropout": rng}, mutable=mutable)
        return pair_losses(r).mean(), r, new_model_state

    def eval_sums(model: nn.Module, state, batch: Batch) -> dict:
        r = rewards(model, {"params": state.params, **state.model_state}, batch)  # (B, 2)
        real = (batch["mask"][:, 0].sum(-1) > 0).astype(jnp.float32)  # padding pairs count nothing
        gap = r[:, 0] - r[:, 1]
        return {"count": real.sum(), "loss_sum": (pair_losses(r) * real).sum(), "margin_sum": (gap * real).sum(),
                "reward_hits": ((gap > 0) * real).sum(), "chosen_reward_sum": (r[:, 0] * real).sum(),
                "rejected_reward_sum": (r[:, 1] * real).sum()}

    def report(totals: dict, data, role: str) -> dict:
        n = max(float(totals["count"]), 1.0)
        return {**metrics_lib.report(totals), "reward_accuracy": float(totals["reward_hits"]) / n,
                "reward_margin": float(totals["margin_sum"]) / n,
                "chosen_reward": float(totals["chosen_reward_sum"]) / n,
                "rejected_reward": float(totals["rejected_reward_sum"]) / n}

    def check_data(spec) -> None:
        if spec.examples != "preference":
            raise ConfigError(f"config key 'method.name': a reward model learns from preference pairs "
                              f"(data.name=shakespeare_pref, or data.jsonl files of prompt / chosen / rejected); "
                              f"{spec.name} is not one")

    return Method(
        name="reward", check_data=check_data, output_width=lambda spec: spec.num_classes, loss=loss,
        train_metrics=lambda r, batch, loss_value: {"loss": loss_value, **dpo.reward_metrics(r)},
        eval_sums=eval_sums, report=report, log_keys=("loss", "reward_accuracy", "reward_margin"),
        examples="preference", layout=(2,), wrap_model=wrap,
        metrics=("loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"))
