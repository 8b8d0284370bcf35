"""Reopening a finished (or running) run from its workdir: its resolved config and a checkpoint's state."""

from __future__ import annotations

import os

import ml_collections

from jtrain import checkpoint as checkpoint_lib
from jtrain import components
from jtrain import config as config_lib
from jtrain.errors import UserError


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; is {workdir!r} a jtrain workdir?")
    with open(path) as f:
        return config_lib.config_from_json(f.read())


def restore(workdir: str, config: ml_collections.ConfigDict, step: int | None = None, data=None):
    """(run, state, step): the run rebuilt from `config` (over `data`, a source given in Python, if not None) and
    its checkpoint `step` (default: the latest)."""
    run = components.build(config, data=data)
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{ckpt.directory}: no checkpoint in this workdir")
        state, _ = ckpt.restore(step, checkpoint_lib.abstract_with_shardings(run.abstract_state, run.state_shardings))
    finally:
        ckpt.close()
    return run, state, int(step)
