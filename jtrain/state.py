"""TrainState: everything that changes during training, as one pytree (no functions inside)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # () int32, optimizer steps taken
    params: Any  # trained variables
    opt_state: Any  # optimizer state, same structure as the optax chain
    model_state: Any  # other model collections, e.g. {'batch_stats': ...}; {} when none
    rng: jax.Array  # base key; each step folds in its step number, so a resumed run draws the same numbers


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, sample_inputs: jax.Array) -> TrainState:
    """Initial state from one (shape-only is enough) batch of inputs; pure, so it can be jitted and sharded."""
    init_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    variables = model.init({"params": init_rng, "dropout": dropout_rng}, sample_inputs, train=False)
    # Logical axis annotations (nn.with_logical_partitioning) box the values; the state holds plain arrays and
    # the shardings come from jtrain/sharding.py.
    variables = dict(nn.meta.unbox(variables))
    params = variables.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        model_state=variables,
        rng=state_rng,
    )


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
