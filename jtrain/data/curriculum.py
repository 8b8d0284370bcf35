"""Curriculum learning: the training order drawn from a pool of examples ranked by difficulty that grows with the
step (`data.curriculum.*`).

Examples are ranked once: easiest first (order=easy), hardest first (order=hard, the anti-curriculum), or in a
random ranking drawn from the seed (order=random: the same pacing without the difficulty, the control a
curriculum needs). Global batch b is drawn without replacement from the first n(b) examples of the ranking, where
n(b) = max(batch, fraction(b) * N) and the pacing function grows the fraction from `start` to 1 over `steps`:

    linear     start + (1 - start) * t                       t = min(b / steps, 1)
    root       sqrt(start^2 + (1 - start^2) * t)              (Platanios et al. 2019)
    geometric  start * (1 / start)^t                          (exponential pacing)
    step       start + (1 - start) * floor(t * stages) / stages

After `steps` every batch is drawn from the whole split. A batch is a function of (seed, b) and the ranking alone,
so the order resumes exactly mid-pacing and is the same on any number of devices or processes.

Difficulty (higher = harder) comes from a CSV with a row per training example (`jtrain score`'s file: columns
`index` and data.curriculum.column, default its loss), or from a function "package.module:function" given the
training split's inputs and labels, returning (N,) numbers, or (difficulty="column") from the column
data.curriculum.column of your own table (csv:, parquet:, json:, hf:), left out of the features
(jtrain/data/own.py).
"""

from __future__ import annotations

import importlib
import math
import os
import sys

import ml_collections
import numpy as np

from jtrain.errors import ConfigError, DataError

COLUMN = "column"  # data.curriculum.difficulty: the column data.curriculum.column of your own table
CURRICULUM_STREAM = 0x637572  # keeps the curriculum's generators apart from the epoch orders' ([seed, epoch])


def active(config: ml_collections.ConfigDict) -> bool:
    return bool(config.curriculum.difficulty)


def fraction(config: ml_collections.ConfigDict, b: int) -> float:
    """The fraction of the ranking global batch `b` draws from."""
    c = config.curriculum
    t = min(b / c.steps, 1.0)
    if c.pacing == "linear":
        return c.start + (1 - c.start) * t
    if c.pacing == "root":
        return math.sqrt(c.start**2 + (1 - c.start**2) * t)
    if c.pacing == "geometric":
        return c.start * (1 / c.start) ** t
    return c.start + (1 - c.start) * math.floor(t * c.stages) / c.stages


class CurriculumOrder:
    """Item e = the indices (stack * G,) of global batches e*stack ... e*stack + stack - 1 (as EpochOrder's)."""

    def __init__(self, ranking: np.ndarray, global_batch: int, stack: int, seed: int,
                 config: ml_collections.ConfigDict):
        self.ranking, self.global_batch, self.stack = np.asarray(ranking, np.int64), global_batch, stack
        self.seed, self.config = seed, config

    def __len__(self) -> int:
        return sys.maxsize // (self.global_batch * self.stack)

    def __getitem__(self, e: int) -> np.ndarray:
        return np.concatenate([self.batch(e * self.stack + j) for j in range(self.stack)])

    def batch(self, b: int) -> np.ndarray:
        n = len(self.ranking)
        pool = min(n, max(self.global_batch, math.ceil(fraction(self.config, b) * n)))
        rng = np.random.default_rng([self.seed, CURRICULUM_STREAM, b])
        return self.ranking[rng.choice(pool, size=self.global_batch, replace=False)]


def ranking(source, values: np.ndarray, config: ml_collections.ConfigDict, seed: int) -> np.ndarray:
    """Rows of `source` (the training split as trained on), easiest first for order=easy; `values` the difficulty
    of every row of the whole training split, which a subset's (data.train_rows) `rows` index."""
    c = config.curriculum
    if c.order == "random":
        return np.random.default_rng([seed, CURRICULUM_STREAM]).permutation(len(source))
    values = np.asarray(values)[source.rows] if config.train_rows else np.asarray(values)
    order = np.argsort(-values if c.order == "hard" else values, kind="stable")
    return order


def difficulty(split, read, config: ml_collections.ConfigDict) -> np.ndarray:
    """(N,) difficulty of every row of the training split `split`; `read(split)` gives its {inputs, targets}."""
    c = config.curriculum
    n = len(split)
    if ":" in c.difficulty and not os.path.exists(c.difficulty):
        values = _from_function(c.difficulty, split, read)
        where = f"data.curriculum.difficulty={c.difficulty!r}"
    else:
        values = _from_file(c.difficulty, c.column, n)
        where = f"{c.difficulty}: column {c.column!r}"
    return check_values(values, n, where)


def check_values(values: np.ndarray, n: int, where: str) -> np.ndarray:
    """`values` as the (n,) difficulty of the training rows, or one line naming what is wrong."""
    values = np.asarray(values, np.float64)
    if values.shape != (n,):
        raise DataError(f"{where}: {values.shape[0] if values.ndim else 0} values for the training split's {n} rows")
    if not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError(f"{where}: training row {row} has no finite difficulty ({values[row]})")
    return values


def _from_file(path: str, column: str, n: int) -> np.ndarray:
    import pandas as pd

    if not os.path.isfile(path):
        raise DataError(f"data.curriculum.difficulty={path!r}: no such file (a CSV such as `jtrain score` writes, or "
                        f"package.module:function)")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as CSV: {str(e).splitlines()[0]}") from e
    if column not in frame.columns:
        raise DataError(f"{path}: no difficulty column {column!r} (data.curriculum.column); columns: "
                        f"{', '.join(map(str, frame.columns))}")
    if len(frame) != n:
        raise DataError(f"{path}: {len(frame)} rows, but the training split has {n}; score the same split "
                        f"(jtrain score --split train)")
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    if "index" not in frame.columns:
        return values
    index = frame["index"].to_numpy()
    if sorted(index.tolist()) != list(range(n)):
        raise DataError(f"{path}: column 'index' must hold each row 0 ... {n - 1} once")
    out = np.empty(n, np.float64)
    out[index] = values
    return out


def _from_function(name: str, split, read) -> np.ndarray:
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config key 'data.curriculum.difficulty': cannot import {name!r}: "
                          f"{type(e).__name__}: {e}") from e
    everything = read(split)
    try:
        values = fn(everything["inputs"], everything["targets"])
    except Exception as e:  # a user's function: its failure is their input's problem, named in one line
        raise DataError(f"data.curriculum.difficulty={name!r} raised {type(e).__name__}: {e}") from e
    return np.asarray(values, np.float64).reshape(-1) if np.ndim(values) else np.asarray([], np.float64)
