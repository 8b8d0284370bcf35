"""LoRA (Hu et al. 2021): low-rank adapters on chosen Dense kernels of any model, and their merge.

    W_eff = W + (alpha / r) * A @ B        W (in, out) frozen, A (in, r) ~ N(0, 1/in), B (r, out) = 0 at init

A kernel of more dims is adapted along its first axis: the decoder's query (E, H, D) takes A (E, r), B (r, H, D).

`LoRA(base, targets, rank, alpha)` wraps a model without touching its code (a built-in one, your
`package.module:factory` one, or an NNX module through `nnx_model`: only the Linen-style `init` / `apply`
contract and the parameter tree's paths are used): `init` adds the adapters beside the
base parameters under `lora/` (mirroring each kernel's path: `lora/encoder/layer_0/query/kernel/{a,b}`), and
`apply` merges them into the kernels before calling the base model. Since B starts at zero, the wrapped model
computes exactly the base model at init, and pretrained weights load into the base paths unchanged.

Freezing is the policy table's job (jtrain/policy.py), e.g. everything but the adapters and a new head:

    optim.policy = ("(?!lora/|head/).*=frozen",)

`merge(params, rank, alpha)` returns the base model's parameter tree with the adapters folded in, for export
(e.g. jtrain.models.bert.export_hf) or plain serving.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrain.errors import ConfigError
from jtrain.policy import param_path

KEY = "lora"


def _targets(params: Any, pattern: re.Pattern) -> list[tuple[tuple[str, ...], Any]]:
    """(path keys, leaf) of every 2-D parameter whose '/'-joined path fullmatches `pattern`."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))[0]:
        value = leaf.unbox() if isinstance(leaf, nn.meta.AxisMetadata) else leaf
        if value.ndim >= 2 and pattern.fullmatch(param_path(path)):
            out.append((tuple(param_path(path).split("/")), leaf))
    return out


def _get(tree: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        tree = tree[k]
    return tree


def _set(tree: dict, keys: tuple[str, ...], value: Any) -> dict:
    """A copy of nested dict `tree` with `value` at `keys` (the other branches shared)."""
    if not keys:
        return value
    out = dict(tree)
    out[keys[0]] = _set(tree.get(keys[0], {}), keys[1:], value)
    return out


def merge(params: dict, rank: int, alpha: float) -> dict:
    """Base-model params with every adapter folded into its kernel: W + (alpha / rank) * A @ B."""
    params = dict(params)
    adapters = params.pop(KEY, {})
    scale = alpha / rank

    def fold(path, a):
        nonlocal params
        keys = tuple(param_path(path).split("/"))[:-1]  # .../kernel/a -> .../kernel
        b = _get(adapters, keys + ("b",))
        kernel = _get(params, keys)
        update = jnp.tensordot(a, b, axes=1)  # (in, r) x (r, *out) -> the kernel's shape
        params = _set(params, keys, (kernel + scale * update.astype(kernel.dtype)).astype(kernel.dtype))

    for path, leaf in jax.tree_util.tree_flatten_with_path(adapters)[0]:
        if param_path(path).endswith("/a"):
            fold(path, leaf)
    return params


@dataclasses.dataclass(frozen=True)
class LoRA:
    """A model with the same `init` / `apply` contract as a Linen module (see jtrain/models/__init__.py)."""

    base: nn.Module
    targets: str  # regex (fullmatch) on the base model's parameter paths, e.g. "encoder/layer_\\d+/(query|value)/kernel"
    rank: int
    alpha: float

    def init(self, rngs, *args, **kwargs) -> dict:
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        variables = dict(self.base.init(rngs, *args, **kwargs))
        params = dict(variables["params"])
        if KEY in params:
            raise ConfigError(f"config key 'model.lora_rank': the model already has parameters under {KEY!r}/, "
                              f"where the adapters go")
        try:
            pattern = re.compile(self.targets)
        except re.error as e:
            raise ConfigError(f"config key 'model.lora_targets': bad regex {self.targets!r}: {e}") from e
        chosen = _targets(params, pattern)
        if not chosen:
            first = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0][0][0]
            raise ConfigError(f"config key 'model.lora_targets': {self.targets!r} matches no kernel of 2 or more "
                              f"dims (paths look like {param_path(first)!r})")
        adapters: dict = {}
        for i, (keys, leaf) in enumerate(chosen):
            boxed = isinstance(leaf, nn.meta.AxisMetadata)
            kernel = leaf.unbox() if boxed else leaf
            fan_in, *fan_out = kernel.shape  # N-D kernels (the decoder's query (E, H, D)): first axis in, rest out
            a = jax.random.normal(jax.random.fold_in(key, i), (fan_in, self.rank), jnp.float32) / jnp.sqrt(fan_in)
            b = jnp.zeros((self.rank, *fan_out), jnp.float32)  # zero: the adapted model starts as the base model
            if boxed and isinstance(leaf, nn.Partitioned):  # the kernel's logical names carry over (in / out)
                a, b = nn.Partitioned(a, (leaf.names[0], None)), nn.Partitioned(b, (None, *leaf.names[1:]))
            adapters = _set(adapters, keys + ("a",), a)
            adapters = _set(adapters, keys + ("b",), b)
        params[KEY] = adapters
        variables["params"] = params
        return variables

    def apply(self, variables, *args, **kwargs):
        variables = dict(variables)
        variables["params"] = merge(nn.meta.unbox(variables["params"]), self.rank, self.alpha)
        return self.base.apply(variables, *args, **kwargs)


def wrap(model: nn.Module, config) -> Any:
    """`model` with adapters when `model.lora_rank` > 0 (model.lora_targets, model.lora_alpha), else unchanged."""
    if config.lora_rank <= 0:
        return model
    if not config.lora_targets:
        raise ConfigError("config key 'model.lora_targets': set the regex of the kernels to adapt (model.lora_rank > 0)")
    return LoRA(model, config.lora_targets, config.lora_rank, config.lora_alpha)
