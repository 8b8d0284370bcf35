"""Supervised learning: a per-example loss of the model's outputs against the batch's targets (`loss.name`).

The loss's task (jtrain/losses.py) picks the model's output width, the training metrics (accuracy for
classifiers), the eval sums and the report: confusion-matrix metrics, ROC for binary, MSE / MAE / R^2 for
regression, and for sequences the language-model metrics of jtrain/lm_metrics.py. Batches are
{'inputs', 'targets'} plus 'mask' in evaluation (padding) and for sequences (real tokens; SFT masks prompts).
"""

from __future__ import annotations

import jax
import ml_collections

from jtrain import lm_metrics, losses
from jtrain import metrics as metrics_lib
from jtrain.errors import ConfigError
from jtrain.losses import LossFn, token_mean
from jtrain.methods.base import Batch, Method

LOG_KEYS = ("loss", "accuracy", "f1_macro", "mse", "bits_per_char")


def build(config: ml_collections.ConfigDict) -> Method:
    loss_fn, task = losses.build(config.loss)
    return method(loss_fn, task, config.eval.top_k, config.loss.name)


def method(loss_fn: LossFn, task: str, top_k: int = 0, loss_name: str = "") -> Method:
    """Supervised learning with the per-example `loss_fn` of `task`; `top_k` > 0 adds top-k accuracy."""
    sums_fn = metrics_lib.sums_fn(task, top_k)  # the task picks the metrics
    loss_name = loss_name or getattr(loss_fn, "__name__", "the loss")

    def check_data(spec) -> None:
        if spec.examples == "env":
            raise ConfigError(f"config key 'method.name': data.name=env ({spec.name}) trains an agent: method.name=ppo "
                              f"or reinforce, not supervised {loss_name}")
        if spec.examples == "preference":
            raise ConfigError(f"config key 'method.name': {spec.name} holds preference pairs, which train with "
                              f"method.name=dpo, not supervised {loss_name}")
        losses.check_data(task, loss_name, spec.target_dtype, spec.num_classes, spec.name)
        if top_k and task in ("classification", "binary") and top_k >= spec.num_classes:
            raise ConfigError(f"config key 'eval.top_k': {top_k} of {spec.num_classes} classes is always right; use "
                              f"a k below {spec.num_classes}, or 0")

    def loss(model, state, params, batch: Batch, model_state, rng, mutable):
        del state  # nothing beside the params
        variables = {"params": params, **model_state}
        outputs, new_model_state = model.apply(variables, batch["inputs"], train=True, rngs={"dropout": rng},
                                               mutable=mutable, **_packing(batch))  # outputs (B, num_outputs)
        if task == "sequence":  # the mean over real tokens: the mask drops padding (and SFT prompts)
            value = token_mean(loss_fn(outputs, batch["targets"], batch["mask"]), batch["mask"])
        else:
            value = loss_fn(outputs, batch["targets"]).mean()
        return value, outputs, new_model_state

    def train_metrics(outputs: jax.Array, batch: Batch, loss_value: jax.Array) -> dict:
        return metrics_lib.train_metrics(outputs, batch["targets"], loss_value, task)

    def eval_sums(model, state, batch: Batch) -> dict:
        variables = {"params": state.params, **state.model_state}
        outputs = model.apply(variables, batch["inputs"], train=False, **_packing(batch))  # (B, num_outputs)
        if task == "sequence" and batch["mask"].ndim == 2:  # (B, T) token mask: per-row means over real tokens
            per_example = loss_fn(outputs, batch["targets"], batch["mask"])  # (B,)
        else:
            per_example = loss_fn(outputs, batch["targets"])  # (B,)
        return sums_fn(outputs, batch["targets"], batch["mask"], per_example)

    def report(totals: dict, data, role: str) -> dict:
        out = metrics_lib.report(totals, data.spec.class_names, target_scale=data.target_std)
        if task == "sequence":  # nats and bits per token and character, perplexity
            out.update(lm_metrics.split_report(data, totals, role))
        return out

    def probabilities(model, state, batch: Batch, rng):
        variables = {"params": state.params, **state.model_state}
        if rng is None:
            outputs = model.apply(variables, batch["inputs"], train=False)
        else:  # dropout on; the batch statistics this pass computes are dropped
            outputs, _ = model.apply(variables, batch["inputs"], train=True, rngs={"dropout": rng},
                                     mutable=list(state.model_state))
        outputs = outputs.astype(jax.numpy.float32)
        if task == "binary":  # one logit: the positive class
            p1 = jax.nn.sigmoid(outputs[:, 0])
            return jax.numpy.stack([1 - p1, p1], axis=1)
        return jax.nn.softmax(outputs, axis=-1)

    return Method(name="supervised", check_data=check_data,
                  output_width=lambda spec: losses.output_width(task, spec.num_classes), loss=loss,
                  train_metrics=train_metrics, eval_sums=eval_sums, report=report, log_keys=LOG_KEYS, task=task,
                  metrics=metrics_lib.reported(task, top_k),
                  probabilities=probabilities if task in ("classification", "binary") else None)


def _packing(batch: Batch) -> dict:
    """Packed sequences (SFT, jtrain/data/sft.py) carry segment_ids for the decoder; other batches nothing."""
    return {"segment_ids": batch["segment_ids"]} if "segment_ids" in batch else {}
