"""Run a Flax NNX module under jtrain's model contract (a Linen-style `init`/`apply`).

jtrain's state is a plain pytree and its steps are plain `jax.jit` functions, so an NNX module is held as
variables and rebuilt (split/merge) inside each call; Flax's `nnx.bridge.ToLinen` does exactly that. Its
`nnx.Param` leaves land in the `params` collection (trained by the optimizer), `nnx.BatchStat` leaves in
`batch_stats` (updated in training), and dropout draws from the `dropout` rng that jtrain passes each step.

Contract for the NNX module: `__init__(..., rngs: nnx.Rngs)` and `__call__(self, x, *, train: bool)`, passing
`train` on to its layers (e.g. `nnx.BatchNorm(..)(x, use_running_average=not train)`,
`nnx.Dropout(..)(x, deterministic=not train)`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
from flax import nnx
from flax.nnx import bridge


def nnx_model(nnx_class: type[nnx.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """`nnx_model(MyNet, 64, 10)` -> a module jtrain trains like any Linen model."""
    return bridge.ToLinen(nnx_class, args=args, kwargs=kwargs)
