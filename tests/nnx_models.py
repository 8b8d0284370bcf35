"""An NNX model for the adapter test, referenced from configs as `model.name = "nnx_models:small_cnn"`."""

from __future__ import annotations

import jax
from flax import nnx

from jtrain.models import nnx_model


class SmallCNN(nnx.Module):
    def __init__(self, num_outputs: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.head = nnx.Linear(8 * 8 * 16, num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = nnx.relu(self.norm(self.conv(x), use_running_average=not train))  # (B, 8, 8, 16)
        x = self.dropout(x.reshape((x.shape[0], -1)), deterministic=not train)  # (B, 1024)
        return self.head(x)  # (B, num_outputs)


def small_cnn(config, num_outputs: int):
    return nnx_model(SmallCNN, num_outputs)
