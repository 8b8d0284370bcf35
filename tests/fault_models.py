"""Models for fault-injection tests, referenced from configs as `model.name = "fault_models:..."`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrain.models import CNN


@jax.custom_vjp
def _poison_gradient(x: jax.Array, poisoned: jax.Array) -> jax.Array:
    return x  # the identity forward; backward makes the gradient NaN when `poisoned` (0.0 or 1.0)


def _poison_fwd(x, poisoned):
    return x, poisoned


def _poison_bwd(poisoned, g):
    return jnp.where(poisoned > 0, jnp.nan, g), jnp.zeros_like(poisoned)


_poison_gradient.defvjp(_poison_fwd, _poison_bwd)


class NaNSometimes(nn.Module):
    """A CNN whose training outputs turn NaN on about `rate` of the steps, chosen by the step's dropout key:
    which steps is a deterministic function of the seed, so a test can find them and a rerun repeats them.
    With `gradients`, the outputs (and the loss) stay finite and the gradients turn NaN instead: the case a
    check of the loss alone cannot see."""

    rate: float
    inner: nn.Module
    gradients: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        out = self.inner(x, train=train)  # (B, C)
        if train:
            poisoned = jax.random.uniform(self.make_rng("dropout")) < self.rate
            if self.gradients:
                out = _poison_gradient(out, poisoned.astype(out.dtype))
            else:
                out = jnp.where(poisoned, jnp.nan, out)
        return out


def nan_cnn(config, num_outputs: int) -> nn.Module:
    return NaNSometimes(0.1, CNN((8,), 32, num_outputs))


def nan_grad_cnn(config, num_outputs: int) -> nn.Module:
    return NaNSometimes(0.1, CNN((8,), 32, num_outputs), gradients=True)
