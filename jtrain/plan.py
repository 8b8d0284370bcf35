"""`jtrain plan`: compile the real train step ahead of time for a mesh this machine does not have.

    jtrain plan --config experiments/decoder_1b_plan.py --devices 8          # 8 fake CPU devices
    jtrain plan --config experiments/decoder_1b_plan.py --topology v5e:4x4   # a TPU slice (needs the `tpu` extra)

Nothing is trained and no data is read: the state and the batch are shapes with shardings
(`jax.ShapeDtypeStruct`), `jax.jit(train_step).lower(state, batch).compile()` builds the per-device program
exactly as `jtrain train` would, and XLA's own analyses report its memory (arguments = state + batch,
temporaries, outputs), FLOPs and the collectives in it. Fake CPU devices must be requested before JAX starts
its backend, so when it already has (a notebook, a test process) the plan runs in a child process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections

from jtrain import components, config as config_lib, data as data_lib, methods
from jtrain import mesh as mesh_lib
from jtrain import models
from jtrain import sharding
from jtrain.data.source import DatasetSpec
from jtrain.errors import UserError
from jtrain.state import count_params

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# `%name = f32[8,128]{1,0} all-gather(...)` or an async `... all-gather-start(...)`; the result shape comes first.
_COLLECTIVE_RE = re.compile(r"=\s*(?P<shape>\S.*?)\s(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\(")
_SHAPE_RE = re.compile(r"\b(pred|[subf]\d+|bf16|f8\w*)\[([\d,]*)\]")
# TPU generations as `--topology GEN:AxB[xC]`: libtpu's topology name prefix and chip configuration.
TPU_GENERATIONS = {"v4": ("v4", "megacore"), "v5p": ("v5", "megacore"), "v5e": ("v5e", "default"),
                   "v6e": ("v6e", "default")}
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


# ---------------------------------------------------------------- devices


def fake_cpu_env(num_devices: int, env: dict | None = None) -> dict:
    """The environment for a process that should see `num_devices` CPU devices (set before JAX starts)."""
    env = dict(os.environ if env is None else env)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}={num_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def use_fake_devices(num_devices: int) -> None:
    """Makes this process see `num_devices` CPU devices, if JAX's backend has not started yet (the CLI calls it
    first thing; a library call never changes its caller's devices, it plans in a child process instead)."""
    from jax._src import xla_bridge  # no public way to ask whether the backend exists yet

    if not xla_bridge.backends_are_initialized():
        os.environ.update(fake_cpu_env(num_devices))
        jax.config.update("jax_platforms", "cpu")  # the env var is read at import, which may be past


def _has_fake_devices(num_devices: int) -> bool:
    devices = jax.devices()
    return devices[0].platform == "cpu" and len(devices) == num_devices


def topology_devices(topology: str) -> list:
    """Compile-only devices of a TPU slice such as `v5e:16x16` or `v4:2x2x2` (needs libtpu, no TPU)."""
    gen, _, shape = topology.partition(":")
    try:
        dims = tuple(int(d) for d in shape.split("x"))
    except ValueError:
        dims = ()
    if gen not in TPU_GENERATIONS or len(dims) not in (2, 3):
        raise UserError(f"--topology {topology!r}: expected GEN:AxB[xC] with GEN in {', '.join(TPU_GENERATIONS)}, "
                        f"e.g. v5e:16x16 or v4:2x2x2")
    # libtpu as a package, or as a file named by TPU_LIBRARY_PATH (JAX reads it): the tests keep it there, outside
    # the environment, so that CPU runs never load it.
    if importlib.util.find_spec("libtpu") is None and not os.path.isfile(os.environ.get("TPU_LIBRARY_PATH", "")):
        raise UserError(f"--topology {topology}: needs libtpu (pip install 'jtrain[tpu]'); "
                        f"--devices N plans on fake CPU devices instead")
    from jax._src import xla_bridge
    from jax.experimental import topologies

    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_platforms", "cpu")  # compile-only TPU devices; no attempt to open a local TPU
    # libtpu's lock file guards TPU chips between processes; compiling for a topology opens none, and any other
    # JAX process with libtpu installed holds that lock for its life, which would refuse the plan.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    name, chip_config = TPU_GENERATIONS[gen]
    # Wrap-around links exist on full tori only: 16-wide 2-D slices, and 3-D slices of at least 4 per side.
    wrap = tuple(d >= 16 for d in dims) if len(dims) == 2 else (all(d >= 4 for d in dims),) * 3
    wrap = wrap + (False,) * (3 - len(wrap))
    return topologies.get_topology_desc(topology_name=f"{name}:{shape}", platform="tpu", chip_config_name=chip_config,
                                        chips_per_host_bounds=(2, 2, 1), num_slices=1, wrap=wrap).devices


# ---------------------------------------------------------------- shapes instead of data


