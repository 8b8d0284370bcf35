"""`jtrain inspect PATH`: what a checkpoint holds (step, metrics, config, parameter tree), and `--diff OTHER`.

PATH is a workdir (its latest checkpoint), a `checkpoints/` directory, or one step directory. Only metadata is
read for the tree; `--diff` also reads the arrays to compare values.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jtrain.checkpoint import array_metadata, load_arrays
from jtrain.errors import UserError


def resolve_step_dir(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "state")):
        return path
    for candidate in (os.path.join(path, "checkpoints"), path):
        if os.path.isdir(candidate):
            steps = sorted(int(s) for s in os.listdir(candidate) if s.isdigit())
            if steps:
                return os.path.join(candidate, str(steps[-1]))
    raise UserError(f"{path}: no checkpoint found (expected a workdir, its checkpoints/ or a step directory)")


def read_meta(step_dir: str) -> dict:
    meta_dir = os.path.join(step_dir, "meta")
    for name in ("metadata", "meta"):  # Orbax's JSON item file name inside the item directory
        path = os.path.join(meta_dir, name)
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    return {}


def describe(path: str) -> str:
    step_dir = resolve_step_dir(path)
    meta = read_meta(step_dir)
    tree = array_metadata(os.path.join(step_dir, "state"))
    lines = [f"checkpoint {step_dir}", f"step: {meta.get('step', os.path.basename(step_dir))}",
             f"jtrain version: {meta.get('jtrain_version', '?')}", f"mesh: {meta.get('mesh', '?')}"]
    metrics_path = os.path.join(step_dir, "_CHECKPOINT_METADATA")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f).get("metrics")
        if metrics:
            lines.append("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if meta.get("config"):
        lines.append("config: " + json.dumps(meta["config"], sort_keys=True))
    lines.append("")
    lines.append(_tree_table(tree))
    return "\n".join(lines)


def _tree_table(tree: dict[str, tuple[tuple[int, ...], str]]) -> str:
    rows = [("path", "shape", "dtype", "bytes")]
    total = 0
    for path, (shape, dtype) in tree.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        total += nbytes
        rows.append((path, str(shape), dtype, f"{nbytes:,}"))
    rows.append(("total", "", "", f"{total:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def diff(path: str, other: str) -> str:
    """Structure and value differences between two checkpoints' states."""
    a_dir, b_dir = resolve_step_dir(path), resolve_step_dir(other)
    a_tree, b_tree = array_metadata(os.path.join(a_dir, "state")), array_metadata(os.path.join(b_dir, "state"))
    lines = [f"--- {a_dir}", f"+++ {b_dir}"]
    for p in a_tree:
        if p not in b_tree:
            lines.append(f"- {p} {a_tree[p][0]} {a_tree[p][1]}")
    for p in b_tree:
        if p not in a_tree:
            lines.append(f"+ {p} {b_tree[p][0]} {b_tree[p][1]}")
    common = [p for p in a_tree if p in b_tree]
    changed_shape = [p for p in common if a_tree[p] != b_tree[p]]
    for p in changed_shape:
        lines.append(f"~ {p}: {a_tree[p][0]} {a_tree[p][1]} -> {b_tree[p][0]} {b_tree[p][1]}")

    va, vb = load_arrays(os.path.join(a_dir, "state")), load_arrays(os.path.join(b_dir, "state"))
    same = 0
    for p in common:
        if p in changed_shape:
            continue
        if np.array_equal(va[p], vb[p]):
            same += 1
        else:
            delta = np.max(np.abs(va[p].astype(np.float64) - vb[p].astype(np.float64)))
            lines.append(f"~ {p}: values differ, max |a-b| = {delta:.3g}")
    lines.append(f"{same} of {len(common)} common arrays identical")
    meta_a, meta_b = read_meta(a_dir).get("config", {}), read_meta(b_dir).get("config", {})
    for key in sorted(set(_flat(meta_a)) | set(_flat(meta_b))):
        va_, vb_ = _flat(meta_a).get(key), _flat(meta_b).get(key)
        if va_ != vb_:
            lines.append(f"~ config {key}: {va_!r} -> {vb_!r}")
    return "\n".join(lines)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
