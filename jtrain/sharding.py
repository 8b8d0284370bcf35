"""Logical axis rules -> a partition spec for every leaf of the train state, and the sharding report.

Models name the dimensions of their parameters (`nn.with_logical_partitioning(init, ("embed", "mlp"))`). The
`mesh.rules` table maps each name to mesh axes, first the named rules dimension by dimension, then the
wildcard: `"*=fsdp"` puts the largest dimension still unsplit that divides evenly over fsdp (ZeRO-3 style).

    "mlp=tensor"   split this dimension over the tensor axis
    "embed="       no axis of its own; the wildcard may still split it
    "layers=-"     never split (e.g. the scanned-layers axis, sliced once per layer)
    "*=fsdp"       the largest remaining dimension divisible by the fsdp size

A mesh axis of size 1 is dropped from the spec, a mesh axis is used at most once per leaf, and a dimension that
the rule's axes do not divide stays whole (the report and the replication error say so). Optimizer state leaves
(Adam's mu and nu, momentum) end with their parameter's path and take its spec; scalars are replicated.

Activations are pinned too (`constrain`, inside steps wrapped by `pinned`): batch over (data, fsdp), heads / mlp /
vocab by their rules, so that XLA all-gathers FSDP-split weights rather than splitting activations like them.

Why `conv_out` is not on tensor by default: with jax 0.10's default partitioner (Shardy) on CPU, a CNN whose conv
output channels are split over tensor and whose next conv kernel is split over fsdp got wrong first-layer kernel
gradients through max-pooling (GSPMD got them right); the multi-mesh loss tests would catch it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from jtrain.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
WILDCARD = "*"
KEEP_WHOLE = "-"

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Rules:
    table: dict[str, tuple[str, ...] | None]  # logical name -> mesh axes; None = never split ("name=-")
    wildcard: tuple[str, ...]  # mesh axes for the largest remaining dimension ("*=...")
    text: dict[str, str]  # logical name (or "*") -> the rule as written, for messages


def parse_rules(rules: Sequence[str]) -> Rules:
    """`("mlp=tensor", "embed=", "layers=-", "*=fsdp")` -> Rules; mistakes name `mesh.rules`."""
    table, text, wildcard = {}, {}, ()
    for rule in rules:
        name, eq, rhs = (s.strip() for s in rule.partition("="))
        if not eq or not name:
            raise ConfigError(f"config key 'mesh.rules': {rule!r} is not 'logical_name=mesh_axis[,mesh_axis]'")
        if name in text:
            raise ConfigError(f"config key 'mesh.rules': two rules for {name!r}")
        text[name] = rule
        if rhs == KEEP_WHOLE:
            axes = None
        else:
            axes = tuple(a.strip() for a in rhs.split(",") if a.strip())
            for axis in axes:
                if axis not in MESH_AXES:
                    raise ConfigError(f"config key 'mesh.rules': {rule!r} names unknown mesh axis {axis!r} "
                                      f"(known: {', '.join(MESH_AXES)})")
            if len(set(axes)) != len(axes):
                raise ConfigError(f"config key 'mesh.rules': {rule!r} repeats a mesh axis")
        if name == WILDCARD:
            wildcard = axes or ()
        else:
            table[name] = axes
    return Rules(table, wildcard, text)


# ---------------------------------------------------------------- logical names from the model


def path_names(path) -> Path:
    """A jax key path as plain strings: ('params', 'Dense_0', 'kernel')."""
    out = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                out.append(str(getattr(key, attr)))
                break
        else:
            out.append(str(key))
    return tuple(out)


def logical_axes(model: nn.Module, sample_inputs: jax.Array) -> dict[Path, tuple]:
    """{(collection, *path): logical name per dimension} for every annotated variable, from an abstract init."""
    key = jax.random.key(0)  # shapes only: nothing is computed
    variables = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, sample_inputs, train=False))
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables, is_leaf=is_box)[0]:
        if is_box(leaf):
            names = tuple(leaf.get_partition_spec())
            ndim = len(leaf.unbox().shape)
            out[path_names(path)] = names + (None,) * (ndim - len(names))
    return out


def _names_for(path: Path, shape: tuple, logical: dict[Path, tuple], param_shapes: dict[Path, tuple]) -> tuple | None:
    """Logical names of a state leaf: its own annotation, or (optimizer state) the parameter its path ends with."""
    if path[0] == "params":
        return logical.get(path)
    if path[0] == "model_state":
        return logical.get(path[1:])
    for start in range(1, len(path)):  # longest matching suffix first
        candidate = ("params", *path[start:])
        if candidate in param_shapes and param_shapes[candidate] == shape:
            return logical.get(candidate)
    return None


# ---------------------------------------------------------------- rules -> specs


@dataclasses.dataclass(frozen=True)
class Placement:
    path: Path  # ('params', 'Dense_0', 'kernel'), ('opt_state', '0', 'mu', ...)
    shape: tuple[int, ...]
    dtype: Any
    names: tuple | None  # logical name per dimension; None = not annotated
    spec: P
    misses: tuple[str, ...]  # rules that could not split a dimension, for the replication error

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def leaf_spec(path: Path, shape: tuple[int, ...], names: tuple | None, rules: Rules,
              sizes: dict[str, int]) -> tuple[P, tuple[str, ...]]:
    """The partition spec of one leaf, and the rules that matched a dimension but could not split it."""
    names = names if names is not None else (None,) * len(shape)
    assigned: list[tuple[str, ...] | None] = [None] * len(shape)
    whole = [False] * len(shape)
    used: set[str] = set()
    misses = []
    for i, (dim, name) in enumerate(zip(shape, names)):
        if name is None:
            continue
        if name not in rules.table:
            raise ConfigError(f"config key 'mesh.rules': {'/'.join(path)} has logical axis {name!r} with no rule "
                              f"(add e.g. '{name}=' to leave it to the '*' rule, or '{name}=tensor')")
        axes = rules.table[name]
        if axes is None:
            whole[i] = True
            continue
        wanted = tuple(a for a in axes if sizes[a] > 1)
        free = tuple(a for a in wanted if a not in used)
        if not wanted:
            continue
        if free != wanted:
            misses.append(f"rule {rules.text[name]!r}: mesh axis already used by another dimension")
            continue
        n = math.prod(sizes[a] for a in free)
        if dim % n:
            misses.append(f"rule {rules.text[name]!r}: dimension {i} of size {dim} is not divisible by {n}")
            continue
        assigned[i] = free
        used.update(free)
    wild = tuple(a for a in rules.wildcard if sizes[a] > 1 and a not in used)
    if wild and shape:
        n = math.prod(sizes[a] for a in wild)
        candidates = [i for i in range(len(shape)) if assigned[i] is None and not whole[i] and shape[i] % n == 0]
        if candidates:
            best = max(candidates, key=lambda i: (shape[i], -i))  # the largest; the first of equals
            assigned[best] = wild
        else:
            misses.append(f"rule {rules.text[WILDCARD]!r}: no free dimension of {shape} is divisible by {n}")
    spec = P(*[None if a is None else (a[0] if len(a) == 1 else a) for a in assigned])
    return spec, tuple(misses)


def plan_state(abstract_state: Any, sizes: dict[str, int], rules: Rules, logical: dict[Path, tuple]) -> list[Placement]:
    """One Placement per leaf of the state, in `jax.tree.leaves` order."""
    flat = [(path_names(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]
    param_shapes = {path: tuple(leaf.shape) for path, leaf in flat if path[0] == "params"}
    placements = []
    for path, leaf in flat:
        shape = tuple(leaf.shape)
        names = _names_for(path, shape, logical, param_shapes)
        spec, misses = leaf_spec(path, shape, names, rules, sizes)
        placements.append(Placement(path, shape, leaf.dtype, names, spec, misses))
    return placements


def check_replication(placements: list[Placement], sizes: dict[str, int], threshold: int) -> None:
    """No silent replication: a large parameter left whole on every device while fsdp or tensor > 1 is an error."""
    if sizes["fsdp"] == 1 and sizes["tensor"] == 1:
        return
    for p in placements:
        if p.path[0] != "params" or p.nbytes < threshold or any(s is not None for s in p.spec):
            continue
        why = "; ".join(p.misses) or (f"its logical axes {p.names} map to no mesh axis" if p.names is not None
                                      else "it has no logical axis names and no '*' rule applies")
        raise ConfigError(f"config key 'mesh.rules': parameter {'/'.join(p.path[1:])} {p.shape} "
                          f"({format_bytes(p.nbytes)}) would be replicated on every device: {why} "
                          f"(or raise mesh.replication_threshold_bytes)")


def named_shardings(abstract_state: Any, placements: list[Placement], mesh) -> Any:
    leaves = [NamedSharding(mesh, p.spec) for p in placements]
    return jax.tree.unflatten(jax.tree.structure(abstract_state), leaves)


# ---------------------------------------------------------------- activations

BATCH_AXES = ("data", "fsdp")  # the batch dimension of inputs and activations, always
_ACTIVE = contextvars.ContextVar("jtrain_activation_sharding", default=None)


def pinned(fn, mesh, rules: Rules):
    """`fn` traced with activation constraints on: `constrain` inside it pins activations to `mesh` by `rules`.

    Without pins, XLA's partitioner may follow the FSDP-split weights into the activations and replicate the
    batch (it did for the decoder: global-batch attention scores all-reduced); pinning the batch dimension to
    (data, fsdp) makes it all-gather the weights instead, which is what FSDP means."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        token = _ACTIVE.set((mesh, rules))
        try:
            return fn(*args, **kwargs)
        finally:
            _ACTIVE.reset(token)

    return wrapped


