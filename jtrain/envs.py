"""Environments for reinforcement learning (`env.name`): pure JAX reset / step functions of one environment.

    gymnax:NAME                gymnax's environment NAME (CartPole-v1, Acrobot-v1, MountainCar-v0, ...)
    package.module:make_env    your own: make_env() returns an `Env` built from your pure functions

An `Env` is one environment, unbatched; the methods vectorise it over `env.num_envs` with `jax.vmap` and reset an
environment the step after its episode ends (`step_autoreset`). Everything here runs inside jit.

    reset(key) -> (obs, state)
    step(key, state, action) -> (obs, state, reward (), done ())   done: the episode ended with this step
    num_actions      discrete actions 0 .. n-1; 0 = not discrete (`action_space` says what it is)
    render(state) -> (H, W, 3) float image in [0, 1], or None (jnp, so a whole episode draws inside jit)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jtrain.errors import ConfigError

GYMNAX = "gymnax:"


@dataclasses.dataclass(frozen=True)
class Env:
    reset: Callable[[jax.Array], tuple[jax.Array, Any]]
    step: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any, jax.Array, jax.Array]]
    num_actions: int  # discrete actions; 0 = another action space
    action_space: str = ""  # shown in errors, e.g. "Discrete(2)" or "Box(shape=(1,))"
    render: Callable[[Any], jax.Array] | None = None
    name: str = ""

    @functools.cached_property
    def observation_shape(self) -> tuple[int, ...]:
        obs, _ = jax.eval_shape(self.reset, jax.random.key(0))
        return tuple(obs.shape)


@functools.lru_cache(maxsize=None)
def make(name: str) -> Env:
    """The environment `env.name` names; a mistake is one ConfigError naming the key."""
    if not name:
        raise ConfigError("config key 'env.name': an RL method needs an environment, e.g. gymnax:CartPole-v1 or "
                          "package.module:make_env")
    if name.startswith(GYMNAX):
        return _gymnax(name[len(GYMNAX):])
    if ":" not in name:
        raise ConfigError(f"config key 'env.name': unknown environment {name!r}; name a gymnax one as "
                          f"gymnax:{name}, or your own as package.module:make_env")
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config key 'env.name': cannot import {name!r}: {type(e).__name__}: {e}") from e
    env = factory()
    if not isinstance(env, Env):
        raise ConfigError(f"config key 'env.name': {name} returned {type(env).__name__}, not a jtrain.envs.Env")
    return dataclasses.replace(env, name=env.name or name)


def _gymnax(name: str) -> Env:
    import gymnax  # imported by RL runs only (it loads matplotlib and seaborn)

    if name not in gymnax.registered_envs:
        close = difflib.get_close_matches(name, gymnax.registered_envs, n=1)
        hint = f" (did you mean 'gymnax:{close[0]}'?)" if close else ""
        raise ConfigError(f"config key 'env.name': unknown gymnax environment {name!r}{hint}")
    env, params = gymnax.make(name)
    space = env.action_space(params)
    discrete = hasattr(space, "n")
    described = f"Discrete({space.n})" if discrete else f"{type(space).__name__}(shape={tuple(space.shape)})"

    def reset(key):
        return env.reset_env(key, params)

    def step(key, state, action):
        obs, state, reward, terminated, _ = env.step_env(key, state, action, params)
        # An episode also ends at the environment's step limit (CartPole-v1: 500); the agents treat it as an end.
        done = jnp.logical_or(terminated, env.is_truncated(state, params))
        return obs, state, jnp.asarray(reward, jnp.float32), jnp.asarray(done, jnp.bool_)

    return Env(reset, step, int(space.n) if discrete else 0, described, RENDERERS.get(name), GYMNAX + name)


def step_autoreset(env: Env, key: jax.Array, state, action):
    """`env.step`, then a fresh episode where it ended: the returned obs / state are the next episode's first."""
    step_key, reset_key = jax.random.split(key)
    obs, state, reward, done = env.step(step_key, state, action)
    obs0, state0 = env.reset(reset_key)
    pick = lambda fresh, old: jnp.where(jnp.reshape(done, done.shape + (1,) * (old.ndim - done.ndim)), fresh, old)
    return pick(obs0, obs), jax.tree.map(pick, state0, state), reward, done


# ------------------------------------------------------------------------------------------------ rendering


def cartpole_frame(state, height: int = 72, width: int = 96) -> jax.Array:
    """CartPole drawn from its state (x, theta), (H, W, 3) in [0, 1]: a view 2.4 wide that follows the cart, over
    a track marked every 0.5 (so the cart's motion shows) with the episode's bounds |x| = 2.4 in red, and the pole
    at its full length (1.0, twice gymnax's half-length)."""
    scale = width / 2.4  # pixels per unit
    x, theta = state.x, state.theta
    px = x + (jnp.arange(width) + 0.5) / scale - 1.2  # (W,) world x of each column
    py = (height - jnp.arange(height) - 0.5) / scale  # (H,) world y of each row, 0 at the bottom
    wx, wy = jnp.meshgrid(px, py)  # (H, W)
    half_px = 0.5 / scale
    track = jnp.abs(wy - 0.15) < 1.5 * half_px
    ticks = (jnp.abs(jnp.remainder(wx + 0.25, 0.5) - 0.25) < 1.5 * half_px) & (jnp.abs(wy - 0.1) < 0.06)
    bounds = (jnp.abs(jnp.abs(wx) - 2.4) < 1.5 * half_px) & (wy < 0.5)
    cart = (jnp.abs(wx - x) < 0.25) & (jnp.abs(wy - 0.28) < 0.1)
    # The pole: points within 0.04 of the segment from the cart's top along theta (0 = upright).
    ax, ay = x, 0.38
    dx, dy = jnp.sin(theta), jnp.cos(theta)
    along = jnp.clip((wx - ax) * dx + (wy - ay) * dy, 0.0, 1.0)
    pole = jnp.hypot(wx - (ax + along * dx), wy - (ay + along * dy)) < 0.04
    image = jnp.ones((height, width, 3))
    for mask, rgb in ((track | ticks, (0.5, 0.5, 0.5)), (bounds, (0.8, 0.1, 0.1)), (cart, (0.15, 0.25, 0.55)),
                      (pole, (0.85, 0.45, 0.15))):
        image = jnp.where(mask[..., None], jnp.asarray(rgb, jnp.float32), image)
    return image


RENDERERS: dict[str, Callable[[Any], jax.Array]] = {"CartPole-v1": cartpole_frame}