def batch_spec(config: ml_collections.ConfigDict) -> DatasetSpec:
    """What one example looks like, without reading any data: tokens for a family that shapes its own (the
    decoder's, jtrain/models/decoder.py plan_tokens), else the dataset's spec."""
    tokens = models.family(config.model.name).plan_tokens
    if tokens is not None:
        vocab, length = tokens(config)
        return DatasetSpec(name="tokens", builder=None, splits={}, num_classes=vocab, input_shape=(length,),
                           input_key="tokens", target_key="tokens", scale=1.0, mean=0.0, std=1.0,
                           examples=methods.build(config).examples)  # the training method's batches
    return data_lib.spec_of(config.data)


def abstract_batch(config: ml_collections.ConfigDict, spec: DatasetSpec, mesh, layout: tuple[int, ...] = ()) -> dict:
    """The global training batch as shapes, split over the batch axes like `Run.put_batch`; `layout` is the
    training method's (Method.layout), e.g. (2,) for DPO's pairs."""
    b, sh = config.data.batch_size, mesh_lib.batch_sharding(mesh)
    if spec.name == "tokens":  # next-token prediction, as jtrain/data/text.py batches it: (B, T) each
        rows = (b, *layout, *spec.input_shape)  # (B, T), or (B, 2, T) for pairs
        return {"inputs": jax.ShapeDtypeStruct(rows, jnp.int32, sharding=sh),
                "targets": jax.ShapeDtypeStruct(rows, jnp.int32, sharding=sh),
                "mask": jax.ShapeDtypeStruct(rows, jnp.float32, sharding=sh)}
    return {"inputs": jax.ShapeDtypeStruct((b, *spec.input_shape), jnp.float32, sharding=sh),  # (B, H, W, C)
            "targets": jax.ShapeDtypeStruct((b,), jnp.dtype(spec.target_dtype), sharding=sh)}  # labels or values


# ---------------------------------------------------------------- the plan


def plan(config: ml_collections.ConfigDict, devices: int = 0, topology: str = "", compile: bool = True) -> dict:
    """Shardings, and (with `compile`) per-device memory, FLOPs and collectives of one train step of `config`
    on `devices` fake CPU devices, a TPU `topology`, or this machine's devices (neither given).

    Returns a JSON-able dict (`format_plan` prints it). When this process does not have exactly `devices` CPU
    devices, the plan is made in a child process that does."""
    if devices and topology:
        raise UserError("give --devices or --topology, not both")
    if devices and not _has_fake_devices(devices):
        return _plan_in_child(config, devices, compile)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.train.steps = config.train.steps or 1000  # the schedule's length changes no shape
    spec = batch_spec(config)
    target = topology_devices(topology) if topology else jax.devices()
    run = _build(config, spec, target)
    result = {
        "devices": len(target),
        "platform": topology or target[0].platform,
        "device_kind": target[0].device_kind,
        "mesh": dict(run.mesh.shape),
        "parameters": count_params(run.abstract_state.params),
        "batch": {k: list(v.shape) for k, v in abstract_batch(config, spec, run.mesh, run.method.layout).items()},
        "state_bytes_per_device": sharding.per_device_bytes(run.abstract_state, run.state_shardings),
        "sharding": sharding.report(run.abstract_state, run.state_shardings),
    }
    if compile:
        lowered = _lower(run, config, spec)
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:  # the compiler's answer for a program that cannot fit
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            raise UserError(f"the train step does not fit on {target[0].device_kind} with mesh "
                            f"{dict(run.mesh.shape)}: {str(e).splitlines()[0].split(': ', 1)[-1].rstrip('.')}; shard it further "
                            f"(mesh.fsdp, mesh.tensor), use a smaller data.batch_size or turn on model.remat") from e
        result.update(_analyses(compiled))
        result["flops"] = step_flops(config, spec)
    return result


def step_flops(config: ml_collections.ConfigDict, spec: DatasetSpec) -> float:
    """FLOPs of one whole training step, from XLA's cost analysis of the unpartitioned program.

    The analysis counts a loop body once, so scanned layers are unrolled and the call is of one step; and it
    needs a backend that can analyse, so the program is lowered (not compiled) for one CPU device whatever the
    target is."""
    flat = config.copy_and_resolve_references()
    with flat.unlocked():
        flat.model.scan_layers = False
        flat.train.steps_per_call = 1
        flat.mesh.data, flat.mesh.fsdp, flat.mesh.tensor = 1, 1, 1
    cost = _lower(_build(flat, spec, jax.devices("cpu")[:1]), flat, spec).cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}  # older JAX: one dict per device
    return float(cost.get("flops", 0.0))


def _build(config: ml_collections.ConfigDict, spec: DatasetSpec, devices) -> components.Run:
    return components.build(config, data=data_lib.SpecOnly(spec), devices=devices)


