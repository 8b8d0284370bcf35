"""What the RL methods (ppo.py, reinforce.py) share: the actor-critic, its state, the rollout, evaluation episodes.

A train step of an RL run is a rollout followed by the update, inside the one jitted step (jtrain/step.py):

    collect       every agent steps its env.num_envs environments rl.num_steps times with its current policy
                  (environments reset where an episode ended), then advantages and returns by GAE
    loss          the method's objective on the rollout's transitions (or on its minibatches: Method.minibatches)

The data source is a placeholder (data.name = "env", jtrain/data/env.py): environments, observations and episode
counters live in the state (`RLState`), so checkpoints hold them and a resumed run continues the very same
episodes. Random draws come from (the run's seed, the step), like dropout keys.

`rl.num_seeds` = S agents train as one program: the parameters (and so the optimizer state) carry a leading seed
axis (`Agents`, nn.vmap), as do the environments, and each function below is written for one agent and vmapped
over seeds. The loss is the sum of the agents' losses, so each agent's gradient is its own. Metrics are the means
over agents, with their spread (`*_std`) and each agent's (`seed_K/...`) when S > 1.

Evaluation plays episodes (val / test splits "greedy:N" or "sampled:N"): return_mean, return_std (over episodes,
all agents), length_mean; with S > 1 also each agent's return_mean and the spread of those means.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jtrain import envs, sharding
from jtrain.errors import ConfigError
from jtrain.methods.base import Batch, Method
from jtrain.state import TrainState

_RESET, _EVAL = 0x7265, 0x6576  # keys of the first episodes and of evaluation, from the run's base key


@flax.struct.dataclass
class RLState(TrainState):
    env: Any  # (S, N, ...) every agent's environment states
    obs: jax.Array  # (S, N, *observation) their current observations
    episode: dict  # (S, N) each: "return" / "length" of the running episodes, "last_return" / "last_length" of the last ended ones


@dataclasses.dataclass(frozen=True)
class Settings:
    """The rl.* / env.* fields the functions here read."""

    env: envs.Env
    num_envs: int
    num_steps: int
    num_seeds: int
    gamma: float
    gae_lambda: float
    normalize_advantages: bool
    value_coef: float
    entropy_coef: float
    hidden_sizes: tuple[int, ...]
    activation: str
    eval_max_steps: int
    frames: int

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, gae_lambda: float | None = None) -> Settings:
        rl = config.rl
        if rl.num_seeds > 1 and config.optim.grad_clip_norm:
            raise ConfigError("config key 'optim.grad_clip_norm': the global norm would span all rl.num_seeds "
                              "agents and couple them; use 0 (or optim.grad_clip_value) with rl.num_seeds > 1")
        return cls(envs.make(config.env.name), config.env.num_envs, rl.num_steps, rl.num_seeds, rl.gamma,
                   rl.gae_lambda if gae_lambda is None else gae_lambda, rl.normalize_advantages, rl.value_coef,
                   rl.entropy_coef, tuple(rl.hidden_sizes), rl.activation, rl.eval_max_steps, rl.frames)

    @property
    def agent(self) -> ActorCritic:
        return ActorCritic(self.env.num_actions, self.hidden_sizes, self.activation)


# ------------------------------------------------------------------------------------------------ networks


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs on the flattened observation: (logits (B, A), value (B,)). Orthogonal
    initialisation, small for the policy head (a near-uniform first policy)."""

    num_actions: int
    hidden_sizes: tuple[int, ...]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)  # (B, D)
        act = jnp.tanh if self.activation == "tanh" else nn.relu

        def mlp(h: jax.Array, out: int, scale: float, name: str) -> jax.Array:
            for i, width in enumerate(self.hidden_sizes):
                h = act(nn.Dense(width, kernel_init=nn.initializers.orthogonal(math.sqrt(2)), name=f"{name}_{i}")(h))
            return nn.Dense(out, kernel_init=nn.initializers.orthogonal(scale), name=f"{name}_out")(h)

        return mlp(x, self.num_actions, 0.01, "actor"), mlp(x, 1, 1.0, "critic")[:, 0]


