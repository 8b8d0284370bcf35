"""Several processes, one run: `jax.distributed` initialisation and the checks that keep processes in step.

When to initialise (first match wins):
1. explicit: `jtrain train --coordinator HOST:PORT --num_processes N --process_id I`, or the environment
   variables JTRAIN_COORDINATOR, JTRAIN_NUM_PROCESSES, JTRAIN_PROCESS_ID (what scripts/launch/* set);
2. a cluster JAX detects itself: SLURM with more than one task, a multi-host Cloud TPU slice, or
   JTRAIN_DISTRIBUTED=auto;
3. otherwise a single process: nothing to do.

After initialisation every process sees the global device list; each reads only its shard of the data
(`jtrain/data/pipeline.py`), global batches are assembled with `jax.make_array_from_process_local_data`, only
process 0 writes logs, summaries and plots, and Orbax writes checkpoints collectively.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time

import jax
import numpy as np

from jtrain.errors import UserError

# Bounded waits: a process that cannot reach the coordinator, or whose peer died, fails instead of hanging.
CONNECT_TIMEOUT_S = int(os.environ.get("JTRAIN_COORDINATOR_TIMEOUT_S", "60"))
HEARTBEAT_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    coordinator: str  # HOST:PORT of process 0's coordination service
    num_processes: int
    process_id: int


def from_environment(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> ProcessSpec | None:
    """The explicit multi-process setting (flags override environment variables), or None."""
    coordinator = coordinator or os.environ.get("JTRAIN_COORDINATOR")
    num = num_processes if num_processes is not None else _env_int("JTRAIN_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env_int("JTRAIN_PROCESS_ID")
    given = [coordinator is not None, num is not None, pid is not None]
    if not any(given):
        return None
    if not all(given):
        raise UserError("multi-process run needs all of --coordinator, --num_processes and --process_id "
                        "(or JTRAIN_COORDINATOR, JTRAIN_NUM_PROCESSES, JTRAIN_PROCESS_ID)")
    if num < 1:
        raise UserError(f"--num_processes {num}: must be >= 1")
    if not 0 <= pid < num:
        raise UserError(f"--process_id {pid} is not in [0, {num})")
    if ":" not in coordinator:
        raise UserError(f"--coordinator {coordinator!r}: expected HOST:PORT")
    return ProcessSpec(coordinator, num, pid)


def cluster_detected() -> bool:
    """Environments where `jax.distributed.initialize()` finds its own settings (or JTRAIN_DISTRIBUTED=auto,
    which the Cloud TPU launcher sets: there JAX asks the TPU metadata server)."""
    if os.environ.get("JTRAIN_DISTRIBUTED") == "auto":
        return True
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    tpu_pod = len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    return slurm or tpu_pod


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Initialises `jax.distributed` when a multi-process run is asked for or detected; else does nothing.
    Must run before anything touches JAX devices."""
    spec = from_environment(coordinator, num_processes, process_id)
    if spec is None and not cluster_detected():
        return
    # CPU devices of several processes talk through gloo (the default cannot do cross-process collectives);
    # the setting only concerns the CPU backend, so it is harmless next to GPUs or TPUs.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec is not None and spec.process_id != 0:
        # JAX aborts the whole process (no Python exception) when the coordinator never answers, so a
        # worker first checks, within the same bound, that something listens at the address.
        _wait_for_listener(spec.coordinator, CONNECT_TIMEOUT_S)
    kwargs = dict(initialization_timeout=CONNECT_TIMEOUT_S, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    try:
        if spec is None:
            jax.distributed.initialize(**kwargs)
        else:
            jax.distributed.initialize(spec.coordinator, spec.num_processes, spec.process_id, **kwargs)
    except Exception as e:  # JAX raises plain runtime errors; name the address and the limit
        where = spec.coordinator if spec else "the cluster's coordinator"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot join the run's coordinator at {where} within {CONNECT_TIMEOUT_S} s: {reason}") from e


def _wait_for_listener(address: str, timeout_s: float) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UserError(f"cannot join the run's coordinator at {address} within {timeout_s} s: "
                                f"{e.strerror or e}") from e
            time.sleep(0.5)


def check_same_run(config_json: str, version: str) -> None:
    """All processes must train the same config with the same code: compare a fingerprint across processes."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = hashlib.sha256((config_json + "\n" + version + "\n" + _code_fingerprint()).encode()).digest()
    mine = np.frombuffer(digest[:8], np.int64)
    everyone = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1)
    if not np.all(everyone == everyone[0]):
        differing = [i for i, v in enumerate(everyone) if v != everyone[0]]
        raise UserError(f"processes {differing} run a different config or jtrain code than process 0; "
                        f"start every process with the same command and checkout")


def _code_fingerprint() -> str:
    """Hash of jtrain's own source files, so two checkouts at different commits are told apart."""
    root = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    digest.update(name.encode() + f.read())
    return digest.hexdigest()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None
