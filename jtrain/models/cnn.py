"""A small convolutional network for images: conv blocks, a dense layer, a classification head."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

annotated = nn.with_logical_partitioning  # init -> init whose parameter carries logical axis names (jtrain/sharding.py)
KERNEL_AXES = ("conv_height", "conv_width", "conv_in", "conv_out")


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
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")  # (B, ceil(H/2), ceil(W/2), features)
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
