"""Pretrained weights into a freshly initialised (abstract or real, sharded) model: one function, `load`.

    variables, report = load(config.init, {"params": params, "batch_stats": ...})
    state = into_state(config.init, state)   # what jtrain.train does when the workdir has no checkpoint yet

Sources (`init.format`, "auto" tells them apart by what the path holds):
    orbax    a jtrain workdir (its newest checkpoint that verifies), a checkpoints/STEP dir, or an Orbax pytree
             dir; written on any mesh, restored straight onto the target's shardings, only the wanted arrays
    msgpack  a Flax `flax.serialization.msgpack_serialize` file of params (or of {"params": ..., "batch_stats": ...});
             msgpack has no index, so the file is parsed into host memory before the shapes are known
    hf       a Hugging Face directory (config.json + model.safetensors, or a sharded model.safetensors.index.json)
             of a model_type a family's name table reads (Family.hf: BERT in jtrain/models/bert.py; llama, qwen2,
             mistral, gpt2 in jtrain/models/decoder_hf.py); each device's shard of each array is read through
             safetensors' lazy slices, never a whole model on the host. `with_pretrained_model` takes the
             decoder's model.* fields from config.json (train.train calls it before building the model).
Nothing is unpickled: Orbax, msgpack and safetensors hold plain arrays.

Paths are the '/'-joined keys the policy table matches (`encoder/layer_0/query/kernel`); other collections than
params are prefixed with their name (`batch_stats/BatchNorm_0/mean`). `init.rename` maps checkpoint paths to
model paths (the first rule whose REGEX fullmatches, REPLACEMENT may use \\1 or \\g<name>); `init.skip` regexes
(fullmatch) name model or checkpoint paths that are never loaded (a new head keeps its fresh initialisation); a
skip pattern that names no path at all is an error (a typo would otherwise load the old head, or fail later).

Before any array is read, `plan` compares shapes from metadata alone and the report lists what will be loaded,
what stays newly initialised, what the checkpoint has that the model does not use, and what mismatches.
`init.strict` turns every problem (missing, unused, shape-mismatched) into one error listing them all;
otherwise the report is printed and loading goes on with what matches (mismatched parameters keep their fresh
values). Dtypes are cast to the model's. `jtrain train` / `finetune` also write the report into the workdir:
load_report.json (the lists, and `problems`) and load_report.txt (every path, one per line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jtrain import checkpoint as checkpoint_lib
from jtrain.errors import ConfigError
from jtrain.policy import param_path

ADAPTERS = "lora/"  # where jtrain/lora.py puts its adapters (lora.KEY), new parameters by construction

FORMATS = ("orbax", "msgpack", "hf")
Spec = tuple[tuple[int, ...], str]  # (shape, dtype)


# ---------------------------------------------------------------------------------------------- the report


@dataclasses.dataclass
class LoadReport:
    source: str
    format: str
    loaded: list[str]  # model paths that take a checkpoint array ("model <- checkpoint" when renamed)
    initialised: list[str]  # model paths the checkpoint does not provide: they keep their fresh values
    skipped: list[str]  # model or checkpoint paths matched by init.skip
    unused: list[str]  # checkpoint paths no model parameter takes
    mismatched: list[str]  # "model path: checkpoint (3, 4) -> model (5, 4)"

    def adapters(self) -> list[str]:
        """Newly initialised LoRA adapters (jtrain/lora.py): new by construction, never missing from a checkpoint."""
        return [p for p in self.initialised if p.startswith(ADAPTERS)]

    def problems(self) -> list[str]:
        """Everything strict mode refuses: missing (not skipped, not an adapter), unused (not skipped) and
        mismatched paths."""
        missing = [p for p in self.initialised if p not in self.skipped and not p.startswith(ADAPTERS)]
        return ([f"missing in checkpoint: {p}" for p in missing] + [f"unused in checkpoint: {p}" for p in self.unused]
                + [f"shape mismatch: {m}" for m in self.mismatched])

    def format_text(self, max_rows: int = 8) -> str:
        adapters = f", {len(self.adapters())} LoRA adapters" if self.adapters() else ""
        lines = [f"pretrained weights from {self.source} ({self.format}): {len(self.loaded)} loaded, "
                 f"{len(self.initialised)} newly initialised ({len(self.skipped)} skipped by init.skip{adapters}), "
                 f"{len(self.unused)} unused, {len(self.mismatched)} shape-mismatched"]
        for title, paths in (("newly initialised", self.initialised), ("unused in checkpoint", self.unused),
                             ("shape-mismatched", self.mismatched)):
            for p in paths[:max_rows]:
                lines.append(f"  {title}: {p}")
            if len(paths) > max_rows:
                lines.append(f"  {title}: ... {len(paths) - max_rows} more")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write(self, directory: str) -> None:
        """load_report.json (these lists and `problems`) and load_report.txt (every path, one per line)."""
        with open(os.path.join(directory, "load_report.json"), "w") as f:
            json.dump({**self.to_dict(), "problems": self.problems()}, f, indent=1)
        lines = [self.format_text(max_rows=0).splitlines()[0]]
        for title, paths in (("loaded", self.loaded), ("newly initialised", self.initialised),
                             ("skipped by init.skip", self.skipped), ("unused in checkpoint", self.unused),
                             ("shape-mismatched", self.mismatched)):
            lines += [f"{title}: {p}" for p in paths]
        with open(os.path.join(directory, "load_report.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- sources


@dataclasses.dataclass
class Source:
    """A checkpoint's arrays by path: their specs from metadata, and a reader for the chosen ones."""

    path: str
    format: str
    specs: dict[str, Spec]  # checkpoint path (after format conversion) -> (shape, dtype)
    # {checkpoint path: target ShapeDtypeStruct (its sharding)} -> {checkpoint path: jax.Array on that sharding}
    read: Callable[[dict[str, jax.ShapeDtypeStruct]], dict[str, jax.Array]]


