"""The device mesh from the `mesh` config section, and the shardings of batches and state on it.

The batch is split over (data, fsdp); every state leaf gets its spec from the logical axis rules
(`mesh.rules`, applied in jtrain/sharding.py).
"""

from __future__ import annotations

import math

import jax
import ml_collections
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jtrain import sharding
from jtrain.errors import ConfigError

AXES = sharding.MESH_AXES  # ("data", "fsdp", "tensor")
BATCH_AXES = sharding.BATCH_AXES  # the batch dimension is split over both data-parallel axes


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    sizes = [config[a] for a in AXES]
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1:
        raise ConfigError("config key 'mesh': at most one of mesh.data/fsdp/tensor may be -1 (fill)")
    fixed = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % fixed:
            raise ConfigError(f"config key 'mesh.{AXES[fill[0]]}': cannot fill, {num_devices} devices are not "
                              f"divisible by the other axes' product {fixed}")
        sizes[fill[0]] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"config key 'mesh': mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, "
                          f"{num_devices} are available")
    return tuple(sizes)


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
    devices = devices if devices is not None else jax.devices()
    shape = mesh_shape(config, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES), devices=devices)


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
    """The batch axis split over (data, fsdp); `stacked` batches (steps, B, ...) keep the steps axis whole."""
    return NamedSharding(mesh, P(None, BATCH_AXES) if stacked else P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def state_shardings(abstract_state, mesh: Mesh, config: ml_collections.ConfigDict | None = None,
                    logical: dict | None = None):
    """Shardings of every state leaf from the rules in `config` (the mesh section) and the model's logical axis
    names (`sharding.logical_axes`); without a config, everything is replicated (pure data parallelism).

    Raises ConfigError for a logical name with no rule, or a parameter of at least
    `mesh.replication_threshold_bytes` left whole on every device while fsdp or tensor > 1."""
    if config is None:
        return jax.tree.map(lambda _: replicated(mesh), abstract_state)
    sizes = {axis: mesh.shape.get(axis, 1) for axis in AXES}
    placements = sharding.plan_state(abstract_state, sizes, sharding.parse_rules(config.rules), logical or {})
    sharding.check_replication(placements, sizes, config.replication_threshold_bytes)
    return sharding.named_shardings(abstract_state, placements, mesh)


def check_batch(global_batch: int, mesh: Mesh, key: str) -> None:
    dp = data_parallel_size(mesh)
    if global_batch % dp:
        raise ConfigError(f"config key {key!r}: global batch {global_batch} is not divisible by the "
                          f"data-parallel size {dp} (mesh.data x mesh.fsdp)")
