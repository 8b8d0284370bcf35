"""A small convolutional network for images: conv blocks, a dense layer, a classification head."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jtrain.models.family import Family

annotated = nn.with_logical_partitioning  # init -> init whose parameter carries logical axis names (jtrain/sharding.py)
KERNEL_AXES = ("conv_height", "conv_width", "conv_in", "conv_out")


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max-pooling, stride 2, SAME padding: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C).

    The same values as `nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")`, computed as a reshape and a
    max: its gradient is a compare and a select, where max_pool's is XLA's select-and-scatter, much slower on CPU
    (BENCHMARKS.md). Gradients differ only at ties inside a window (shared rather
    than given to the first element); after ReLU the only ties are zeros, whose gradient ReLU drops anyway."""
    b, h, w, c = x.shape
    if h % 2 or w % 2:  # SAME padding adds the missing row / column at the end; -inf never wins a max
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    h2, w2 = x.shape[1] // 2, x.shape[2] // 2
    return x.reshape(b, h2, 2, w2, 2, c).max(axis=(2, 4))


class CNN(nn.Module):
    """[Conv 3x3, (BatchNorm), ReLU, MaxPool 2x2] per entry of conv_features; Dense, (Dropout), Dense head."""

    conv_features: Sequence[int]
    dense_features: int
    num_outputs: int
    dropout: float = 0.0
    batch_norm: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = x.astype(self.dtype)  # (B, H, W, C)
        for features in self.conv_features:
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=not self.batch_norm, dtype=self.dtype,
                        kernel_init=annotated(nn.linear.default_kernel_init, KERNEL_AXES),
                        bias_init=annotated(nn.initializers.zeros_init(), ("conv_out",)))(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 scale_init=annotated(nn.initializers.ones_init(), ("conv_out",)),
                                 bias_init=annotated(nn.initializers.zeros_init(), ("conv_out",)))(x)
            x = nn.relu(x)
            x = max_pool_2x2(x)  # (B, ceil(H/2), ceil(W/2), features)
        x = x.reshape((x.shape[0], -1))  # (B, H' * W' * C')
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.relu(nn.Dense(self.dense_features, dtype=self.dtype,
                             kernel_init=annotated(nn.linear.default_kernel_init, ("embed", "mlp")),
                             bias_init=annotated(nn.initializers.zeros_init(), ("mlp",)))(x))  # (B, dense_features)
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_outputs, dtype=jnp.float32,
                        kernel_init=annotated(nn.linear.default_kernel_init, ("mlp", "classes")),
                        bias_init=annotated(nn.initializers.zeros_init(), ("classes",)))(x)  # (B, num_outputs)


def build(config, num_outputs: int) -> CNN:
    return CNN(tuple(config.conv_features), config.dense_features, num_outputs, config.dropout, config.batch_norm,
               jnp.dtype(config.dtype))


FAMILY = Family(build, fields=dict(
    conv_features=(32, 64),  # CNN channels per conv block (3x3 conv, [BN], ReLU, 2x2 max-pool)
    dense_features=128,  # CNN width of the dense layer before the head
    batch_norm=False,  # batch normalisation after each conv (mlp: after each hidden layer)
))
