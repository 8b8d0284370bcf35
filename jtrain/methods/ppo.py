"""Proximal policy optimisation (PPO, `method.name=ppo`): clipped surrogate objective, GAE, value loss, entropy bonus.

Each train step collects a rollout of rl.num_steps steps in env.num_envs environments per agent (jtrain/methods/rl.py),
then makes method.ppo.epochs passes over its transitions in method.ppo.num_minibatches shuffled minibatches, one
optimizer update each (Method.minibatches). One minibatch's loss, with r = pi(a|s) / pi_rollout(a|s) and A the
(standardised) GAE advantage:

    -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) + rl.value_coef * value loss - rl.entropy_coef * entropy

The value loss is 0.5 (V - R)^2 against the GAE returns R, with method.ppo.clip_value the larger of it and that of
the value kept within eps of the rollout's. Logged beside the episode metrics: policy_loss, value_loss, entropy,
approx_kl (mean of (r - 1) - log r) and clip_fraction (|r - 1| > eps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jtrain.errors import ConfigError
from jtrain.methods import rl
from jtrain.methods.base import Batch, Method


def build(config: ml_collections.ConfigDict) -> Method:
    s = rl.Settings.of(config)
    ppo = config.method.ppo
    transitions = s.num_envs * s.num_steps
    if transitions % ppo.num_minibatches:
        raise ConfigError(f"config key 'method.ppo.num_minibatches': {ppo.num_minibatches} does not divide a "
                          f"rollout's {transitions} transitions (env.num_envs x rl.num_steps)")
    eps, epochs, count = ppo.clip_eps, ppo.epochs, ppo.num_minibatches

    def loss_one(params, batch: Batch):
        logp, entropy, value = rl.policy_terms(s, params, batch["obs"], batch["action"])
        log_ratio = logp - batch["logp"]
        ratio = jnp.exp(log_ratio)
        adv = rl.normalized(s, batch["advantage"])
        policy_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - eps, 1 + eps) * adv).mean()
        value_err = (value - batch["returns"]) ** 2
        if ppo.clip_value:
            kept = batch["value"] + jnp.clip(value - batch["value"], -eps, eps)
            value_err = jnp.maximum(value_err, (kept - batch["returns"]) ** 2)
        value_loss = 0.5 * value_err.mean()
        entropy = entropy.mean()
        loss = policy_loss + s.value_coef * value_loss - s.entropy_coef * entropy
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                      "approx_kl": ((ratio - 1) - log_ratio).mean(),
                      "clip_fraction": (jnp.abs(ratio - 1) > eps).astype(jnp.float32).mean()}

    def minibatches(batch: Batch, rng: jax.Array) -> Batch:
        """epochs x num_minibatches minibatches, (U, T*N / num_minibatches, S, ...): a new order every pass."""
        orders = jax.vmap(lambda k: jax.random.permutation(k, transitions))(jax.random.split(rng, epochs))
        index = orders.reshape(epochs * count, transitions // count)
        return jax.tree.map(lambda x: x[index], batch)

    return rl.agent_method("ppo", config, s, loss_one, lambda aux, batch, loss: rl.loss_metrics(aux, loss, s.num_seeds),
                           minibatches=minibatches, updates_per_step=epochs * count, log_keys=("entropy", "approx_kl"))
