"""Orbax checkpoints of a run: train state, data-iterator position and metadata, saved asynchronously.

Layout: `workdir/checkpoints/<step>/{state, position, meta}` plus `jtrain_checksums.json`. `state` is the
TrainState pytree (restored directly onto the shardings of the current mesh, whatever mesh wrote it), `position`
the data iterator's state as JSON (so the data order continues where it stopped; `data`, one file per process
written by grain's own handler, when several processes train), `meta` a JSON record (step, jtrain version,
resolved config, mesh, metrics). Nothing is pickled.

Surviving crashes:
- Orbax writes each step into a temporary directory and renames it when complete, so a process killed mid-save
  leaves only a `*.orbax-checkpoint-tmp*` directory: restore never sees it and the next start deletes it.
- After a save is finalised, the sha256 of every file goes into `jtrain_checksums.json` (computed by a
  background thread, so reading the files back never stalls the loop). Restore verifies it and skips a checkpoint whose files were truncated or altered (with a
  warning naming it), falling back to the previous good one.
- Retention keeps the newest `max_to_keep` AND the `keep_best` best by a validation metric: Orbax's `best_fn`
  with `max_to_keep` alone may delete the latest checkpoint, so both policies are combined explicitly. "Best"
  is the caller's ranking (`BEST_RANK` in the save's metrics), so what is kept is what the loop reports.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import os
import sys
import threading
from typing import Any, Protocol

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from jtrain.errors import UserError

CHECKSUMS_FILE = "jtrain_checksums.json"
# The data position of a single-process run: Orbax's JSON item, written in the background with the state (grain's
# handler writes its file inside save(), blocking the loop); several processes keep grain's, one file each.
POSITION = "position"
GRAIN_POSITION = "data"
BEST_RANK = "best_rank"  # metric key that ranks checkpoints for keep_best retention


class DataPosition(Protocol):
    """What a checkpoint saves of the data: the loop's feed (jtrain/feed.py DeviceFeed), whose state is JSON bytes."""

    def get_state(self) -> bytes: ...

    def set_state(self, state: bytes) -> None: ...

    def start_prefetch(self) -> None: ...


