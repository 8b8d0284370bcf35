"""Reopening a finished (or running) run from its workdir: its resolved config and a checkpoint's state."""

from __future__ import annotations

import json
import os

import ml_collections

from jtrain import checkpoint as checkpoint_lib
from jtrain import components
from jtrain import config as config_lib
from jtrain.errors import UserError

FITTED_FILE = "preparation.json"

# Keys a resume may change: how long to train, how often to log, evaluate and save, how the run is shown, and
# where and how fast data and devices are used. Everything else changes what is trained.
RESUMABLE = frozenset((
    "train.steps", "train.epochs", "train.log_every_steps", "train.progress", "train.early_stopping_patience",
    "train.early_stopping_min_delta", "train.scan_unroll", "eval.every_steps", "checkpoint.every_steps",
    "checkpoint.max_to_keep", "checkpoint.keep_best", "checkpoint.async_save", "data.prefetch",
    "data.transfer_batches", "data.in_memory_mb", "data.dir", "data.eval_batch_size",
))
# A checkpoint restores onto another mesh (resharded); init.* only says where a run that has no checkpoint of its
# own starts from, so a resume never reads it.
RESUMABLE_PREFIXES = ("mesh.", "init.")


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; is {workdir!r} a jtrain workdir?")
    with open(path) as f:
        return config_lib.config_from_json(f.read())


def read_fitted(workdir: str) -> dict | None:
    """What the run fitted on its own data (jtrain/data/own.py), saved as WORKDIR/preparation.json; None if nothing."""
    path = os.path.join(workdir, FITTED_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def restore(workdir: str, config: ml_collections.ConfigDict, step: int | None = None, data=None):
    """(run, state, step): the run rebuilt from `config` (over `data`, a source given in Python, if not None) and
    its checkpoint `step` (default: the latest)."""
    run = components.build(config, data=data, fitted=read_fitted(workdir))
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{ckpt.directory}: no checkpoint in this workdir")
        if step not in ckpt.all_steps():
            raise UserError(f"--step {step}: {ckpt.directory} has checkpoints at steps "
                            f"{', '.join(map(str, ckpt.all_steps()))}")
        state, _ = ckpt.restore(step, checkpoint_lib.abstract_with_shardings(run.abstract_state, run.state_shardings))
    finally:
        ckpt.close()
    return run, state, int(step)


def has_checkpoint(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def config_changes(workdir: str, config: ml_collections.ConfigDict) -> list[tuple[str, object, object]]:
    """(key, old, new) for every field `config` changes against the workdir's config.json; [] without one."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return []
    try:
        old = read_config(workdir)
    except (UserError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); move it away to start this workdir over") from e
    before, after = config_lib.flatten(old), config_lib.flatten(config)
    return [(key, before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)]


def resumable(key: str) -> bool:
    return key in RESUMABLE or key.startswith(RESUMABLE_PREFIXES)


def check_resume(workdir: str, config: ml_collections.ConfigDict, allow_changes: bool = False) -> list:
    """Before a run resumes from the workdir's checkpoints: the changes of `config` against the config the
    checkpoints were trained with. Keys a resume may change are returned; any other change stops the run with one
    line, unless `allow_changes`. Nothing to resume (no checkpoint) = nothing to compare."""
    if not has_checkpoint(workdir):
        return []
    changes = config_changes(workdir, config)
    refused = [c for c in changes if not resumable(c[0])]
    if refused and not allow_changes:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in refused)
        raise UserError(f"{workdir}: its checkpoints were trained with another config ({listed}); resume with the "
                        f"same config, train in a new --workdir, or pass --allow_changes to resume with these")
    return changes


# ---------------------------------------------------------------------------------------------- the lock

LOCK_FILE = ".lock"
_held: dict[str, int] = {}  # lock path -> the open file descriptor holding it, in this process


def lock(workdir: str) -> str | None:
    """Holds the workdir for this process until `unlock` (or the process's end, SIGKILL included: the kernel
    releases an flock with its process). A workdir held by another live process is one line naming it. Returns a
    note when the lock of a process that no longer runs was taken over."""
    import fcntl
    import json
    import socket
    import time

    path = os.path.join(workdir, LOCK_FILE)
    if path in _held:  # this process holds it already (an earlier run here stopped on an error)
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(os.dup(fd), "r") as f:
        try:
            before = json.loads(f.read() or "{}")
        except ValueError:
            before = {}
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        who = f"PID {before.get('pid', '?')} on {before.get('host', '?')}"
        raise UserError(f"{workdir}: in use by another jtrain run ({who}, since {before.get('started', '?')}); wait "
                        f"for it to finish or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    _held[path] = fd
    if before.get("pid") and before.get("pid") != os.getpid():
        return f"took over the lock of PID {before['pid']} on {before.get('host', '?')}, which no longer holds it"
    return None


def unlock(workdir: str) -> None:
    import fcntl

    fd = _held.pop(os.path.join(workdir, LOCK_FILE), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
