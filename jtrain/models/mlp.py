"""Multi-layer perceptron: flatten, then [Dense, (BatchNorm), ReLU, (Dropout)] per hidden width, then a Dense head."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jtrain.models.family import Family

annotated = nn.with_logical_partitioning  # init -> init whose parameter carries logical axis names


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    num_outputs: int
    dropout: float = 0.0
    batch_norm: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)  # (B, D)
        # Logical axis names for sharding (jtrain/sharding.py): hidden widths alternate embed -> mlp -> embed, so
        # with tensor parallelism a column-split layer feeds a row-split one.
        names = ("embed", "mlp")
        for width in self.hidden_sizes:
            x = nn.Dense(width, dtype=self.dtype, kernel_init=annotated(nn.linear.default_kernel_init, names),
                         bias_init=annotated(nn.initializers.zeros_init(), names[1:]))(x)  # (B, width)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 scale_init=annotated(nn.initializers.ones_init(), names[1:]),
                                 bias_init=annotated(nn.initializers.zeros_init(), names[1:]))(x)
            x = nn.relu(x)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            names = names[::-1]
        # The head computes in float32 so the loss sees full-precision logits.
        return nn.Dense(self.num_outputs, dtype=jnp.float32,
                        kernel_init=annotated(nn.linear.default_kernel_init, (names[0], "classes")),
                        bias_init=annotated(nn.initializers.zeros_init(), ("classes",)))(x)  # (B, num_outputs)


def build(config, num_outputs: int) -> MLP:
    return MLP(tuple(config.hidden_sizes), num_outputs, config.dropout, config.batch_norm, jnp.dtype(config.dtype))


FAMILY = Family(build, fields=dict(
    hidden_sizes=(256, 256),  # MLP hidden layer widths
    batch_norm=False,  # batch normalisation after each hidden layer (cnn: after each conv)
))