def constrain(x: jax.Array, names: tuple) -> jax.Array:
    """Pins an activation's sharding by logical names: "batch" -> (data, fsdp), other names by their rule (the
    "*" rule is for parameters only). A no-op outside `pinned` (e.g. a plain `model.apply`)."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    sizes = {axis: mesh.shape.get(axis, 1) for axis in MESH_AXES}
    spec, used = [], set()
    for dim, name in zip(x.shape, names):
        axes = BATCH_AXES if name == "batch" else None if name is None else rules.table.get(name, ())
        if name not in (None, "batch") and name not in rules.table:
            raise ConfigError(f"config key 'mesh.rules': activation axis {name!r} has no rule (add e.g. '{name}=')")
        axes = tuple(a for a in axes or () if sizes[a] > 1 and a not in used)
        if not axes or dim % math.prod(sizes[a] for a in axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))


# ---------------------------------------------------------------- report


def is_sharded(shardings: Any) -> bool:
    return any(any(s is not None for s in sh.spec) for sh in jax.tree.leaves(shardings))


def per_device_bytes(abstract_state: Any, shardings: Any) -> int:
    """Bytes of the state held by one device (the largest shard of every leaf)."""
    total = 0
    for leaf, sh in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings)):
        total += math.prod(sh.shard_shape(tuple(leaf.shape))) * leaf.dtype.itemsize
    return total


def report(abstract_state: Any, shardings: Any, max_rows: int = 0) -> str:
    """Table of the parameters (path, shape, partition spec, bytes per device) and the whole state's totals."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    rows, param_total, param_device = [], 0, 0
    for (path, leaf), sh in zip(flat, jax.tree.leaves(shardings)):
        names = path_names(path)
        if names[0] != "params":
            continue
        full = math.prod(leaf.shape) * leaf.dtype.itemsize
        local = math.prod(sh.shard_shape(tuple(leaf.shape))) * leaf.dtype.itemsize
        param_total, param_device = param_total + full, param_device + local
        spec = ", ".join("-" if s is None else "+".join(s) if isinstance(s, tuple) else s for s in sh.spec)
        rows.append(("/".join(names[1:]), "x".join(map(str, leaf.shape)) or "scalar", f"({spec})", format_bytes(local)))
    shown = rows if not max_rows or len(rows) <= max_rows else rows[:max_rows]
    header = ("parameter", "shape", "partition", "per device")
    widths = [max(len(r[i]) for r in [header, *shown]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *shown]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more parameters (jtrain inspect --config ... shows all)")
    state_full = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
    mesh = jax.tree.leaves(shardings)[0].mesh
    lines.append(f"mesh {dict(mesh.shape)}: parameters {format_bytes(param_total)} -> {format_bytes(param_device)} "
                 f"per device; whole state (with optimizer) {format_bytes(state_full)} -> "
                 f"{format_bytes(per_device_bytes(abstract_state, shardings))} per device")
    return "\n".join(lines)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


__all__ = ["Rules", "Placement", "check_replication", "leaf_spec", "logical_axes", "named_shardings", "parse_rules",
           "per_device_bytes", "plan_state", "report", "format_bytes"]