class Agents(nn.Module):
    """`num_seeds` independent actor-critics, their parameters stacked on a leading seed axis. Takes (S, B, *obs)
    observations, or (B, *obs) given to every agent (the run's init)."""

    num_actions: int
    hidden_sizes: tuple[int, ...]
    activation: str
    num_seeds: int
    obs_ndim: int

    @nn.compact
    def __call__(self, obs: jax.Array, train: bool = False):
        del train
        if obs.ndim == self.obs_ndim + 1:
            obs = jnp.broadcast_to(obs, (self.num_seeds, *obs.shape))
        stacked = nn.vmap(ActorCritic, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=0,
                          out_axes=0, axis_size=self.num_seeds)
        return stacked(self.num_actions, self.hidden_sizes, self.activation, name="agent")(obs)


def apply_agent(s: Settings, params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One agent's (logits, value) from its slice of the stacked params."""
    return s.agent.apply({"params": params["agent"]}, obs)


# ------------------------------------------------------------------------------------------------ state


def init_state(s: Settings) -> Callable[[TrainState], RLState]:
    def init(state: TrainState) -> RLState:
        keys = jax.random.split(jax.random.fold_in(state.rng, _RESET), s.num_seeds * s.num_envs)
        obs, env = jax.vmap(s.env.reset)(keys)
        shape = lambda x: x.reshape(s.num_seeds, s.num_envs, *x.shape[1:])
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(TrainState)}
        zeros = jnp.zeros((s.num_seeds, s.num_envs), jnp.float32)
        counts = jnp.zeros((s.num_seeds, s.num_envs), jnp.int32)
        return RLState(**fields, env=_strong(jax.tree.map(shape, env)), obs=shape(obs),
                       episode={"return": zeros, "length": counts, "last_return": zeros, "last_length": counts})

    return init


def _strong(tree):
    """Weakly typed leaves (gymnax's counters) made strong, so a scan's carry keeps one type."""
    return jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.asarray(x).dtype), tree)


def _pin(tree):
    """(S, N, ...) arrays split over the data-parallel devices by their environment axis (under jit's pins)."""
    return jax.tree.map(lambda x: sharding.constrain(x, (None, "batch") + (None,) * (x.ndim - 2)), tree)


# ------------------------------------------------------------------------------------------------ rollout


def rollout(s: Settings, params, env, obs, episode: dict, key: jax.Array):
    """One agent's rl.num_steps steps in its N environments: ((env, obs, episode) after, transitions (T, N, ...)
    with advantages and returns, its metrics)."""

    def one(carry, step_key):
        env, obs, episode = carry
        action_key, env_key = jax.random.split(step_key)
        logits, value = apply_agent(s, params, obs)
        action = jax.random.categorical(action_key, logits)  # (N,)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
        next_obs, env, reward, done = jax.vmap(lambda k, e, a: envs.step_autoreset(s.env, k, e, a))(
            jax.random.split(env_key, s.num_envs), env, action)
        ret, length = episode["return"] + reward, episode["length"] + 1
        episode = {"return": jnp.where(done, 0.0, ret), "length": jnp.where(done, 0, length),
                   "last_return": jnp.where(done, ret, episode["last_return"]),
                   "last_length": jnp.where(done, length, episode["last_length"])}
        transition = {"obs": obs, "action": action, "logp": logp, "value": value, "reward": reward, "done": done,
                      "ended_return": jnp.where(done, ret, 0.0), "ended_length": jnp.where(done, length, 0)}
        return (_strong(env), next_obs, episode), transition

    (env, obs, episode), traj = jax.lax.scan(one, (env, obs, episode), jax.random.split(key, s.num_steps))
    _, last_value = apply_agent(s, params, obs)
    advantage = gae(traj["reward"], traj["value"], traj["done"], last_value, s.gamma, s.gae_lambda)
    returns = advantage + traj["value"]
    ended = traj["done"].sum()
    # Episodes that ended in this rollout; before the first ends, the running ones' (0 at the start).
    mean_ended = lambda total, last: jnp.where(ended > 0, total.sum() / jnp.maximum(ended, 1), last.mean())
    metrics = {
        "episode_return": mean_ended(traj["ended_return"], episode["last_return"]),
        "episode_length": mean_ended(traj["ended_length"].astype(jnp.float32), episode["last_length"].astype(jnp.float32)),
        "episodes": ended.astype(jnp.float32),
        "explained_variance": explained_variance(traj["value"], returns),
    }
    keep = ("obs", "action", "logp", "value")
    return (env, obs, episode), {**{k: traj[k] for k in keep}, "advantage": advantage, "returns": returns}, metrics


