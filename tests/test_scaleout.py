"""Scale-out on 8 fake CPU devices: the same losses on every mesh, FSDP memory, `jtrain plan` and `inspect --config`.

Each process fixes its device count when JAX starts, so every multi-device run is a subprocess: the real CLI for
the MLP and CNN on digits, tests/decoder_harness.py for the decoder. Runs start together and are awaited
together, so the suite waits for the slowest, not for their sum.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import subprocess
import sys

import jax
import pytest

from _cli import REPO_ROOT

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 2, 4)]  # (data, fsdp, tensor)
STEPS = 8


def _env(devices: int, data_dir: str = "") -> dict:
    # Compile time dominates these short runs: XLA's CPU backend without LLVM optimisation compiles twice as fast.
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return {**os.environ, "JTRAIN_NO_PROGRESS": "1", "JTRAIN_DATA_DIR": data_dir, "XLA_FLAGS": flags,
            "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(args: list[str], devices: int, data_dir: str = "", extra_env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env={**_env(devices, data_dir), **(extra_env or {})},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


def _train_losses(workdir) -> list[float]:
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r["loss"] for r in records if r["split"] == "train"]


@pytest.mark.parametrize("model", [
    ["--config.model.name=mlp", "--config.model.hidden_sizes=(128, 64)"],
    ["--config.model.conv_features=(16, 32)", "--config.model.dense_features=64"],  # the experiment's CNN, smaller
], ids=["mlp", "cnn"])
def test_mlp_and_cnn_train_alike_on_every_mesh(model, digits_data_dir, tmp_path):
    args = ["-m", "jtrain", "train", "--config", "experiments/digits_cnn.py", *model, f"--config.train.steps={STEPS}",
            "--config.train.epochs=0", "--config.train.log_every_steps=1", "--config.data.batch_size=16",
            "--config.data.splits.val=none", "--config.data.splits.test=none", "--config.checkpoint.every_steps=0",
            "--config.data.augment=", "--config.schedule.warmup_steps=2"]
    runs = {(1, 1, 1): _start([*args, "--workdir", str(tmp_path / "single")], 1, digits_data_dir)}
    for mesh in MESHES:
        flags = [f"--config.mesh.{axis}={n}" for axis, n in zip(("data", "fsdp", "tensor"), mesh)]
        runs[mesh] = _start([*args, *flags, "--workdir", str(tmp_path / "x".join(map(str, mesh)))], 8, digits_data_dir)
    logs = {mesh: _finish(p) for mesh, p in runs.items()}

    # Same seed, data and dropout keys: only the order of floating-point sums differs between meshes.
    reference = _train_losses(tmp_path / "single")
    assert len(reference) == STEPS
    for mesh in MESHES:
        losses = _train_losses(tmp_path / "x".join(map(str, mesh)))
        assert losses == pytest.approx(reference, rel=1e-4, abs=1e-5), mesh
    # The sharding table is logged at the start of a sharded run, not of a replicated one.
    assert "partition" in logs[(2, 2, 2)][0] + logs[(2, 2, 2)][1]
    assert "partition" not in logs[(8, 1, 1)][0] + logs[(8, 1, 1)][1]


def test_decoder_trains_alike_on_every_mesh_and_fsdp_splits_its_state():
    harness = os.path.join("tests", "decoder_harness.py")
    single = _start([harness, "1,1,1"], 1)
    many = _start([harness, *(",".join(map(str, m)) for m in MESHES), "1,8,1:init", "1,2,4:fused"], 8)
    reference = json.loads(_finish(single)[0].splitlines()[-1])["1,1,1"]
    results = json.loads(_finish(many)[0].splitlines()[-1])

    for mesh, result in results.items():
        if mesh == "1,8,1:init":
            continue  # created and measured, not trained
        # "1,2,4:fused": jax.nn.dot_product_attention with heads split over tensor gives the same losses too.
        assert result["losses"] == pytest.approx(reference["losses"], rel=1e-4, abs=1e-5), mesh
    assert reference["losses"][-1] < reference["losses"][0] - 0.3  # it learns
    # Tensor parallelism splits heads, MLP and vocabulary; FSDP the largest remaining dimension.
    specs = results["1,2,4"]["specs"]
    assert specs["layers/query/kernel"] == "P(None, 'fsdp', 'tensor', None)"  # (layers, embed, heads, kv)
    assert specs["layers/mlp_in/kernel"] == "P(None, 'fsdp', 'tensor')"  # (layers, embed, mlp)
    assert specs["embed/embedding"] == "P('tensor', 'fsdp')"  # (vocab, embed)

    # fsdp=8: each device holds 1/8 of the parameters and optimizer state, measured from addressable_shards.
    fsdp = results["1,8,1:init"]
    assert fsdp["largest_replicated"] < fsdp["threshold"]  # only small leaves (step, rng, counts) stay whole
    assert fsdp["max_device_bytes"] <= 1.05 * fsdp["state_bytes"] / 8 + fsdp["replicated_bytes"]
    assert fsdp["max_device_bytes"] < 0.13 * fsdp["state_bytes"]
    assert results["8,1,1"]["max_device_bytes"] == results["8,1,1"]["state_bytes"]  # pure data parallel: a copy each


DECODER = ["--config.model.num_layers=2", "--config.model.embed_dim=64", "--config.model.num_heads=4",
           "--config.model.mlp_dim=256", "--config.model.vocab_size=512", "--config.model.max_len=32",
           "--config.data.batch_size=16", "--config.mesh.replication_threshold_bytes=4096"]


def test_plan_compiles_the_decoder_step_for_eight_devices():
    plan = _start(["-m", "jtrain", "plan", "--config", "experiments/decoder_1b_plan.py", "--devices", "8", *DECODER,
                   "--config.mesh.fsdp=4", "--config.mesh.tensor=2"], 1)  # this process has 1: plan makes its own 8
    out, _ = _finish(plan)
    assert "on 8 devices (cpu)" in out and "mesh {'data': 1, 'fsdp': 4, 'tensor': 2}" in out
    assert re.search(r"layers/mlp_in/kernel +2x64x256 +\(-, fsdp, tensor\)", out)  # the sharding table
    for line in ("arguments", "temporaries", "outputs", "FLOPs per step", "all-gather"):
        assert line in out, line
    flops = float(out.split("FLOPs per step (lowered.cost_analysis): ")[1].split()[0])
    # Forward + backward is about 6 x parameters x tokens, remat adds a forward; the embedding lookup is free.
    # Counting the scanned layers' body once (XLA's cost analysis of a loop) would fall below the lower bound.
    params = int(out.split("plan: ")[1].split()[0].replace(",", ""))
    assert 5 * params * 16 * 32 < flops < 12 * params * 16 * 32


def test_plan_from_python_runs_in_a_child_process_and_inspect_refuses_silent_replication():
    from jtrain import config as config_lib, plan as plan_lib

    jax.devices()  # this test process keeps its one device: the plan must move to a child with eight
    config = config_lib.load_experiment("experiments/decoder_1b_plan.py")
    config_lib.apply_overrides(config, [a[len("--config."):] for a in DECODER])
    refused = _start(["-m", "jtrain", "inspect", "--config", "experiments/decoder_1b_plan.py", "--devices", "8",
                      *DECODER, "--config.mesh.fsdp=8", "--config.mesh.rules=('vocab=tensor', 'heads=tensor', "
                      "'mlp=tensor', 'embed=', 'kv=', 'layers=-', '*=data')"], 1)
    result = plan_lib.plan(config, devices=8, compile=False)
    assert len(jax.devices()) == 1
    assert result["devices"] == 8 and result["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert re.search(r"embed/embedding +512x64 +\(fsdp, -\)", result["sharding"])
    assert result["state_bytes_per_device"] * 8 < 1.05 * result["parameters"] * 4 * 3 + 64  # params + Adam moments

    _, err = refused.communicate(timeout=600)
    assert refused.returncode == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("jtrain: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert "parameter embed/embedding (512, 64) (128.0 KiB) would be replicated" in errors[0]
    assert "its logical axes ('vocab', 'embed') map to no mesh axis" in errors[0]


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="libtpu is published for Linux x86-64 only")
def test_plan_for_a_tpu_topology():
    # make test and make test-fast put libtpu beside the environment (.venv/libtpu-side), or it is installed as
    # the `tpu` extra; without either this test fails rather than skips.
    side = os.path.join(sys.prefix, "libtpu-side", "libtpu", "libtpu.so")
    assert importlib.util.find_spec("libtpu") is not None or os.path.isfile(side), \
        f"libtpu is not installed: make test puts it in {side}, or pip install -e '.[tpu]'"
    env = {"TPU_LIBRARY_PATH": side} if os.path.isfile(side) else {}
    out, _ = _finish(_start(["-m", "jtrain", "plan", "--json", "--config", "experiments/decoder_1b_plan.py",
                             "--topology", "v5e:2x2", *DECODER], 1, extra_env=env))
    result = json.loads(out)
    assert result["devices"] == 4 and result["device_kind"] == "TPU v5 lite", result["device_kind"]
    assert result["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    # The decoder's parameters counted by hand from DECODER's sizes (rotary positions: no position table).
    vocab, embed, mlp, layers = 512, 64, 256, 2
    block = (4 * (embed * embed + embed)  # query, key, value, out: kernels and biases
             + 2 * 2 * embed  # two layer norms: scale and bias
             + embed * mlp + mlp + mlp * embed + embed)  # MLP in and out
    params = vocab * embed + (embed * vocab + vocab) + layers * block + 2 * embed  # embedding, head, blocks, final norm
    assert result["parameters"] == params == 166_144
    # fsdp=4 splits every parameter and both AdamW moments four ways (each has a dimension divisible by 4); only
    # the step, AdamW's count and the key (a few bytes) are whole on every device.
    sharded = 3 * params * 4 // 4
    assert sharded <= result["state_bytes_per_device"] <= sharded + 64, result["state_bytes_per_device"]
    # What XLA's TPU compiler allocates per device: at least that state, padded to TPU tiles, yet less than the
    # unsharded state (1.99 MB): the compiled step does keep 1/4 of the state per device.
    assert result["state_bytes_per_device"] <= result["memory"]["arguments"] < 3 * params * 4
    assert result["collectives"]["all-gather"]["count"] > 0  # FSDP gathers the parameters for the step
