"""REINFORCE with a learned baseline (`method.name=reinforce`): the policy gradient of discounted returns.

Each train step collects a rollout (jtrain/methods/rl.py) and makes one update on all its transitions:

    -mean(log pi(a|s) (G - V(s))) + rl.value_coef * 0.5 mean((V(s) - G)^2) - rl.entropy_coef * entropy

G is the discounted return from each step to the episode's end (rl.gamma), the rollout's last value standing for
the rest of an episode still running (GAE with lambda = 1); the critic V is the baseline, its advantage
G - V (standardised with rl.normalize_advantages) carries no gradient into the critic.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jtrain.methods import rl
from jtrain.methods.base import Batch, Method


def build(config: ml_collections.ConfigDict) -> Method:
    s = rl.Settings.of(config, gae_lambda=1.0)

    def loss_one(params, batch: Batch):
        logp, entropy, value = rl.policy_terms(s, params, batch["obs"], batch["action"])
        adv = rl.normalized(s, batch["advantage"])  # the rollout's G - V: no gradient into the critic
        policy_loss = -(logp * adv).mean()
        value_loss = 0.5 * ((value - batch["returns"]) ** 2).mean()
        entropy = entropy.mean()
        loss = policy_loss + s.value_coef * value_loss - s.entropy_coef * entropy
        # No approx_kl: the one update's loss sees the rollout's own params, where it is 0 by construction.
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

    return rl.agent_method("reinforce", config, s, loss_one,
                           lambda aux, batch, loss: rl.loss_metrics(aux, loss, s.num_seeds), log_keys=("entropy",))