def gae(reward: jax.Array, value: jax.Array, done: jax.Array, last_value: jax.Array, gamma: float,
        lam: float) -> jax.Array:
    """Generalised advantage estimates (T, N): a backward scan of delta_t + gamma * lambda * A_{t+1}, cut where an
    episode ended (done at t: no value after it). lambda = 1 gives discounted returns minus the values."""

    def back(carry, xs):
        next_adv, next_value = carry
        r, v, d = xs
        live = 1.0 - d.astype(jnp.float32)
        delta = r + gamma * next_value * live - v
        adv = delta + gamma * lam * live * next_adv
        return (adv, v), adv

    _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), (reward, value, done), reverse=True)
    return adv


def explained_variance(value: jax.Array, returns: jax.Array) -> jax.Array:
    """1 - Var(returns - value) / Var(returns): 1 = the critic predicts the returns, 0 = no better than their mean."""
    var = returns.var()
    return jnp.where(var > 0, 1.0 - (returns - value).var() / jnp.maximum(var, 1e-12), 0.0)


def collect(s: Settings) -> Callable:
    """Method.collect: every agent's rollout; the batch is its transitions, (T * N, S, ...) per key."""

    def fn(model, state: RLState, batch: Batch, rng: jax.Array):
        del model, batch  # the placeholder batch (jtrain/data/env.py)
        keys = jax.random.split(rng, s.num_seeds)
        (env, obs, episode), traj, metrics = jax.vmap(lambda p, e, o, ep, k: rollout(s, p, e, o, ep, k))(
            state.params, state.env, state.obs, state.episode, keys)
        state = state.replace(env=_pin(_strong(env)), obs=_pin(obs), episode=_pin(episode))
        flat = lambda x: jnp.moveaxis(x.reshape(s.num_seeds, -1, *x.shape[3:]), 0, 1)  # (S, T, N, ...) -> (T*N, S, ...)
        return state, jax.tree.map(flat, traj), seed_metrics(metrics, s.num_seeds)

    return fn


def seed_metrics(per_seed: dict, num_seeds: int) -> dict:
    """(S,) metrics -> their means; with several agents also their std over agents and each agent's."""
    out = {k: v.mean() for k, v in per_seed.items()}
    if num_seeds > 1:
        for k, v in per_seed.items():
            out[f"{k}_std"] = v.std()
            out.update({f"seed_{i}/{k}": v[i] for i in range(num_seeds)})
    return out


def per_agent_loss(s: Settings, loss_one: Callable) -> Callable:
    """Method.loss from one agent's `loss_one(params, batch) -> (loss, {name: ()})`: the sum over agents (each
    agent's gradient is its own), with the per-agent metrics as aux (S,)."""

    def loss(model, state, params, batch: Batch, model_state, rng, mutable):
        del model, state, rng, mutable
        losses, aux = jax.vmap(loss_one, in_axes=(0, 1))(params, batch)  # batch: (B, S, ...)
        return losses.sum(), aux, model_state

    return loss