class CheckpointError(UserError):
    """No usable checkpoint, or a save that could not be written."""


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int, keep_best: int = 0, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self._lock = threading.Lock()
        self._unverified: list[int] = []  # saved steps whose checksums are not written yet
        self._checksummer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jtrain-checksums")
        self._checksumming: concurrent.futures.Future | None = None
        keep = [policies.LatestN(max_to_keep)]
        if keep_best:
            # Saves that pass metrics carry BEST_RANK (the early-stopping tracker's ranking); keep the highest.
            keep.append(policies.BestN(get_metric_fn=lambda m: m[BEST_RANK], reverse=False, n=keep_best,
                                       keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # partial saves of a killed process
            create=True,
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            raise CheckpointError(f"cannot use checkpoint directory {self.directory}: {e.strerror or e}") from e

    # ------------------------------------------------------------------ saving

    def save(self, step: int, state: Any, data_iterator: DataPosition | None, meta: dict,
             metrics: dict | None = None) -> None:
        """Starts an async save; returns once device arrays are copied (the state may then be donated)."""
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None and jax.process_count() == 1:
            items[POSITION] = ocp.args.JsonSave(json.loads(data_iterator.get_state()))
        elif data_iterator is not None:
            items[GRAIN_POSITION] = grain.checkpoint.CheckpointSave(data_iterator)
        with self._lock:
            self._unverified.append(step)
        try:
            self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        except OSError as e:
            raise _save_error(step, self.directory, e) from e
        # By now the previous async save is complete (Orbax finishes one before it starts the next), or this one
        # if synchronous: their files are checksummed in the background.
        self._checksumming = self._checksummer.submit(self._write_checksums)

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except OSError as e:
            raise _save_error(self._unverified[-1] if self._unverified else -1, self.directory, e) from e
        if self._checksumming is not None:
            self._checksumming.result()
        self._write_checksums()

    def close(self) -> None:
        """Waits for pending saves (so they are durable) and releases the manager; idempotent."""
        if self._manager is None:
            return
        try:
            self.wait()
        finally:
            self._manager.close()
            self._manager = None
            self._checksummer.shutdown()

    def _write_checksums(self) -> None:
        """Checksums every saved step whose final directory exists (Orbax renames a step's temporary
        directory only once it is complete): in the background after each save call returns, and on
        wait/close. (Orbax's post-finalisation callback would be too early: it runs before that rename.)"""
        if jax.process_index() != 0:
            return
        with self._lock:
            ready = [s for s in self._unverified if os.path.isdir(os.path.join(self.directory, str(s)))]
            self._unverified = [s for s in self._unverified if s not in ready]
        for step in ready:
            step_dir = os.path.join(self.directory, str(step))
            tmp = os.path.join(step_dir, CHECKSUMS_FILE + ".tmp")
            try:
                with open(tmp, "w") as f:
                    json.dump(directory_checksums(step_dir), f, indent=0, sort_keys=True)
                os.replace(tmp, os.path.join(step_dir, CHECKSUMS_FILE))  # atomic: complete or absent
            except FileNotFoundError:
                pass  # the step was deleted by retention meanwhile

    # ------------------------------------------------------------------ finding and restoring

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def restore(self, step: int, abstract_state: Any, data_iterator: DataPosition | None = None) -> tuple[Any, dict]:
        """State restored onto `abstract_state`'s shardings; the data iterator (if given) is moved in place."""
        problem = verify(os.path.join(self.directory, str(step)))
        if problem:
            raise CheckpointError(f"checkpoint {self.directory}/{step} is corrupted: {problem}")
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        as_json = not os.path.isdir(os.path.join(self.directory, str(step), GRAIN_POSITION))
        if data_iterator is not None:
            items[POSITION if as_json else GRAIN_POSITION] = (
                ocp.args.JsonRestore() if as_json else grain.checkpoint.CheckpointRestore(data_iterator))
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        if data_iterator is not None and as_json:  # grain's handler moves the iterator itself
            data_iterator.set_state(json.dumps(restored[POSITION]).encode())
            data_iterator.start_prefetch()
        return restored["state"], restored["meta"]

    def restore_latest_good(self, abstract_state: Any, data_iterator: DataPosition | None = None
                            ) -> tuple[int, Any, dict] | None:
        """The newest checkpoint that verifies and restores; None when there are none at all.

        A corrupted checkpoint is skipped with a warning naming it; if every one is unusable, one error.
        """
        steps = self.all_steps()
        for step in reversed(steps):
            try:
                state, meta = self.restore(step, abstract_state, data_iterator)
                return step, state, meta
            except UserError as e:
                if not isinstance(e, CheckpointError):
                    raise  # the run's settings, not this checkpoint: every earlier step would refuse them too
                reason = str(e).splitlines()[0]
                print(f"jtrain: warning: skipping checkpoint {self.directory}/{step}: {reason}", file=sys.stderr)
            except Exception as e:  # any failure to read a step means: try the one before
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                print(f"jtrain: warning: skipping checkpoint {self.directory}/{step}: {reason}", file=sys.stderr)
        if steps:
            raise CheckpointError(f"no usable checkpoint in {self.directory} (tried steps {steps}); "
                                  f"move the directory away to start from scratch")
        return None


# ---------------------------------------------------------------------- integrity


def directory_checksums(step_dir: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            if name.startswith(CHECKSUMS_FILE):
                continue
            path = os.path.join(root, name)
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            out[os.path.relpath(path, step_dir)] = digest.hexdigest()
    return out


def verify(step_dir: str) -> str:
    """'' when the step's files match their recorded checksums (or none were recorded yet), else the problem."""
    path = os.path.join(step_dir, CHECKSUMS_FILE)
    if not os.path.isfile(path):
        return ""  # killed between commit and checksum: Orbax's commit marker is all we have
    with open(path) as f:
        expected = json.load(f)
    actual = directory_checksums(step_dir)
    for name, digest in expected.items():
        if name not in actual:
            return f"file {name} is missing"
        if actual[name] != digest:
            return f"file {name} does not match its checksum"
    return ""


def _save_error(step: int, directory: str, e: OSError) -> CheckpointError:
    why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return CheckpointError(f"saving checkpoint step {step} in {directory} failed: {why}; "
                           f"earlier checkpoints there are intact")


# ---------------------------------------------------------------------- reading without restoring


@dataclasses.dataclass
class RestorePlan:
    """What restoring a checkpoint onto a target tree would do, computed from metadata only."""

    loaded: list[str]
    missing: list[str]  # in the target, not in the checkpoint
    unused: list[str]  # in the checkpoint, not in the target
    mismatched: list[str]  # same path, different shape or dtype: "path: (3, 4) float32 -> (5, 4) float32"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unused or self.mismatched)


def array_metadata(state_dir: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """'/'-joined path -> (shape, dtype) of every array in a saved pytree, without reading array data."""
    tree = ocp.StandardCheckpointer().metadata(state_dir).item_metadata.tree
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[path_str(path)] = (tuple(leaf.shape), str(leaf.dtype))
    return flat


def load_arrays(state_dir: str) -> dict[str, np.ndarray]:
    """'/'-joined path -> NumPy value of every array in a saved pytree (PRNG keys as their raw key data)."""
    # Onto this process's first device, whatever mesh saved it: the saved shardings name devices that a process
    # with fewer of them (a 1-device `jtrain inspect --diff` of an 8-device run) does not have.
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                                    checkpointer.metadata(state_dir).item_metadata.tree)
    restored = checkpointer.restore(state_dir, target)
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[path_str(path)] = np.asarray(leaf)
    return out


def plan_restore(state_dir: str, target: Any) -> RestorePlan:
    """Dry run: compares a checkpoint's arrays with a target pytree of arrays or ShapeDtypeStructs."""
    saved = array_metadata(state_dir)
    wanted = {path_str(p): (tuple(x.shape), str(x.dtype)) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
    plan = RestorePlan([], [], [], [])
    for path, spec in wanted.items():
        if path not in saved:
            plan.missing.append(path)
        elif saved[path] != spec:
            plan.mismatched.append(f"{path}: {saved[path][0]} {saved[path][1]} -> {spec[0]} {spec[1]}")
        else:
            plan.loaded.append(path)
    plan.unused = [p for p in saved if p not in wanted]
    return plan


def path_str(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)