def open_source(path: str, fmt: str = "auto", scanned: bool = False) -> Source:
    """The checkpoint at `path`; `scanned`: the model stacks its layers (decoder `scan_layers`), which Hugging Face
    layouts then name as stacks of per-layer tensors."""
    if not path:
        raise ConfigError("config key 'init.pretrained': empty path")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise ConfigError(f"config key 'init.pretrained': {path} does not exist")
    fmt = _detect(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ConfigError(f"config key 'init.format': must be auto, {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "hf":
        return _hf_source(path, scanned)
    return {"orbax": _orbax_source, "msgpack": _msgpack_source}[fmt](path)


def _detect(path: str) -> str:
    if os.path.isfile(path):
        if path.endswith(".safetensors"):
            return "hf"
        return "msgpack"
    if os.path.isfile(os.path.join(path, "model.safetensors")) or os.path.isfile(os.path.join(path, INDEX)):
        return "hf"
    return "orbax"


def _orbax_state_dir(path: str) -> str:
    """A workdir, its checkpoints/ dir, a step dir or a pytree dir -> the pytree dir holding the arrays."""
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    steps = sorted((int(n) for n in os.listdir(path) if n.isdigit() and os.path.isdir(os.path.join(path, n))),
                   reverse=True)
    if steps:  # a checkpoints directory: the newest step whose files match their checksums
        for step in steps:
            problem = checkpoint_lib.verify(os.path.join(path, str(step)))
            if not problem:
                path = os.path.join(path, str(step))
                break
            print(f"jtrain: warning: skipping checkpoint {path}/{step}: {problem}", file=sys.stderr)
        else:
            raise ConfigError(f"config key 'init.pretrained': no usable checkpoint in {path} (tried steps {steps})")
    if os.path.isdir(os.path.join(path, "state")):  # a jtrain step dir: state/, data/, meta/
        problem = checkpoint_lib.verify(path)
        if problem:
            raise ConfigError(f"config key 'init.pretrained': checkpoint {path} is corrupted: {problem}")
        path = os.path.join(path, "state")
    return path


def _orbax_source(path: str) -> Source:
    import orbax.checkpoint as ocp

    state_dir = _orbax_state_dir(path)
    try:
        saved = checkpoint_lib.array_metadata(state_dir)
    except Exception as e:  # not an Orbax directory at all: say which path, in one line
        raise ConfigError(f"config key 'init.pretrained': {path} is not a jtrain/Orbax checkpoint "
                          f"({type(e).__name__}); set init.format for another format") from e
    # A jtrain TrainState: weights are params/* and model_state/<collection>/*; the optimizer state, step and rng
    # belong to the run that wrote it. Any other pytree is taken whole.
    is_train_state = any(p.startswith("params/") for p in saved)
    to_ckpt: dict[str, str] = {}  # source path -> path inside the saved tree
    for p in saved:
        if not is_train_state:
            to_ckpt[p] = p
        elif p.startswith("params/"):
            to_ckpt[p[len("params/"):]] = p
        elif p.startswith("model_state/"):
            to_ckpt[p[len("model_state/"):]] = p

    def read(wanted: dict[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
        item: dict = {}
        for src, target in wanted.items():  # nested dict of only the wanted arrays, on the target's shardings
            node, keys = item, to_ckpt[src].split("/")
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = jax.ShapeDtypeStruct(target.shape, np.dtype(saved[to_ckpt[src]][1]), sharding=target.sharding)
        restored = ocp.PyTreeCheckpointer().restore(state_dir, args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
        out = {}
        for src in wanted:
            node = restored
            for k in to_ckpt[src].split("/"):
                node = node[k]
            out[src] = node
        return out

    return Source(state_dir, "orbax", {src: saved[ck] for src, ck in to_ckpt.items()}, read)


def _host_source(path: str, fmt: str, arrays: Callable[[], dict[str, np.ndarray]], specs: dict[str, Spec]) -> Source:
    """A source whose arrays are read into host memory; each device then takes only its own slice."""

    def read(wanted: dict[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
        host = arrays()
        return {src: jax.make_array_from_callback(t.shape, t.sharding, lambda index, a=host[src]: a[index])
                for src, t in wanted.items()}

    return Source(path, fmt, specs, read)


def _msgpack_source(path: str) -> Source:
    from flax import serialization

    try:
        with open(path, "rb") as f:
            tree = serialization.msgpack_restore(f.read())
    except Exception as e:
        raise ConfigError(f"config key 'init.pretrained': {path} is not a Flax msgpack file ({type(e).__name__})") from e
    # msgpack has no index: the file is parsed once (host memory), shapes are read from it before any device copy.
    flat = {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    if any(p.startswith("params/") for p in flat):  # a variables dict: params unprefixed, other collections kept
        flat = {p[len("params/"):] if p.startswith("params/") else p: x for p, x in flat.items()}
    return _host_source(path, "msgpack", lambda: flat, {p: (x.shape, str(x.dtype)) for p, x in flat.items()})


INDEX = "model.safetensors.index.json"  # a sharded checkpoint: {"weight_map": {tensor name: shard file}}


def _hf_files(path: str) -> tuple[str, dict[str, str]]:
    """(directory, {tensor name: safetensors file}) of a Hugging Face directory, single file or sharded."""
    directory = os.path.dirname(path) if os.path.isfile(path) else path
    if os.path.isfile(path) and path.endswith(".safetensors"):
        files = [path]
    elif os.path.isfile(os.path.join(directory, "model.safetensors")):
        files = [os.path.join(directory, "model.safetensors")]
    elif os.path.isfile(os.path.join(directory, INDEX)):
        index_file = os.path.join(directory, INDEX)
        try:
            with open(index_file) as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError) as e:
            raise ConfigError(f"{index_file}: not a safetensors index ({type(e).__name__}: {e})") from e
        for shard in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(directory, shard)):
                raise ConfigError(f"{index_file}: shard {shard} is missing from {directory}")
        return directory, {name: os.path.join(directory, shard) for name, shard in weight_map.items()}
    else:
        raise ConfigError(f"config key 'init.pretrained': {directory} has no model.safetensors or {INDEX}")
    from safetensors import safe_open

    names = {}
    for file in files:
        with safe_open(file, framework="numpy") as f:  # reads the header only
            names.update({name: file for name in f.keys()})
    return directory, names


def read_hf_config(directory: str) -> tuple[str, dict]:
    """(config.json path, its contents); a bare safetensors file without one is BERT (the original import)."""
    config_file = os.path.join(directory, "config.json")
    if not os.path.isfile(config_file):
        return config_file, {"model_type": "bert"}
    try:
        with open(config_file) as f:
            return config_file, json.load(f)
    except ValueError as e:
        raise ConfigError(f"{config_file}: not JSON ({e})") from e


def hf_family(config_file: str, hf: dict):
    """The family (jtrain/models) whose name table reads this config.json's model_type, or one line naming them."""
    from jtrain import models

    model_type = hf.get("model_type", "")
    family = models.hf_family(model_type)
    if family is None:
        raise ConfigError(f"{config_file}: model_type {model_type!r}: jtrain reads Hugging Face weights of "
                          f"{', '.join(repr(t) for t in models.hf_model_types())}")
    if family.hf.model_fields:
        family.hf.model_fields(hf, config_file)  # refuses a feature the family does not implement, naming it
    return family


def _hf_source(path: str, scanned: bool = False) -> Source:
    from safetensors import safe_open

    from jtrain.models.hf_layout import HFEntry

    directory = os.path.dirname(path) if os.path.isfile(path) else path
    config_file, hf = read_hf_config(directory)
    table = hf_family(config_file, hf).hf
    _, files = _hf_files(path)
    with contextlib.ExitStack() as stack:  # headers only: shapes and dtypes of every tensor
        handles = {}
        for file in set(files.values()):
            handles[file] = stack.enter_context(safe_open(file, framework="numpy"))
        headers = {name: handles[file].get_slice(name) for name, file in files.items()}
        shapes = {name: tuple(sl.get_shape()) for name, sl in headers.items()}
        dtypes = {name: _safetensors_dtype(sl.get_dtype()) for name, sl in headers.items()}
    if table.layout:
        layouts, ignored = table.layout(hf, shapes, scanned)
    else:  # one tensor per path: the table's kind says whether it is stored transposed
        layouts, ignored = {}, {n for n in shapes if table.is_buffer(n)}
        for name, shape in shapes.items():
            mapped = None if name in ignored else table.to_path(name)
            if mapped:
                src, kind = mapped
                t = table.transposed(kind)
                layouts[src] = HFEntry(name, tuple((n,) for n in (shape[::-1] if t else shape)), transpose=t)
    specs: dict[str, Spec] = {}
    used = set()
    for src, layout in layouts.items():
        names = [e.name for e in getattr(layout, "layers", (layout,))]
        if not all(n in shapes for n in names):
            continue  # the model has the path, the checkpoint not: reported as newly initialised
        specs[src] = (layout.shape, dtypes[names[0]])
        used.update(names)
    for name in shapes:  # reported as unused under their own names
        if name not in used and name not in ignored:
            specs[name] = (shapes[name], dtypes[name])

    def read(wanted: dict[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
        # Each device's shard is read from the file's lazy slices: never a whole tensor more than a shard needs,
        # never the whole model on the host.
        with contextlib.ExitStack() as stack:
            handles: dict[str, Any] = {}

            def open_slice(name: str):
                file = files[name]
                if file not in handles:
                    handles[file] = stack.enter_context(safe_open(file, framework="numpy"))
                return handles[file].get_slice(name)

            out = {}
            for src, t in wanted.items():
                layout, blocks = layouts[src], {}

                def shard(index, layout=layout, blocks=blocks, t=t):
                    key = tuple(s.indices(n)[:2] for s, n in zip(index, t.shape)) if index else ()
                    if key not in blocks:  # replicated shards read once
                        blocks[key] = layout.read(open_slice, index)
                    return blocks[key]

                # Waiting for each array's transfer frees its host blocks before the next tensor is read: the host
                # holds one tensor's blocks at a time, never the model.
                out[src] = jax.block_until_ready(jax.make_array_from_callback(t.shape, t.sharding, shard))
                blocks.clear()
            return out

    return Source(directory if len(set(files.values())) > 1 else next(iter(files.values())), "hf", specs, read)


def _safetensors_dtype(code: str) -> str:
    return {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
            "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}.get(code, code.lower())


def with_pretrained_model(config: ml_collections.ConfigDict, log: bool = True) -> ml_collections.ConfigDict:
    """`config`, or a copy whose model.name and architecture fields come from init.pretrained's config.json when
    that is a Hugging Face checkpoint of a family that reads its sizes there (the decoder's causal LMs). The run's
    own settings (dtype, scan_layers, remat, attention, dropout, LoRA) stay as configured."""
    from jtrain import config as config_lib
    from jtrain import models

    init = config.init
    if not init.pretrained or init.format not in ("auto", "hf"):
        return config
    path = os.path.abspath(os.path.expanduser(init.pretrained))
    if not os.path.exists(path) or (init.format == "auto" and _detect(path) != "hf"):
        return config  # open_source says what is wrong with the path, at load time
    config_file, hf = read_hf_config(os.path.dirname(path) if os.path.isfile(path) else path)
    family = hf_family(config_file, hf)
    if not family.hf.model_fields:
        return config  # BERT: the experiment sets its sizes (bert.model_config_from_hf)
    name = next(n for n, f in models.families().items() if f is family)
    fields = {"name": name, **family.hf.model_fields(hf, config_file)}
    changed = {f"model.{k}": v for k, v in fields.items() if config.model.get(k) != v}
    tokenizer_file = os.path.join(os.path.dirname(config_file), "tokenizer.json")
    if not config.data.tokenizer and os.path.isfile(tokenizer_file):  # text is read with the model's own ids
        changed["data.tokenizer"] = tokenizer_file
    if not changed:
        return config
    config = config.copy_and_resolve_references()
    for key, value in changed.items():
        config_lib.set_value(config, key, value)
    if log and jax.process_index() == 0:
        print(f"jtrain: from {config_file}: " + ", ".join(f"{k}={v!r}" for k, v in changed.items()),
              file=sys.stderr)
    return config


# ---------------------------------------------------------------------------------------------- planning


def _compile(patterns, key: str) -> list[re.Pattern]:
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise ConfigError(f"config key {key!r}: bad regex {p!r}: {e}") from e
    return out


def parse_rename(rules) -> list[tuple[re.Pattern, str]]:
    parsed = []
    for rule in rules:
        if not isinstance(rule, str) or "=" not in rule:
            raise ConfigError(f"config key 'init.rename': rule {rule!r} is not 'REGEX=REPLACEMENT'")
        regex, _, replacement = rule.rpartition("=")
        parsed.append((_compile([regex], "init.rename")[0], replacement))
    return parsed


def rename_path(path: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        m = pattern.fullmatch(path)
        if m:
            return m.expand(replacement)
    return path


def flat_variables(variables: dict) -> dict[str, Any]:
    """{"params": tree, "batch_stats": tree} -> {path: leaf}; params paths unprefixed, others '<collection>/...'."""
    flat = {}
    for collection, tree in variables.items():
        for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            path = param_path(p)
            flat[path if collection == "params" else f"{collection}/{path}"] = leaf
    return flat


def plan(source: Source, variables: dict, rename=(), skip=()) -> tuple[LoadReport, dict[str, str]]:
    """The report, from shapes alone, and {model path: checkpoint path} of what will be loaded."""
    rules, skips = parse_rename(rename), _compile(skip, "init.skip")
    targets = flat_variables(variables)
    skipped_by = lambda p: any(s.fullmatch(p) for s in skips)
    report = LoadReport(source.path, source.format, [], [], [], [], [])
    provided: dict[str, str] = {}  # model path -> checkpoint path
    for ck in source.specs:
        model_path = rename_path(ck, rules)
        if skipped_by(ck) or skipped_by(model_path):
            report.skipped.append(ck if ck == model_path else f"{model_path} <- {ck}")
        elif model_path in provided:
            raise ConfigError(f"config key 'init.rename': checkpoint paths {provided[model_path]} and {ck} both "
                              f"become {model_path}")
        elif model_path not in targets:
            report.unused.append(ck if ck == model_path else f"{ck} (renamed {model_path})")
        else:
            provided[model_path] = ck
    load: dict[str, str] = {}
    for path, leaf in targets.items():
        if skipped_by(path):
            report.initialised.append(path)
            if path not in report.skipped:
                report.skipped.append(path)
        elif path not in provided:
            report.initialised.append(path)
        else:
            ck = provided[path]
            shape = source.specs[ck][0]
            if tuple(shape) != tuple(leaf.shape):
                report.mismatched.append(f"{path}: checkpoint {tuple(shape)} -> model {tuple(leaf.shape)}")
            else:
                report.loaded.append(path if ck == path else f"{path} <- {ck}")
                load[path] = ck
    # A skip pattern that names nothing is a typo that would otherwise surface late as a strict-mode problem (or,
    # non-strict, as a head silently loaded from the checkpoint): say which pattern, now.
    every = list(targets) + list(source.specs) + [rename_path(ck, rules) for ck in source.specs]
    for pattern in skips:
        if not any(pattern.fullmatch(p) for p in every):
            raise ConfigError(f"config key 'init.skip': {pattern.pattern!r} matches no model or checkpoint path "
                              f"(model paths look like {next(iter(targets), '?')!r})")
    return report, load


# ---------------------------------------------------------------------------------------------- loading


def check(init: ml_collections.ConfigDict, variables: dict) -> tuple[Source, LoadReport, dict[str, str]]:
    """(source, report, {model path: checkpoint path}) of loading init.pretrained into `variables` (arrays or
    shapes), reading headers only; the ConfigError strict loading (or a checkpoint matching nothing) raises.
    `jtrain train` calls it before it writes anything."""
    variables = nn.meta.unbox(dict(variables))  # straight from model.init: logical-axis boxes hold the arrays
    source = open_source(init.pretrained, init.format,
                         scanned=any(p.startswith("layers/") for p in flat_variables(variables)))
    report, load_map = plan(source, variables, init.rename, init.skip)
    problems = report.problems()
    if init.strict and problems:
        shown = "; ".join(problems[:20]) + (f"; ... {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ConfigError(f"init.pretrained {source.path}: {len(problems)} problem{'s' * (len(problems) != 1)} "
                          f"(fix them with init.rename / init.skip, or set init.strict=False): {shown}")
    if not report.loaded:
        raise ConfigError(f"init.pretrained {source.path}: no array matches the model (model paths look like "
                          f"{next(iter(flat_variables(variables)), '?')!r}, checkpoint paths like "
                          f"{next(iter(source.specs), '?')!r}); see init.rename")
    return source, report, load_map


def load(init: ml_collections.ConfigDict, variables: dict, log: bool = True) -> tuple[dict, LoadReport]:
    """`variables` ({"params": ..., other collections}) with every loadable array replaced by the checkpoint's,
    placed on the target's shardings and cast to its dtypes; the report says what happened.

    Strict (`init.strict`): any missing, unused or mismatched path raises one ConfigError listing them all,
    before an array is read (`check`). Otherwise the report is printed (when `log`) and the rest keeps its
    initialisation.
    """
    variables = nn.meta.unbox(dict(variables))
    source, report, load_map = check(init, variables)
    if log:
        print(f"jtrain: {report.format_text()}", file=sys.stderr)
    targets = flat_variables(variables)
    wanted = {ck: _abstract(targets[path]) for path, ck in load_map.items()}
    arrays = source.read(wanted)
    values = {path: _cast(arrays[ck], targets[path].dtype) for path, ck in load_map.items()}
    return _replace(variables, values), report


def _cast(x: jax.Array, dtype) -> jax.Array:
    return x if x.dtype == dtype else x.astype(dtype)  # elementwise: keeps the sharding


def _abstract(leaf) -> jax.ShapeDtypeStruct:
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _replace(variables: dict, values: dict[str, jax.Array]) -> dict:
    out = {}
    for collection, tree in variables.items():
        def pick(p, leaf, collection=collection):
            path = param_path(p)
            path = path if collection == "params" else f"{collection}/{path}"
            return values.get(path, leaf)
        out[collection] = jax.tree_util.tree_map_with_path(pick, tree)
    return out


def into_state(init: ml_collections.ConfigDict, state, log: bool = True, report_dir: str | None = None):
    """A fresh TrainState with pretrained params and model state (e.g. batch statistics); optimizer state,
    step and rng stay as initialised (Adam's moments are zeros whatever the parameters). With `report_dir`
    (the run's workdir) the load report is also written there (LoadReport.write)."""
    variables, report = load(init, {"params": state.params, **state.model_state}, log=log)
    if report_dir:
        report.write(report_dir)
    params = variables.pop("params")
    return state.replace(params=params, model_state=variables)


__all__ = ["FORMATS", "LoadReport", "Source", "check", "flat_variables", "into_state", "load", "open_source", "plan"]