def policy_terms(s: Settings, params, obs: jax.Array, action: jax.Array):
    """(log-probabilities of `action` (B,), entropies (B,), values (B,)) of one agent."""
    logits, value = apply_agent(s, params, obs)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, action[:, None], axis=-1)[:, 0]
    entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
    return logp, entropy, value


def normalized(s: Settings, advantage: jax.Array) -> jax.Array:
    if not s.normalize_advantages:
        return advantage
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


# ------------------------------------------------------------------------------------------------ evaluation


def play(s: Settings, params, keys: jax.Array, greedy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One agent plays one episode per key (E,) until each ends or rl.eval_max_steps: (returns (E,), lengths (E,)).
    Greedy episodes take the most likely action, the others draw from the policy; every draw is a function of the
    episode's key and the step."""
    obs, env = jax.vmap(lambda k: s.env.reset(jax.random.fold_in(k, 0)))(keys)
    e = keys.shape[0]

    def running(carry):
        t, *_, done = carry
        return (t < s.eval_max_steps) & ~done.all()

    def body(carry):
        t, obs, env, ret, length, done = carry
        logits, _ = apply_agent(s, params, obs)
        step_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, t + 1)))(keys)  # (E, 2)
        drawn = jax.vmap(jax.random.categorical)(step_keys[:, 0], logits)
        action = jnp.where(greedy, jnp.argmax(logits, -1), drawn)
        obs, env, reward, ended = jax.vmap(s.env.step)(step_keys[:, 1], env, action)
        live = ~done
        return t + 1, obs, _strong(env), ret + reward * live, length + live, done | ended

    start = (jnp.zeros((), jnp.int32), obs, _strong(env), jnp.zeros((e,)), jnp.zeros((e,), jnp.int32),
             jnp.zeros((e,), bool))
    _, _, _, ret, length, _ = jax.lax.while_loop(running, body, start)
    return ret, length


def episode_keys(state, episodes: jax.Array) -> jax.Array:
    base = jax.random.fold_in(state.rng, _EVAL)  # the run's base key: the same episodes at every step
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(episodes)


def eval_sums(s: Settings) -> Callable:
    """Method.eval_sums: every agent plays the batch's episodes; per-agent sums (S,), padding masked."""

    def fn(model, state, batch: Batch) -> dict:
        del model
        keys = episode_keys(state, batch["episode"])
        ret, length = jax.vmap(lambda p: play(s, p, keys, batch["greedy"]))(state.params)  # (S, E)
        m = batch["mask"].astype(jnp.float32)
        return {"count": m.sum(), "return_sum": (ret * m).sum(-1), "return_sq_sum": (ret ** 2 * m).sum(-1),
                "length_sum": (length * m).sum(-1)}

    return fn


def report(totals: dict, data, role: str) -> dict:
    """Episode metrics of a split from its accumulated sums."""
    del data, role
    n = max(float(totals["count"]), 1.0)
    sums, sq = np.atleast_1d(totals["return_sum"]), np.atleast_1d(totals["return_sq_sum"])
    seeds = len(sums)
    mean = float(sums.sum() / (n * seeds))
    out = {"return_mean": mean, "return_std": float(np.sqrt(max(sq.sum() / (n * seeds) - mean ** 2, 0.0))),
           "length_mean": float(np.atleast_1d(totals["length_sum"]).sum() / (n * seeds)), "episodes": int(n)}
    if seeds > 1:
        per_seed = sums / n
        out["seeds_return_std"] = float(per_seed.std())
        out.update({f"seed_{i}/return_mean": float(v) for i, v in enumerate(per_seed)})
    return out


