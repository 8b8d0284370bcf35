"""The CNN's reshape-and-max pooling equals Flax's max_pool: values for even and odd sizes, and the gradient
of a ReLU -> pool block (the only way the CNN uses it)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrain.models.cnn import max_pool_2x2


def _reference(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (2, 28, 28, 5), (3, 7, 7, 2), (2, 6, 5, 1)])
def test_values_equal_flax_max_pool(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    out = max_pool_2x2(x)
    assert out.shape == _reference(x).shape == (shape[0], -(-shape[1] // 2), -(-shape[2] // 2), shape[3])
    np.testing.assert_array_equal(out, _reference(x))


@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (3, 7, 7, 2)])
def test_relu_pool_gradient_equals_flax(shape):
    x = jax.random.normal(jax.random.key(1), shape)
    w = jax.random.normal(jax.random.key(2), _reference(x).shape)  # a weighted sum makes every output count
    grad = lambda pool: jax.grad(lambda x: jnp.sum(w * pool(nn.relu(x))))(x)
    np.testing.assert_array_equal(grad(max_pool_2x2), grad(_reference))
