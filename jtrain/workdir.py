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
        state, _ = ckpt.restore(step, checkpoint_lib.abstract_with_shardings(run.abstract_state, run.state_shardings))
    finally:
        ckpt.close()
    return run, state, int(step)