def _lower(run: components.Run, config: ml_collections.ConfigDict, spec: DatasetSpec):
    """The loop's own jitted call (Run.train_call: the state as flat arrays, train.steps_per_call steps) on shapes."""
    flat = jax.eval_shape(run.state_codec.flatten, run.abstract_state)  # PRNG keys as their raw uint32 data
    arrays = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
              for a, s in zip(flat, jax.tree.leaves(run.state_shardings))]
    batch = abstract_batch(config, spec, run.mesh, run.method.layout)
    steps = config.train.steps_per_call
    if steps == 1:
        return run.train_call(1).lower(arrays, batch)
    stacked = mesh_lib.batch_sharding(run.mesh, stacked=True)
    chunk = {k: jax.ShapeDtypeStruct((steps, *b.shape), b.dtype, sharding=stacked) for k, b in batch.items()}
    index = jax.ShapeDtypeStruct((), jnp.int32, sharding=mesh_lib.replicated(run.mesh))
    return run.train_call(steps).lower(arrays, chunk, index)


def _analyses(compiled) -> dict:
    mem = compiled.memory_analysis()
    memory = {
        "arguments": mem.argument_size_in_bytes,  # state + batch, per device
        "outputs": mem.output_size_in_bytes,
        "aliased": mem.alias_size_in_bytes,  # outputs written into donated arguments (the state)
        "temporaries": mem.temp_size_in_bytes,  # activations, gradients, collective buffers
    }
    # An upper bound of what is live at once; TPU and GPU backends also report their own peak.
    memory["total"] = memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temporaries"]
    memory["peak"] = getattr(mem, "peak_memory_in_bytes", 0) if result_platform_reports_peak(compiled) else 0
    return {"memory": memory, "collectives": count_collectives(compiled.as_text())}


def result_platform_reports_peak(compiled) -> bool:
    """XLA:CPU's peak_memory_in_bytes leaves out temporaries; only accelerators' figure is worth printing."""
    try:
        return compiled.input_shardings[0][0].mesh.devices.flat[0].platform != "cpu"
    except (AttributeError, IndexError, TypeError):
        return False


def count_collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """{op: {"count", "bytes"}} over the compiled HLO; bytes = size of the op's result on one device."""
    out = {op: {"count": 0, "bytes": 0} for op in COLLECTIVES}
    for m in _COLLECTIVE_RE.finditer(hlo_text):
        sizes = [_DTYPE_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
                 for dtype, dims in _SHAPE_RE.findall(m.group("shape"))]
        # An async start returns (operand, result, ...): its result is the largest buffer.
        nbytes = (max(sizes) if m.group("start") else sum(sizes)) if sizes else 0
        out[m.group("op")]["count"] += 1
        out[m.group("op")]["bytes"] += nbytes
    return out


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8}


def format_plan(result: dict) -> str:
    size = sharding.format_bytes
    where = dict.fromkeys([result["platform"], result["device_kind"]])  # "cpu" once, "v5e:16x16, TPU v5 lite"
    lines = [f"plan: {result['parameters']:,} parameters on {result['devices']} devices ({', '.join(where)}), "
             f"mesh {result['mesh']}, batch "
             + ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in result["batch"].items()),
             "", result["sharding"]]
    if "memory" in result:
        m = result["memory"]
        flops = result["flops"]
        lines += ["", "per device (compiled.memory_analysis):",
                  f"  arguments    {size(m['arguments']):>10}   state + batch",
                  f"  outputs      {size(m['outputs']):>10}   new state + metrics ({size(m['aliased'])} reuse donated "
                  f"arguments)",
                  f"  temporaries  {size(m['temporaries']):>10}   activations, gradients, optimizer update",
                  f"  total        {size(m['total']):>10}   arguments + temporaries + outputs not aliased",
                  *([f"  peak         {size(m['peak']):>10}   as the backend reports it"] if m["peak"] else []),
                  f"FLOPs per step (lowered.cost_analysis): {flops:.3g} in all, "
                  f"{flops / result['devices']:.3g} per device if evenly split",
                  "collectives in the compiled step (count, result bytes per device):"]
        found = [(op, c) for op, c in result["collectives"].items() if c["count"]]
        lines += [f"  {op:<19} {c['count']:>5}  {size(c['bytes']):>10}" for op, c in found] or ["  none"]
    return "\n".join(lines)


# ---------------------------------------------------------------- child process


def _plan_in_child(config: ml_collections.ConfigDict, devices: int, compile: bool) -> dict:
    """This process's JAX already has its devices: plan in a fresh one with `devices` fake CPU devices."""
    request = json.dumps({"config": config_lib.to_json(config), "devices": devices, "compile": compile})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = fake_cpu_env(devices)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-m", "jtrain.plan"], input=request, capture_output=True, text=True, env=env)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or ["no output"]
        error = next((line for line in lines if line.startswith("jtrain: error: ")), None)
        if error:
            raise UserError(error[len("jtrain: error: "):])
        raise RuntimeError(f"jtrain plan in a child process failed: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_main() -> None:
    request = json.loads(sys.stdin.read())
    use_fake_devices(request["devices"])
    try:
        result = plan(config_lib.config_from_json(request["config"]), request["devices"], compile=request["compile"])
    except UserError as e:
        print(f"jtrain: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main()