def pictures(s: Settings) -> Callable:
    """Method.pictures: frames of one greedy episode of the first agent (the split's first episode), evenly spaced
    over it: {"episode": (1, F, H, W, 3)}."""

    def fn(model, state, batch: Batch, key) -> dict:
        del model, key
        params = jax.tree.map(lambda x: x[0], state.params)
        episode_key = episode_keys(state, batch["episode"][:1])[0]
        obs, env = s.env.reset(jax.random.fold_in(episode_key, 0))

        def one(carry, t):
            obs, env, done = carry
            logits, _ = apply_agent(s, params, obs[None])
            step_key = jax.random.split(jax.random.fold_in(episode_key, t + 1))[1]
            next_obs, next_env, _, ended = s.env.step(step_key, env, jnp.argmax(logits[0]))
            return (next_obs, _strong(next_env), done | ended), (env, done)

        _, (states, done) = jax.lax.scan(one, (obs, _strong(env), jnp.zeros((), bool)),
                                         jnp.arange(s.eval_max_steps))
        length = jnp.maximum((~done).sum(), 1)  # states before the episode ended
        index = jnp.round(jnp.linspace(0.0, 1.0, s.frames) * (length - 1)).astype(jnp.int32)
        frames = jax.vmap(s.env.render)(jax.tree.map(lambda x: x[index], states))  # (F, H, W, 3)
        return {"episode": frames[None]}

    return fn


# ------------------------------------------------------------------------------------------------ the record


def agent_method(name: str, config: ml_collections.ConfigDict, s: Settings, loss_one: Callable,
                 train_metrics: Callable, minibatches: Callable | None = None, updates_per_step: int = 1,
                 log_keys: tuple[str, ...] = ()) -> Method:
    """The Method of an agent whose update is `loss_one` (one agent's loss on a batch of transitions)."""
    if not config.train.steps:  # train.epochs counts passes over a dataset, which an environment is not
        raise ConfigError(f"config key 'train.steps': {name} trains for a number of steps (a rollout and its update "
                          f"each); set train.steps (train.epochs does not apply)")
    env_steps = s.num_seeds * s.num_envs * s.num_steps  # environment steps of one train step, all agents

    def check_data(spec) -> None:
        if spec.examples != "env":
            raise ConfigError(f"config key 'data.name': {name} trains in an environment: set data.name=env and "
                              f"env.name (e.g. gymnax:CartPole-v1), not {spec.name}")
        if spec.num_classes == 0:
            raise ConfigError(f"config key 'env.name': {s.env.name} has a {s.env.action_space} action space; {name} "
                              f"supports discrete actions only")

    def check_batch(global_batch: int, data_parallel: int) -> None:
        del global_batch  # the placeholder's
        if s.num_envs % data_parallel:
            raise ConfigError(f"config key 'env.num_envs': {s.num_envs} environments are not divisible by the "
                              f"data-parallel size {data_parallel} (mesh.data x mesh.fsdp)")

    def wrap_model(model, data):
        del model  # the agent's own networks (rl.hidden_sizes), not model.name's
        return Agents(s.env.num_actions, s.hidden_sizes, s.activation, s.num_seeds, len(data.spec.input_shape))

    return Method(
        name=name, check_data=check_data, output_width=lambda spec: max(spec.num_classes, 1),
        loss=per_agent_loss(s, loss_one), train_metrics=train_metrics, eval_sums=eval_sums(s), report=report,
        log_keys=("episode_return", "episode_length", *log_keys, "return_mean"),
        metrics=("return_mean", "return_std", "length_mean"), init_state=init_state(s), wrap_model=wrap_model,
        check_batch=check_batch, pictures=pictures(s) if s.env.render and s.frames else None, collect=collect(s),
        minibatches=minibatches, updates_per_step=updates_per_step,
        rates=lambda steps_per_sec: {"env_steps_per_sec": steps_per_sec * env_steps,
                                     "examples_per_sec": steps_per_sec * env_steps})


def loss_metrics(aux: dict, loss: jax.Array, num_seeds: int) -> dict:
    """Method.train_metrics of the agents: the per-agent losses' aux (S,) averaged; `loss` per agent."""
    return {"loss": loss / num_seeds, **{k: v.mean() for k, v in aux.items()}}
