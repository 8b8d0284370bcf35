"""Where a jtrain array lives in a Hugging Face checkpoint: `HFEntry` (one tensor, or a part of a fused one) and
`HFStack` (a scanned layer stack, one tensor per layer), with lazy block reads for import and the inverse for
export. NumPy only: no value changes either way (transposes, reshapes, slices), so import -> export -> import is
bitwise identical.

An entry says how jtrain's array is made from the tensor: transpose it when stored (out, in) as torch's Linear
keeps weights, take the part starting at `offset` on the last axis of a fused tensor (GPT-2's `c_attn` holds
query, key and value side by side), then split axes into groups, e.g. a query kernel (E, H * D) into (E, H, D):

    HFEntry("model.layers.0.self_attn.q_proj.weight", groups=((E,), (H, D)), transpose=True)

`read(open_slice, index)` reads only the block of jtrain's array that `index` (a tuple of slices, as
jax.make_array_from_callback passes one device's shard) covers, through safetensors' lazy slices: whole heads of a
split axis, only the rows and columns the shard needs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

OpenSlice = Callable[[str], Any]  # tensor name -> an object sliced lazily with a tuple of slices (safetensors)


def _spans(index: tuple, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(start, stop) per axis of a tuple of slices (step 1) over `shape`."""
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    return [s.indices(n)[:2] for s, n in zip(index, shape)]


@dataclasses.dataclass(frozen=True)
class HFEntry:
    name: str  # the checkpoint tensor
    groups: tuple[tuple[int, ...], ...]  # jtrain's axes per tensor axis (tensor axes in jtrain's order): ((E,), (H, D))
    transpose: bool = False  # the tensor is stored as the transpose (torch Linear weights, (out, in))
    offset: int = 0  # where this part starts on the last axis (in jtrain's order) of a fused tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(n for g in self.groups for n in g)

    @property
    def part_shape(self) -> tuple[int, ...]:
        """The part's shape in the tensor's axes, in jtrain's order (before splitting into groups)."""
        return tuple(math.prod(g) for g in self.groups)

    def read(self, open_slice: OpenSlice, index: tuple = ()) -> np.ndarray:
        spans = _spans(index, self.shape)
        ranges, after, pos = [], [], 0  # tensor ranges to read; slices applied once the groups are split
        for g in self.groups:
            mine, pos = spans[pos:pos + len(g)], pos + len(g)
            if len(g) == 1:
                ranges.append(mine[0])
                after.append(slice(None))
            else:  # (outer, inner): whole outer rows (e.g. heads) are contiguous; inner ones are sliced after
                if len(g) != 2:
                    raise ValueError(f"{self.name}: an axis splits into at most two, got {g}")
                (a, b), (c, d) = mine
                ranges.append((a * g[1], b * g[1]))
                after += [slice(None), slice(c, d)]
        ranges[-1] = (ranges[-1][0] + self.offset, ranges[-1][1] + self.offset)
        slices = tuple(slice(a, b) for a, b in ranges)
        block = np.asarray(open_slice(self.name)[slices[::-1] if self.transpose else slices])
        if self.transpose:
            block = block.T
        split = []
        for (a, b), g in zip(ranges, self.groups):
            split += [b - a] if len(g) == 1 else [(b - a) // g[1], g[1]]
        return np.ascontiguousarray(block.reshape(split)[tuple(after)])


@dataclasses.dataclass(frozen=True)
class HFStack:
    """A scanned stack (num_layers, ...) whose layer l is `layers[l]`."""

    layers: tuple[HFEntry, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.layers),) + self.layers[0].shape

    def read(self, open_slice: OpenSlice, index: tuple = ()) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (len(self.shape) - len(index))
        a, b = index[0].indices(len(self.layers))[:2]
        return np.stack([self.layers[l].read(open_slice, index[1:]) for l in range(a, b)])


def entries(layout: HFEntry | HFStack) -> list[tuple[HFEntry, Callable[[np.ndarray], np.ndarray]]]:
    """Each tensor entry of a layout with the function taking its part out of jtrain's whole array."""
    if isinstance(layout, HFStack):
        return [(e, lambda x, l=l: x[l]) for l, e in enumerate(layout.layers)]
    return [(layout, lambda x: x)]


def to_tensors(layouts: dict[str, HFEntry | HFStack], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint tensors holding jtrain's `arrays` ({path: array}), laid out by `layouts` ({path: layout}):
    parts of a fused tensor joined in offset order, transposed back where stored transposed."""
    parts: dict[str, list[tuple[int, np.ndarray, HFEntry]]] = {}
    for path, layout in layouts.items():
        for entry, take in entries(layout):
            part = take(np.asarray(arrays[path])).reshape(entry.part_shape)
            parts.setdefault(entry.name, []).append((entry.offset, part, entry))
    out = {}
    for name, pieces in parts.items():
        pieces.sort(key=lambda p: p[0])
        whole = pieces[0][1] if len(pieces) == 1 else np.concatenate([p[1] for p in pieces], axis=-1)
        out[name] = np.ascontiguousarray(whole.T if pieces[0][2].transpose else whole)
    return out


MAX_SHARD_BYTES = 5 * 1000**3  # transformers' own default shard size (5 GB)


def save_tensors(tensors: dict[str, np.ndarray], outdir: str, max_shard_bytes: int = MAX_SHARD_BYTES) -> list[str]:
    """`model.safetensors`, or above `max_shard_bytes` numbered shards (tensors in name order, a new shard when the
    next would overflow) and `model.safetensors.index.json` mapping each tensor to its file, as transformers
    writes them. Returns the files written."""
    import json
    import os

    from safetensors.numpy import save_file

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += n
    os.makedirs(outdir, exist_ok=True)
    if len(shards) == 1:
        save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file, shard in zip(files, shards):
        save_file(shard, os.path.join(outdir, file), metadata={"format": "pt"})
    index = {"metadata": {"total_size": int(sum(t.nbytes for t in tensors.values()))},
             "weight_map": {name: file for file, shard in zip(files, shards) for name in shard}}
    with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    return files + ["model.safetensors.index.json"]
