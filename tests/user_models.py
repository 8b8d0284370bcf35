"""A user's own Linen model, referenced from configs as `model.name = "user_models:tiny_mlp"`."""

from __future__ import annotations

import flax.linen as nn
import jax


class TinyMLP(nn.Module):
    """Parameter names of the user's choosing (`body`, `out`), no logical axis annotations."""

    hidden: int
    num_outputs: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.reshape((x.shape[0], -1))  # (B, D)
        x = nn.relu(nn.Dense(self.hidden, name="body")(x))  # (B, hidden)
        return nn.Dense(self.num_outputs, name="out")(x)  # (B, num_outputs)


def tiny_mlp(config, num_outputs: int) -> nn.Module:
    return TinyMLP(16, num_outputs)


def wide_mlp(config, num_outputs: int) -> nn.Module:
    """A user's model with a config field of its own, `model.width`."""
    return TinyMLP(config.width, num_outputs)


wide_mlp.config_fields = {"width": 16}  # declared fields: --config.model.width=... and config.json know them
