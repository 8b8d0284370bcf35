"""Which training rows, with which labels, a run of an indexed source trains on.

    data.label_noise = f     a fraction f of the training labels replaced by another class, drawn from
                             data.label_noise_seed alone (every seed, fold and subset sees the same noisy labels)
    data.train_rows = FILE   only these rows of the training split (.npy, .txt, or .csv with a column `index`):
                             active learning's labelled set (jtrain/active.py)

Both wrap `sources["train"]` of an IndexedSource after its statistics are fitted, so a run on a subset or on noisy
labels standardises as the full split does, and evaluation of val and test is untouched. Row numbers are those of
the whole training split: the `index` column `jtrain score` writes.
"""

from __future__ import annotations

import copy
import os

import ml_collections
import numpy as np

from jtrain.data import curriculum
from jtrain.data.folds import Subset
from jtrain.errors import ConfigError, DataError

NOISE_STREAM = 0x6E6F6973  # keeps the noise's generator apart from the epoch orders' ([seed, epoch])


class NoisyLabels:
    """A split whose labels at `rows` read as `labels` (jtrain/data/indexed.py read_batch applies them)."""

    def __init__(self, base, rows: np.ndarray, labels: np.ndarray):
        self.base = base
        self.override = np.full(len(base), -1, np.int64)  # (N,) the new label of a replaced row, else -1
        self.override[np.asarray(rows, np.int64)] = labels

    def __len__(self) -> int:
        return len(self.base)

    def relabel(self, indices: np.ndarray, targets: np.ndarray) -> np.ndarray:
        new = self.override[np.asarray(indices, np.int64)]
        return np.where(new >= 0, new, targets)


def apply(source, config: ml_collections.ConfigDict):
    """`source` with data.label_noise and data.train_rows applied to its training split."""
    if not config.label_noise and not config.train_rows and not curriculum.active(config):
        return source
    if not hasattr(source, "sources") or "train" not in getattr(source, "sources", {}) or source.spec.is_text:
        key = ("data.label_noise" if config.label_noise else "data.train_rows" if config.train_rows
               else "data.curriculum.difficulty")
        raise ConfigError(f"config key {key!r}: applies to image, tabular and array datasets; {source.spec.name} "
                          f"is not one")
    source = copy.copy(source)  # a source given in Python may serve other runs as it is
    train = source.sources["train"]
    if config.label_noise:
        if source.spec.num_classes < 2 or source.spec.target_dtype != "int32":
            raise ConfigError(f"config key 'data.label_noise': replaces class labels; {source.spec.name} has none")
        rows, labels = noise(train, source.spec, config.label_noise, config.label_noise_seed)
        train = NoisyLabels(train, rows, labels)
        source.noisy_rows = rows
    if curriculum.active(config) and config.curriculum.difficulty == curriculum.COLUMN:
        if getattr(source, "column_difficulty", None) is None:
            raise ConfigError(f"config key 'data.curriculum.difficulty': 'column' reads data.curriculum.column of a "
                              f"table of your own (csv:, parquet:, json:, hf:); {source.spec.name} is not one")
        source.difficulty = curriculum.check_values(source.column_difficulty, len(train),
                                                    f"data.curriculum.column={config.curriculum.column!r}")
    elif curriculum.active(config):  # read up front: a bad file fails before the run writes anything
        from jtrain.data.indexed import read_batch

        source.difficulty = curriculum.difficulty(
            train, lambda split: read_batch(split, np.arange(len(split)), source.spec), config)
    if config.train_rows:
        train = Subset(train, read_rows(config.train_rows, len(train)))
    source.sources = {**source.sources, "train": train}
    return source


def noise(split, spec, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, their new labels): round(fraction * N) rows, each given a class other than its own, uniformly."""
    from jtrain.data.indexed import read_batch

    n = len(split)
    targets = read_batch(split, np.arange(n), spec)["targets"].astype(np.int64)
    rng = np.random.default_rng([seed, NOISE_STREAM])
    rows = np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False))
    shift = rng.integers(1, spec.num_classes, size=len(rows))  # never the class it had
    return rows, ((targets[rows] + shift) % spec.num_classes).astype(np.int32)


def read_rows(path: str, n: int) -> np.ndarray:
    """The row numbers a data.train_rows file holds, checked against a split of `n` rows."""
    key = f"data.train_rows={path!r}"
    if not os.path.isfile(path):
        raise DataError(f"{key}: no such file")
    try:
        if path.endswith(".npy"):
            rows = np.load(path, allow_pickle=False)
        elif path.endswith(".csv"):
            import pandas as pd

            frame = pd.read_csv(path)
            if "index" not in frame.columns:
                raise DataError(f"{key}: no column 'index' (columns: {', '.join(map(str, frame.columns))})")
            rows = frame["index"].to_numpy()
        else:
            rows = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as e:
        raise DataError(f"{key}: cannot read row numbers: {str(e).splitlines()[0]}") from e
    rows = np.asarray(rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise DataError(f"{key}: holds {rows.dtype} of shape {rows.shape}; give integer row numbers, one per row")
    if len(rows) == 0:
        raise DataError(f"{key}: no rows")
    bad = rows[(rows < 0) | (rows >= n)]
    if len(bad):
        raise DataError(f"{key}: row {int(bad[0])} is outside the training split's {n} rows")
    if len(np.unique(rows)) != len(rows):
        raise DataError(f"{key}: rows repeat ({len(rows) - len(np.unique(rows))} duplicates)")
    return rows.astype(np.int64)
