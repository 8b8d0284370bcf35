"""An environment of one's own for tests/test_rl.py (env.name=tests.toy_env:make_env): match the sign.

Each step shows +1 or -1; action 1 matches +1, action 0 matches -1, and a match earns 1. Episodes last 8 steps, so a
random policy returns 4 on average and a perfect one 8."""

import jax
import jax.numpy as jnp

from jtrain.envs import Env

LENGTH = 8


def make_env() -> Env:
    def draw(key):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)

    def reset(key):
        sign = draw(key)
        return sign[None], {"sign": sign, "t": jnp.zeros((), jnp.int32)}

    def step(key, state, action):
        reward = (action == (state["sign"] > 0)).astype(jnp.float32)
        t = state["t"] + 1
        sign = draw(key)
        return sign[None], {"sign": sign, "t": t}, reward, t >= LENGTH

    return Env(reset, step, num_actions=2, action_space="Discrete(2)")

