"""Multi-layer perceptron: flatten, then [Dense, (BatchNorm), ReLU, (Dropout)] per hidden width, then a Dense head."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    num_outputs: int
    dropout: float = 0.0
    batch_norm: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)  # (B, D)
        for width in self.hidden_sizes:
            x = nn.Dense(width, dtype=self.dtype)(x)  # (B, width)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
            x = nn.relu(x)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        # The head computes in float32 so the loss sees full-precision logits.
        return nn.Dense(self.num_outputs, dtype=jnp.float32)(x)  # (B, num_outputs)
