"""Cross-validation folds of the training split (`data.cv.*`, set by `jtrain cv`, jtrain/cv.py).

With data.cv.folds = K > 0 a source's role "train" becomes the training split's rows outside fold
data.cv.fold, and its role "val" the rows of that fold; preparation and statistics are then fitted on the
fold's training rows alone. The folds are scikit-learn's, on the training split's rows in their order:

    data.cv.group set         GroupKFold(K, shuffle=True, random_state=seed): whole groups held out together
    classification, stratify  StratifiedKFold(K, shuffle=True, random_state=seed) on the training labels
    otherwise                 KFold(K, shuffle=True, random_state=seed)

and with data.cv.repeats = R > 1 the Repeated* variants (RepeatedStratifiedKFold, RepeatedKFold; for groups
GroupKFold drawn R times from one RandomState(seed), as sklearn's Repeated* do), taking split
number repeat * K + fold. seed = data.cv.seed, which `jtrain cv` sets to the run's seed.

`Subset` shows a split's chosen rows to the indexed pipeline (jtrain/data/indexed.py) as a split of its own.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from jtrain.errors import ConfigError

CV_TEXT = "cross-validation (data.cv.folds > 0) applies to image and tabular data"


def active(config: ml_collections.ConfigDict) -> bool:
    """Whether `config.data` (the data section) asks for one fold of a cross-validation."""
    return config.cv.folds > 0


def fold_rows(n: int, targets: np.ndarray | None, groups: np.ndarray | None, cv: ml_collections.ConfigDict,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of fold cv.fold of repeat cv.repeat among n training rows, both sorted.

    `targets` are class labels to stratify by (None = no stratification: regression, or cv.stratify off);
    `groups` one group id per row (None = no groups)."""
    from sklearn import model_selection as ms

    folds, repeats = cv.folds, cv.repeats
    if n < folds:
        raise ConfigError(f"config key 'data.cv.folds': {folds} folds of {n} training rows; at most {n}")
    rows = np.zeros((n, 1))  # scikit-learn reads only the number of rows of X
    if groups is not None:
        groups = np.asarray(groups)
        count = len(np.unique(groups))
        if count < folds:
            raise ConfigError(f"config key 'data.cv.folds': {folds} folds but the training rows hold only {count} "
                              f"groups of data.cv.group={cv.group!r}")
        rng = np.random.RandomState(seed)
        splits = (split for _ in range(repeats)
                  for split in ms.GroupKFold(folds, shuffle=True, random_state=rng if repeats > 1 else seed)
                  .split(rows, None, groups))
    elif targets is not None:
        labels = np.asarray(targets)
        labels = labels.astype(str) if labels.dtype == object else labels  # e.g. a table's class names
        values, counts = np.unique(labels, return_counts=True)
        if counts.min() < folds:
            raise ConfigError(f"config key 'data.cv.folds': {folds} stratified folds, but the class "
                              f"{values[np.argmin(counts)]!r} has {counts.min()} training rows; use fewer folds "
                              f"or --no-stratify (data.cv.stratify=False)")
        cv_ = (ms.RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed) if repeats > 1
               else ms.StratifiedKFold(folds, shuffle=True, random_state=seed))
        splits = cv_.split(rows, labels)
    else:
        cv_ = (ms.RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed) if repeats > 1
               else ms.KFold(folds, shuffle=True, random_state=seed))
        splits = cv_.split(rows)
    wanted = cv.repeat * folds + cv.fold
    for number, (train, heldout) in enumerate(splits):
        if number == wanted:
            return np.sort(train), np.sort(heldout)
    raise AssertionError("unreachable: data.cv.fold and data.cv.repeat are validated against folds and repeats")


def describe(cv: ml_collections.ConfigDict) -> str:
    """"fold 2 of 5" (", repeat 1 of 3" with repeats): how a source names its cross-validation roles."""
    return f"fold {cv.fold} of {cv.folds}" + (f", repeat {cv.repeat} of {cv.repeats}" if cv.repeats > 1 else "")


class Subset:
    """Rows `rows` of a split (a TFDS data source or a DecodedSplit), read like a split of their own:
    `len`, `[i]`, `__getitems__` and, over a DecodedSplit, `gather`."""

    def __init__(self, base, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.base[int(self.rows[index])]

    def __getitems__(self, indices) -> list:
        return self.base.__getitems__([int(self.rows[i]) for i in indices])

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.base.gather(self.rows[np.asarray(indices, np.int64)])


def split_targets(source, target_key: str) -> np.ndarray:
    """Every target of a split, in order: what stratified folds of a builtin dataset stratify by."""
    if hasattr(source, "targets"):  # a DecodedSplit: its array
        return np.asarray(source.targets)
    return np.asarray([r[target_key] for r in source.__getitems__(list(range(len(source))))])


def fold_sources(sources: dict, splits: dict[str, str], config: ml_collections.ConfigDict, classification: bool,
                 target_key: str) -> tuple[dict, dict[str, str]]:
    """A builtin dataset's role -> split sources (and names) with train and val replaced by this fold's rows of
    the training split; test as configured."""
    cv = config.cv
    if cv.group:
        raise ConfigError(f"config key 'data.cv.group': {cv.group!r} names a column; groups apply to tables of "
                          f"your own (csv:, parquet:, json:, hf:), not the builtin {config.name!r}")
    train = sources["train"]
    targets = split_targets(train, target_key) if classification and cv.stratify else None
    train_rows, heldout = fold_rows(len(train), targets, None, cv, cv.seed)
    out = {**sources, "train": Subset(train, train_rows), "val": Subset(train, heldout)}
    names = {**splits, "train": f"{splits['train']} without {describe(cv)}", "val": f"{splits['train']} {describe(cv)}"}
    return out, names
