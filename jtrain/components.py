"""Build every piece of a run from its config, each from its own section, in one place.

`build(config)` returns a `Run`: mesh, data, model, training method, optimizer and schedule, the jitted init /
train / eval functions and the shardings of the state. `jtrain.train` and `jtrain.evaluate` both start here, so a
workdir's config rebuilds exactly the run that wrote it.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from jtrain import jax_cache
from jtrain import data as data_lib
from jtrain import losses, methods, microbatch, models, optim
from jtrain import mesh as mesh_lib
from jtrain import sharding
from jtrain.config import validate
from jtrain.errors import ConfigError
from jtrain.state import TrainState, init_state
from jtrain.step import all_finite, make_eval_step, make_train_step


@dataclasses.dataclass
class Run:
    config: ml_collections.ConfigDict
    mesh: Mesh
    data: data_lib.Source  # the data source (jtrain/data/source.py)
    model: Any
    method: methods.Method  # the way of training: loss, extra state, metrics (jtrain/methods)
    task: str  # the supervised loss's task (jtrain/losses.py), "" for other methods
    total_steps: int
    schedule: optax.Schedule
    state_shardings: Any  # pytree of NamedSharding, same structure as TrainState
    abstract_state: Any  # pytree of ShapeDtypeStruct
    init: Callable[[], TrainState]  # jitted, creates the state directly sharded
    # n -> the loop's jitted call of n steps (packed_call) on the state as flat arrays: (arrays, batch) ->
    # (arrays, (M,) metrics), or with train.steps_per_call > 1 (arrays, chunk (T, B, ...), index) -> (arrays,
    # (n, M)); args from jtrain/feed.py.
    train_call: Callable[[int], Callable]
    state_codec: FlatState  # TrainState <-> the flat arrays train_call takes
    metric_names: list[str]  # the M columns of train_call's packed metrics, known once it has been traced
    params_finite: Callable  # jitted state -> () bool, checked before a save (jtrain/step.py apply_update)
    eval_step: Callable  # jitted (state, batch) -> sums
    # Applied once to the state training starts from (scratch or init.pretrained, not a resume): the method's
    # Method.begin (DPO freezes those params as its reference); most start from the state as it is.
    begin: Callable[[TrainState], TrainState] = lambda state: state

    def put_batch(self, local_batch: dict, stacked: bool = False) -> dict:
        """Process-local NumPy batch -> global arrays sharded over the batch axes (of each step, when `stacked`)."""
        sharding = mesh_lib.batch_sharding(self.mesh, stacked)
        if jax.process_count() == 1:  # local is global: one device_put of the dict: less host time a chunk
            return jax.device_put(local_batch, sharding)
        return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


@dataclasses.dataclass(frozen=True)
class FlatState:
    """The TrainState as the loop's call passes it: its leaves in a flat list, typed PRNG keys as their raw
    uint32 data. Flattening the TrainState (a flax dataclass holding optax named tuples) into every call and
    rebuilding it, key array included, from the outputs costs more than a tiny model's step (BENCHMARKS.md).
    Works on arrays and inside jit alike."""

    treedef: Any
    is_key: tuple[bool, ...]  # per leaf
    key_impl: Any  # the keys' PRNG implementation (the run's seed key's)

    @classmethod
    def of(cls, abstract_state, seed_key: jax.Array) -> FlatState:
        leaves, treedef = jax.tree.flatten(abstract_state)
        is_key = tuple(jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) for x in leaves)
        assert all(x.dtype == seed_key.dtype for x, k in zip(leaves, is_key) if k), "keys of another PRNG impl"
        return cls(treedef, is_key, jax.random.key_impl(seed_key))

    def flatten(self, state) -> list[jax.Array]:
        leaves = self.treedef.flatten_up_to(state)
        return [jax.random.key_data(x) if k else x for x, k in zip(leaves, self.is_key)]

    def unflatten(self, arrays: list) -> TrainState:
        leaves = [jax.random.wrap_key_data(a, impl=self.key_impl) if k else a for a, k in zip(arrays, self.is_key)]
        return self.treedef.unflatten(leaves)


def packed_call(train_step: Callable, steps: int, scan: bool, metric_names: list[str], codec: FlatState,
                unroll: int = 1) -> Callable:
    """The loop's jitted call: one step on a batch (B, ...), or with `scan` (train.steps_per_call > 1) `steps`
    steps on consecutive batches of a chunk already on the device, sliced out inside the call (jtrain/feed.py):
    a small model's step takes less time than Python needs to launch it, and one dispatch per k steps hides that.

    The state goes in and comes out as flat arrays (`codec`, FlatState), cheaper to dispatch than the TrainState
    pytree. The step's scalar metrics come back packed in one float32 array, (M,) or (steps, M) with `scan`,
    columns in the order of `metric_names` (filled in when the call is traced): the loop fetches one buffer per
    call instead of one per metric.

    `unroll` steps of the scan go in each iteration of its loop (train.scan_unroll). XLA's CPU convolutions run
    far slower inside a loop, so a CNN gains from unrolling, while a tiny MLP runs slower unrolled and compiles
    longer (BENCHMARKS.md)."""

    def pack(metrics: dict) -> jax.Array:
        metric_names[:] = sorted(metrics)
        return jnp.stack([metrics[k].astype(jnp.float32) for k in metric_names], axis=-1)

    def call(arrays, batch):  # batch: (B, ...) per key
        state, metrics = train_step(codec.unflatten(arrays), batch)  # () each
        return codec.flatten(state), pack(metrics)

    def scanned(arrays, chunk, index):  # chunk: (T, B, ...) per key; index: () int32, the call's first batch
        batches = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, index, steps), chunk)  # (steps, B, ...)
        state, metrics = jax.lax.scan(train_step, codec.unflatten(arrays), batches, unroll=unroll)  # (steps,) each
        return codec.flatten(state), pack(metrics)

    return scanned if scan else call


def total_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    if config.train.steps:
        return config.train.steps
    if config.train.epochs:
        return max(1, math.ceil(config.train.epochs * num_train / config.data.batch_size))
    raise ConfigError("config key 'train.steps': set train.steps or train.epochs (both are 0)")


def build(config: ml_collections.ConfigDict, data: data_lib.Source | None = None, devices=None,
          fitted: dict | None = None) -> Run:
    """`data` and `devices` default to the source `config.data` names and all devices; a source given in Python
    (jtrain.train(..., data=source)) comes in as `data`, and `jtrain plan` passes a shape-only one and the
    devices of a topology this machine does not have (jtrain/plan.py). `fitted` is the preparation a run of
    one's own data saved (jtrain/data/own.py), applied instead of fitting again."""
    validate(config)
    jax_cache.enable()  # before the first compilation: a re-run loads the programs compiled before
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    mesh_lib.check_batch(config.data.batch_size, mesh, "data.batch_size")
    mesh_lib.check_batch(config.data.eval_batch_size or config.data.batch_size, mesh, "data.eval_batch_size")
    data = data_lib.load(config.data, fitted, config.env) if data is None else data_lib.bind(data, config.data, fitted)
    method = methods.build(config)
    method.check_data(data.spec)
    if config.eval.best_metric and method.metrics and config.eval.best_metric not in method.metrics:
        raise ConfigError(f"config key 'eval.best_metric': {config.eval.best_metric!r} is not a val metric of this "
                          f"run; available: {', '.join(sorted(method.metrics))}")
    if data.num_train and config.data.batch_size > data.num_train:
        raise ConfigError(f"config key 'data.batch_size': {config.data.batch_size} exceeds the {data.num_train} "
                          f"training examples of {data.spec.name}")
    model = models.build(config.model, method.output_width(data.spec))
    if method.wrap_model:  # the method's own module around the family's network (e.g. an encoder and a decoder)
        model = method.wrap_model(model, data)
    if method.check_batch:
        method.check_batch(config.data.batch_size, mesh_lib.data_parallel_size(mesh))
    steps = total_steps(config, data.num_train)
    # Epoch-valued schedule fields (schedule.unit="epochs") become steps with the exact steps per epoch.
    tx, schedule = optim.build(config.optim, config.schedule, steps,
                               steps_per_epoch=fractions.Fraction(data.num_train, config.data.batch_size),
                               updates_per_step=method.updates_per_step)
    microbatch.check(config.data.batch_size, config.optim.accumulate_steps, mesh_lib.data_parallel_size(mesh))

    # Shapes first: trace init abstractly, derive shardings, then create the state directly sharded.
    sample = jnp.zeros((1, *data.spec.input_shape), jnp.float32)  # (1, H, W, C)
    rng = jax.random.key(config.seed)

    def init() -> TrainState:
        state = init_state(model, tx, rng, sample)
        return method.init_state(state) if method.init_state else state  # e.g. DPO's frozen reference

    abstract_state = jax.eval_shape(init)
    shardings = mesh_lib.state_shardings(abstract_state, mesh, config.mesh, sharding.logical_axes(model, sample))
    batch_sharding = mesh_lib.batch_sharding(mesh)
    replicated = mesh_lib.replicated(mesh)
    rules = sharding.parse_rules(config.mesh.rules)  # the steps pin activations by the same rules (sharding.constrain)
    step_options = dict(penalty=losses.penalty(config.loss), accumulate_steps=config.optim.accumulate_steps,
                        grad_norm=config.train.log_grad_norm)
    step_fn = make_train_step(model, tx, method, schedule, config.train.on_nonfinite, **step_options)
    decode = getattr(data, "target_decode", None)  # e.g. a log target back to its units for the metrics
    eval_fn = make_eval_step(model, method, decode() if decode and method.task == "regression" else None)
    train_step = sharding.pinned(step_fn, mesh, rules)
    chunk_sharding = mesh_lib.batch_sharding(mesh, stacked=True)

    metric_names: list[str] = []
    codec = FlatState.of(abstract_state, rng)
    leaf_shardings = jax.tree.leaves(shardings)  # a key's sharding serves its raw data (trailing dims unsharded)

    @functools.lru_cache(maxsize=None)  # one compiled call per length: k, and a shorter final call's
    def train_call(steps: int) -> Callable:
        scan = config.train.steps_per_call > 1
        batches = (chunk_sharding, replicated) if scan else (batch_sharding,)
        return jax.jit(packed_call(train_step, steps, scan, metric_names, codec, config.train.scan_unroll),
                       in_shardings=(leaf_shardings, *batches), out_shardings=(leaf_shardings, replicated),
                       donate_argnums=0)

    return Run(
        config=config,
        mesh=mesh,
        data=data,
        model=model,
        method=method,
        task=method.task,
        total_steps=steps,
        schedule=schedule,
        state_shardings=shardings,
        abstract_state=abstract_state,
        init=jax.jit(init, out_shardings=shardings),
        train_call=train_call,
        state_codec=codec,
        metric_names=metric_names,
        params_finite=jax.jit(lambda state: all_finite(state.params), in_shardings=(shardings,), out_shardings=replicated),
        eval_step=jax.jit(sharding.pinned(eval_fn, mesh, rules), in_shardings=(shardings, batch_sharding),
                          out_shardings=replicated),
        begin=(jax.jit(method.begin, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=0)
               if method.begin else lambda state: state),
    )
