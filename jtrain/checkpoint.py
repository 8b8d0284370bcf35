"""Orbax checkpoints of a run: train state, data-iterator position and metadata, saved asynchronously.

Layout: `workdir/checkpoints/<step>/{state, data, meta}`. `state` is the TrainState pytree (restored directly
onto the shardings of the current mesh), `data` the grain iterator state (so the data order continues where it
stopped), `meta` a JSON record (step, jtrain version, resolved config). Nothing is pickled.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None, meta: dict) -> None:
        """Starts an async save; returns once device arrays are copied (the state may then be donated)."""
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator | None = None) -> tuple[Any, dict]:
        """State restored onto `abstract_state`'s shardings; the data iterator (if given) is moved in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)
