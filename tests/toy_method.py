"""A training method from outside jtrain, named `method.name = "tests.toy_method:factory"`: supervised
classification whose objective adds `method.logit_weight` times the mean absolute logit, with a metric of its own
in training (logit_penalty) and in evaluation (mean_abs_logit)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jtrain.methods import supervised


def factory(config):
    base = supervised.build(config)
    weight = config.method.logit_weight

    def loss(model, state, params, batch, model_state, rng, mutable):
        value, logits, new_model_state = base.loss(model, state, params, batch, model_state, rng, mutable)
        return value + weight * jnp.abs(logits).mean(), logits, new_model_state  # logits (B, C)

    def train_metrics(logits, batch, loss_value):
        return {**base.train_metrics(logits, batch, loss_value), "logit_penalty": weight * jnp.abs(logits).mean()}

    def eval_sums(model, state, batch):
        sums = base.eval_sums(model, state, batch)
        logits = model.apply({"params": state.params, **state.model_state}, batch["inputs"], train=False)  # (B, C)
        sums["abs_logit_sum"] = (jnp.abs(logits).mean(-1) * batch["mask"]).sum()
        return sums

    def report(totals, data, role):
        out = base.report({k: v for k, v in totals.items() if k != "abs_logit_sum"}, data, role)
        out["mean_abs_logit"] = float(totals["abs_logit_sum"]) / max(float(totals["count"]), 1.0)
        return out

    return dataclasses.replace(base, name="toy", loss=loss, train_metrics=train_metrics, eval_sums=eval_sums,
                               report=report, log_keys=(*base.log_keys, "logit_penalty", "mean_abs_logit"))


factory.config = {"logit_weight": 0.01}  # becomes method.logit_weight
