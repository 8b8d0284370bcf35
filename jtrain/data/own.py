"""Your own data as a source: tables (CSV, Parquet, JSON), NumPy files, image folders, Hugging Face datasets and
arrays or DataFrames passed in Python, read through the same indexed pipeline as the builtin datasets.

    data.name = csv:PATH | parquet:PATH | json:PATH    a file, a glob, or a path with {split} (train / val / test)
              = npz:PATH                               arrays by key: x, y or x_train, y_train, x_val, ...
              = images:DIR                             a subfolder per class, or train / val / test folders of them
              = hf:NAME_OR_PATH                        Hugging Face `datasets`: a save_to_disk folder, parquet / arrow files, a hub name
    jtrain.train(config, workdir, data=jtrain.data.from_arrays(x, y))   NumPy arrays or a DataFrame with data.target

One pool of rows is split by data.split_ratios (stratified by class for classification, seeded by
data.split_seed). Tables are prepared (jtrain/data/tabular.py: imputation, encoding, scaling) with constants
fitted on the training split only. Everything a run needs to prepare new inputs the same way (`fitted`: the
preparation, input statistics, class names, the target's transform) is saved in the workdir and in every
checkpoint, and `jtrain eval`, `jtrain predict` and a resume use the saved one rather than fitting again.

Prepared arrays are cached in <data dir>/own/<kind>-<sha256>/, keyed by the input files' content and the
config fields that shape the result, so a changed file is prepared again and an unchanged one is not.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Any

import ml_collections
import numpy as np

from jtrain.data import curriculum, folds, registry
from jtrain.data.decoded import DecodedSplit
from jtrain.data.indexed import IndexedSource, training_stats
from jtrain.data.source import ROLES, DatasetSpec, Stats
from jtrain.errors import ConfigError, DataError

TABLE_KINDS = ("csv", "parquet", "json")
KINDS = (*TABLE_KINDS, "npz", "images", "hf")
FITTED_FORMAT = 1  # version of the `fitted` record


def kind_of(name: str) -> str:
    """"csv" for data.name="csv:...", "" for anything that is not one's own files."""
    prefix, sep, _ = name.partition(":")
    return prefix if sep and prefix in KINDS else ""


def columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


# ---------------------------------------------------------------------------------------------- the source


class OwnSource(IndexedSource):
    """An indexed source over prepared arrays, plus what was fitted (`fitted`) and what the data looked like
    (`report`, written to WORKDIR/data_report.json)."""

    def __init__(self, spec: DatasetSpec, arrays: dict[str, tuple[np.ndarray, np.ndarray]], splits: dict[str, str],
                 stats: Stats, fitted: dict, report: dict | None = None):
        sources = {role: DecodedSplit(x, y, "inputs", "targets") for role, (x, y) in arrays.items()}
        super().__init__(spec=spec, sources=sources, splits=splits, stats=stats)
        self.fitted, self.report = fitted, report or {}

    @property
    def target_std(self):
        # A log target is decoded to its units on the device (`target_decode`), so reports need no rescaling.
        return None if self.fitted.get("log_target") else self.stats.target_std

    def target_decode(self):
        """For a log target: the jnp function from model outputs (standardised log values) to the target's
        units, applied to outputs and targets before the regression metrics (jtrain/step.py); else None."""
        return target_decoder(self.fitted)


def target_decoder(fitted: dict):
    if not fitted.get("log_target"):
        return None
    import jax.numpy as jnp

    mean, std = fitted["stats"].get("target_mean"), fitted["stats"].get("target_std")
    mean = np.float32(0.0 if mean is None else mean)
    std = np.float32(1.0 if std is None else std)
    return lambda values: jnp.exp(values * std + mean)


def load(config: ml_collections.ConfigDict, fitted: dict | None = None) -> OwnSource:
    """The source of config.data (data.name = KIND:PATH); with `fitted` (a run's saved record) the data is
    prepared with it instead of fitting again."""
    kind, _, path = config.name.partition(":")
    if not path:
        raise ConfigError(f"config key 'data.name': {config.name!r} names no path after '{kind}:'")
    if kind == "hf":
        from jtrain.data import hf

        dsdict = hf.load(path)
        key_parts = [hf_fingerprint(dsdict)]
        reader = lambda: _from_hf(dsdict, config, fitted)  # noqa: E731
    else:
        paths = input_files(kind, path)
        key_parts = [registry.fingerprint(paths)]
        if kind == "images":  # a file moved to another class folder changes the labels, not the bytes
            key_parts.append([os.path.relpath(p, path) for p in paths])
        reader = lambda: _read(kind, path, config, fitted)  # noqa: E731
    key = cache_key(kind, key_parts, config, fitted)
    cache = os.path.join(registry.data_dir(config.dir), "own", f"{kind}-{key[:16]}")
    cached = _read_cache(cache)
    if cached is None:
        cached = reader()
        _write_cache(cache, *cached)
    arrays, fitted_, report = cached
    return build_source(config, arrays, fitted_, report)


def build_source(config: ml_collections.ConfigDict, arrays: dict, fitted: dict, report: dict) -> OwnSource:
    """The source over prepared arrays and the record of what was fitted."""
    x_train = arrays["train"][0]
    is_image = fitted["kind"] == "images"
    stats_record = fitted["stats"]
    spec = DatasetSpec(name=config.name, num_classes=len(fitted["class_names"]),
                       input_shape=tuple(x_train.shape[1:]), scale=fitted.get("scale", 1.0),
                       mean=stats_record.get("mean") if is_image else None,
                       std=stats_record.get("std") if is_image else None,
                       class_names=tuple(fitted["class_names"]),
                       target_dtype="float32" if fitted["task"] == "regression" else "int32")
    stats = Stats(_array(stats_record["mean"]), _array(stats_record["std"]),
                  _array(stats_record.get("target_mean")), _array(stats_record.get("target_std")))
    if stats_record.get("target_mean") is not None and not config.normalize_targets and not fitted.get("log_target"):
        stats = Stats(stats.mean, stats.std)
    splits = {role: f"{len(y)} rows of {config.name}" for role, (_, y) in arrays.items()}
    report = dict(report)
    difficulty = report.pop(DIFFICULTY, None)
    source = OwnSource(spec, arrays, splits, stats, fitted, report)
    if difficulty is not None:  # data.curriculum.difficulty="column": the training rows' values of the column
        source.column_difficulty = np.asarray(difficulty, np.float64)
    return source


def _array(value):
    return None if value is None else np.asarray(value, np.float32)


# ---------------------------------------------------------------------------------------------- files and caching


def input_files(kind: str, path: str) -> list[str]:
    """Every file the data is read from, sorted: what the cache key fingerprints."""
    if kind == "images":
        from jtrain.data import images

        return images.files(path)
    if "{split}" in path:
        found = [path.format(split=role) for role in ROLES if os.path.isfile(path.format(split=role))]
        if not os.path.isfile(path.format(split="train")):
            raise DataError(f"{path.format(split='train')}: not found (data.name={kind}:{path} needs a train file)")
        return found
    if any(c in path for c in "*?["):
        found = sorted(glob.glob(os.path.expanduser(path)))
        if not found:
            raise DataError(f"data.name={kind}:{path}: the glob matches no file")
        return found
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (data.name={kind}:{path})")
    return [path]


DIFFICULTY = "curriculum_difficulty"  # the report's key for a difficulty column's training values, cache only
SHAPING_KEYS = ("target", "features", "categorical", "numeric", "drop", "task", "missing_target", "split_ratios",
                "split_seed", "image_size", "image_channels")


def cache_key(kind: str, parts: list[str], config: ml_collections.ConfigDict, fitted: dict | None) -> str:
    shaping = {k: config[k] for k in SHAPING_KEYS}
    shaping["prep"] = config.prep.to_dict()
    if config.curriculum.difficulty == curriculum.COLUMN:  # the column is left out of the features and kept
        shaping["difficulty_column"] = config.curriculum.column
    if folds.active(config):  # each fold prepares its own training rows (keys of runs without folds stay as they were)
        shaping["cv"] = config.cv.to_dict()
    dropped = [role for role in ROLES if config.splits[role] == "none"]
    if dropped:
        shaping["none"] = dropped
    digest = hashlib.sha256(json.dumps([FITTED_FORMAT, kind, parts, shaping, fitted], sort_keys=True,
                                       default=list).encode())
    return digest.hexdigest()


def _read_cache(cache: str):
    try:
        with open(os.path.join(cache, "fitted.json")) as f:
            fitted = json.load(f)
        with open(os.path.join(cache, "report.json")) as f:
            report = json.load(f)
        arrays = {role: (np.load(os.path.join(cache, f"{role}.inputs.npy"), mmap_mode="r"),
                         np.load(os.path.join(cache, f"{role}.targets.npy"), mmap_mode="r"))
                  for role in fitted["roles"]}
    except (OSError, ValueError, KeyError):
        return None  # not prepared yet, or torn: prepare again
    return arrays, fitted, report


def _write_cache(cache: str, arrays: dict, fitted: dict, report: dict) -> None:
    partial = f"{cache}.{os.getpid()}.partial"
    try:
        os.makedirs(partial, exist_ok=True)
        for role, (x, y) in arrays.items():
            np.save(os.path.join(partial, f"{role}.inputs.npy"), x)
            np.save(os.path.join(partial, f"{role}.targets.npy"), y)
        for name, record in (("fitted.json", fitted), ("report.json", report)):
            with open(os.path.join(partial, name), "w") as f:
                json.dump(record, f, indent=1)
        if not os.path.isdir(cache):
            os.replace(partial, cache)  # whole or absent: a reader never sees half a cache
    except OSError:
        pass  # a read-only data dir: this run keeps its arrays in memory
    finally:
        if os.path.isdir(partial):
            import shutil

            shutil.rmtree(partial, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- readers


def read_table(kind: str, path: str):
    """One file as a DataFrame, read with pandas (pyarrow for Parquet)."""
    import pandas as pd

    try:
        if kind == "csv":
            frame = pd.read_csv(path)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=path.endswith((".jsonl", ".ndjson")))
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as {kind}: {str(e).splitlines()[0]}") from e
    if len(frame) == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    return frame


def _read(kind: str, path: str, config: ml_collections.ConfigDict, fitted: dict | None):
    if kind == "images":
        return _read_images(path, config, fitted)
    if kind == "npz":
        return _read_npz(input_files(kind, path), config, fitted)
    import pandas as pd

    files = input_files(kind, path)
    if "{split}" in path:
        frames = {role: read_table(kind, path.format(split=role)) for role in ROLES if path.format(split=role) in files}
        labels = {role: path.format(split=role) for role in frames}
        first = frames["train"]
        for role, frame in frames.items():
            if list(frame.columns) != list(first.columns):
                raise DataError(f"{labels[role]}: its columns {_diff(frame.columns, first.columns)} differ from "
                                f"{labels['train']}'s")
    else:
        parts = [read_table(kind, f) for f in files]
        for f, part in zip(files[1:], parts[1:]):
            if list(part.columns) != list(parts[0].columns):
                raise DataError(f"{f}: its columns {_diff(part.columns, parts[0].columns)} differ from {files[0]}'s")
        frames = {"all": pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]}
        labels = {"all": files[0] if len(files) == 1 else f"{path} ({len(files)} files)"}
    return prepare_tables(frames, labels, config, fitted)


def _diff(columns, reference) -> str:
    extra, missing = sorted(set(columns) - set(reference)), sorted(set(reference) - set(columns))
    parts = ([f"has {', '.join(map(str, extra))}"] if extra else []) + \
            ([f"lacks {', '.join(map(str, missing))}"] if missing else [])
    return "(" + "; ".join(parts or ["are in another order"]) + ")"


def infer_task(config: ml_collections.ConfigDict, target) -> str:
    """classification or regression: data.task, else by the target's type (floats are regression)."""
    if config.task != "auto":
        return config.task
    import pandas as pd

    return "regression" if pd.api.types.is_float_dtype(target.dtype) else "classification"


def prepare_tables(frames: dict, labels: dict, config: ml_collections.ConfigDict, fitted: dict | None):
    """role (or "all") -> DataFrame, to (arrays, fitted, report): split, then fit the preparation on train."""
    import pandas as pd

    from jtrain.data import tabular

    if not config.target:
        raise ConfigError(f"config key 'data.target': name the column to predict (columns of {next(iter(labels.values()))}: "
                          f"{', '.join(map(str, next(iter(frames.values())).columns))})")
    dropped = {}
    for role, frame in list(frames.items()):
        if config.target not in frame.columns:
            raise DataError(f"{labels[role]}: no target column {config.target!r} (data.target); columns: "
                            f"{', '.join(map(str, frame.columns))}")
        missing = frame[config.target].isna().to_numpy()
        if missing.any() and config.missing_target == "drop":
            frames[role] = frame[~missing].reset_index(drop=True)
            dropped[role] = int(missing.sum())
        elif missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(f"{labels[role]}: row {row} has no value in the target column {config.target!r} "
                            f"({int(missing.sum())} rows lack one); set data.missing_target=drop to leave them out")
    task = fitted["task"] if fitted else infer_task(config, next(iter(frames.values()))[config.target])
    if "all" in frames:
        frame = frames.pop("all")
        label = labels.pop("all")
        for role, rows in split_rows(frame[config.target].to_numpy(), task, config).items():
            frames[role] = frame.iloc[rows].reset_index(drop=True)
            labels[role] = f"{label} ({role} rows)"
    if folds.active(config):  # before anything is fitted: the fold's training rows alone are fitted on
        train, label = frames["train"], labels["train"]
        if config.cv.group and config.cv.group not in train.columns:
            raise DataError(f"{label}: no column {config.cv.group!r} (data.cv.group); columns: "
                            f"{', '.join(map(str, train.columns))}")
        groups = train[config.cv.group].astype(str).to_numpy() if config.cv.group else None
        stratify = train[config.target].to_numpy() if task == "classification" and config.cv.stratify else None
        kept, heldout = folds.fold_rows(len(train), stratify, groups, config.cv, config.cv.seed)
        frames["train"], frames["val"] = (train.iloc[kept].reset_index(drop=True),
                                          train.iloc[heldout].reset_index(drop=True))
        labels["train"], labels["val"] = (f"{label} without {folds.describe(config.cv)}",
                                          f"{label} {folds.describe(config.cv)}")
    _drop_none(frames, labels, config)
    source = labels["train"]
    difficulty = None
    if config.curriculum.difficulty == curriculum.COLUMN:  # a column of the table orders the curriculum
        name = config.curriculum.column
        if name not in frames["train"].columns:
            raise DataError(f"{source}: no difficulty column {name!r} (data.curriculum.column); columns: "
                            f"{', '.join(map(str, frames['train'].columns))}")
        difficulty = pd.to_numeric(frames["train"][name], errors="coerce").to_numpy(np.float64)
    if fitted:
        prep = tabular.Preparation.from_json(fitted["preparation"])
    else:
        types = tabular.infer_types(frames["train"], config.target, columns(config.features),
                                    columns(config.categorical), columns(config.numeric),
                                    columns(config.drop) + ((config.curriculum.column,) if difficulty is not None else ()),
                                    source)
        options = tabular.Options(impute_numeric=config.prep.impute_numeric,
                                  impute_categorical=config.prep.impute_categorical,
                                  fill_value=config.prep.fill_value, missing_indicator=config.prep.missing_indicator,
                                  encode=config.prep.encode, scale=config.prep.scale,
                                  clip_quantiles=tuple(config.prep.clip_quantiles), log_target=config.prep.log_target)
        prep = tabular.Preparation.fit(frames["train"], config.target, types, options, task, source)
    arrays, unseen = {}, {}
    for role in ROLES:
        if role in frames:
            x, unseen[role] = prep.transform(frames[role], labels[role])
            arrays[role] = (x, prep.encode_target(frames[role][config.target], labels[role]))
    stats = {"mean": 0.0, "std": 1.0, **target_stats(arrays["train"][1], task)}
    fitted = fitted or {"format": FITTED_FORMAT, "kind": "table", "task": task, "class_names": list(prep.class_names),
                        "target": config.target, "preparation": prep.to_json(), "stats": stats,
                        "log_target": bool(config.prep.log_target and task == "regression")}
    fitted = {**fitted, "roles": list(arrays), "rows": {role: int(len(y)) for role, (_, y) in arrays.items()},
              "input_shape": [len(prep.feature_names)]}
    report = table_report(frames, labels, config.target, task, prep, dropped, unseen)
    if difficulty is not None:  # kept with the prepared arrays (build_source takes it out of the report)
        report[DIFFICULTY] = difficulty.tolist()
    return arrays, fitted, report


def _drop_none(parts: dict, labels: dict, config: ml_collections.ConfigDict) -> None:
    """Leaves out the roles data.splits.<role> = "none" disables (a cross-validation fold's test rows stay unread)."""
    if config.splits.train == "none":
        raise ConfigError("config key 'data.splits.train': a training split is required")
    for role in ROLES:
        if config.splits[role] == "none":
            parts.pop(role, None)
            labels.pop(role, None)


def target_stats(y: np.ndarray, task: str) -> dict:
    if task != "regression":
        return {}
    y = np.asarray(y, np.float64)
    std = float(y.std())
    return {"target_mean": float(y.mean()), "target_std": std if std > 0 else 1.0}


def split_rows(target: np.ndarray, task: str, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """role -> row numbers of one pool split by data.split_ratios (stratified by class for classification)."""
    from sklearn.model_selection import train_test_split

    ratios = tuple(config.split_ratios) + (0.0,) * (3 - len(config.split_ratios))
    rows = np.arange(len(target))
    stratify = target if task == "classification" else None
    if stratify is not None:
        values, counts = np.unique(np.asarray(target).astype(str), return_counts=True)
        if len(values) < 2:
            raise DataError(f"data.target={config.target!r}: every row has the class {values[0]!r}; a classifier needs >= 2")
        needed = sum(1 for r in ratios if r > 0)
        if counts.min() < needed:
            stratify = None  # a class too rare to appear in every split: a plain shuffled split
        else:
            stratify = np.asarray(target).astype(str)
    out, rest, rest_share = {}, rows, 1.0
    for role, ratio in zip(ROLES[:-1], ratios[:-1]):
        later = sum(ratios[ROLES.index(role) + 1:])
        if later <= 0:
            out[role] = rest
            rest = rows[:0]
            break
        share = ratio / rest_share
        try:
            taken, rest = train_test_split(rest, train_size=share, random_state=config.split_seed,
                                           stratify=None if stratify is None else stratify[rest])
        except ValueError:  # too few rows of some class for this split: unstratified
            taken, rest = train_test_split(rest, train_size=share, random_state=config.split_seed)
        out[role] = np.sort(taken)
        rest_share -= ratio
    if len(rest):
        out["test"] = np.sort(rest)
    return {role: idx for role, idx in out.items() if len(idx)}


def table_report(frames: dict, labels: dict, target: str, task: str, prep, dropped: dict, unseen: dict) -> dict:
    """Rows, columns, types, missing values, class balance and what each transform did: WORKDIR/data_report.json."""
    report: dict[str, Any] = {"task": task, "target": target, "features_in": len(prep.feature_names),
                              "feature_names": list(prep.feature_names), "roles": {}}
    for role in ROLES:
        if role not in frames:
            continue
        frame = frames[role]
        entry: dict[str, Any] = {"from": labels[role], "rows": int(len(frame)), "columns": int(frame.shape[1]),
                                 "missing": {str(c): int(n) for c, n in frame.isna().sum().items() if n}}
        if task == "classification":
            entry["class_balance"] = {str(k): int(v) for k, v in frame[target].value_counts().sort_index().items()}
        else:
            entry["target"] = {"mean": float(frame[target].mean()), "std": float(frame[target].std(ddof=0)),
                               "min": float(frame[target].min()), "max": float(frame[target].max())}
        if dropped.get(role):
            entry["dropped_missing_target"] = dropped[role]
        if any(unseen.get(role, {}).values()):
            entry["unseen_categories"] = {k: int(v) for k, v in unseen[role].items() if v}
        report["roles"][role] = entry
    report["dtypes"] = {str(c): str(t) for c, t in next(iter(frames.values())).dtypes.items()}
    report["transforms"] = prep.report()
    return report


# ---------------------------------------------------------------------------------------------- arrays and images


NPZ_PAIRS = (("x", "y"), ("X", "y"), ("inputs", "targets"), ("features", "labels"), ("images", "labels"))


def _read_npz(files: list[str], config: ml_collections.ConfigDict, fitted: dict | None):
    path = files[0]
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as a NumPy .npz file: {str(e).splitlines()[0]}") from e
    for xk, yk in NPZ_PAIRS:
        if f"{xk}_train" in stored and f"{yk}_train" in stored:
            arrays = {role: (stored[f"{xk}_{role}"], stored[f"{yk}_{role}"]) for role in ROLES
                      if f"{xk}_{role}" in stored and f"{yk}_{role}" in stored}
            break
        if xk in stored and yk in stored:
            arrays = {"all": (stored[xk], stored[yk])}
            break
    else:
        raise DataError(f"{path}: no input / target arrays among its keys {', '.join(stored)}; name them x and y "
                        f"(or x_train, y_train, x_val, y_val, x_test, y_test)")
    names = tuple(str(n) for n in stored["class_names"]) if "class_names" in stored else ()
    return prepare_arrays(arrays, {role: f"{path} ({role})" for role in arrays}, config, fitted, names)


def prepare_arrays(arrays: dict, labels: dict, config: ml_collections.ConfigDict, fitted: dict | None,
                   class_names: tuple[str, ...] = ()):
    """role (or "all") -> (x, y) arrays to (arrays, fitted, report). uint8 (N, H, W[, C]) inputs are images; other
    inputs are features standardised per column with the training split's statistics."""
    for role, (x, y) in arrays.items():
        if len(x) != len(y):
            raise DataError(f"{labels[role]}: {len(x)} inputs but {len(y)} targets")
        if len(x) == 0:
            raise DataError(f"{labels[role]}: no rows")
    y0 = np.asarray(next(iter(arrays.values()))[1])
    task = fitted["task"] if fitted else ("regression" if config.task == "regression" or
                                          (config.task == "auto" and np.issubdtype(y0.dtype, np.floating))
                                          else "classification")
    if "all" in arrays:
        x, y = arrays.pop("all")
        label = labels.pop("all")
        for role, rows in split_rows(np.asarray(y), task, config).items():
            arrays[role] = (x[rows], y[rows])
            labels[role] = f"{label}, {role} rows"
    if folds.active(config):  # before the statistics are measured: on the fold's training rows alone
        if config.cv.group:
            raise ConfigError(f"config key 'data.cv.group': {config.cv.group!r} names a column; {labels['train']} "
                              f"is arrays, with no columns (groups apply to tables)")
        x, y = arrays["train"]
        label = labels["train"]
        stratify = np.asarray(y) if task == "classification" and config.cv.stratify else None
        kept, heldout = folds.fold_rows(len(y), stratify, None, config.cv, config.cv.seed)
        arrays["train"], arrays["val"] = (x[kept], y[kept]), (x[heldout], y[heldout])
        labels["train"], labels["val"] = (f"{label} without {folds.describe(config.cv)}",
                                          f"{label} {folds.describe(config.cv)}")
    _drop_none(arrays, labels, config)
    images = arrays["train"][0].dtype == np.uint8 and arrays["train"][0].ndim in (3, 4)
    out = {}
    for role in ROLES:
        if role in arrays:
            x, y = arrays[role]
            x = x[..., None] if images and x.ndim == 3 else np.asarray(x, np.uint8 if images else np.float32)
            if task == "classification":
                if y.dtype.kind not in "iub":
                    raise DataError(f"{labels[role]}: classification targets must be integer class ids, got {y.dtype}")
                y = y.astype(np.int32)
            else:
                y = y.astype(np.float32)
            if not np.all(np.isfinite(y.astype(np.float64))):
                raise DataError(f"{labels[role]}: row {int(np.flatnonzero(~np.isfinite(y.astype(np.float64)))[0])} "
                                f"has a missing (non-finite) target")
            out[role] = (x, y)
    rows = {role: int(len(y)) for role, (_, y) in out.items()}
    if fitted:
        return out, {**fitted, "roles": list(out), "rows": rows}, {}
    if task == "classification":
        num_classes = int(max(int(y.max()) for _, y in out.values())) + 1
        class_names = class_names or tuple(str(i) for i in range(num_classes))
    x_train = out["train"][0]
    if images:
        pixels = x_train.astype(np.float64) / 255.0
        stats = {"mean": float(pixels.mean()), "std": float(pixels.std()) or 1.0}
    else:
        stats = training_stats(DatasetSpec("arrays"), DecodedSplit(x_train, out["train"][1], "inputs", "targets"),
                               ml_collections.ConfigDict({"normalize_targets": False}))
        stats = {"mean": np.asarray(stats.mean).tolist(), "std": np.asarray(stats.std).tolist()}
    stats.update(target_stats(out["train"][1], task))
    fitted = {"format": FITTED_FORMAT, "kind": "images" if images else "arrays", "task": task,
              "class_names": list(class_names) if task == "classification" else [], "stats": stats,
              "scale": 1 / 255 if images else 1.0, "input_shape": list(x_train.shape[1:]), "roles": list(out),
              "rows": rows}
    report = {"task": task, "roles": {role: _array_role_report(labels[role], x, y, task) for role, (x, y) in out.items()}}
    return out, fitted, report


def _array_role_report(label: str, x: np.ndarray, y: np.ndarray, task: str) -> dict:
    entry = {"from": label, "rows": int(len(y)), "input_shape": list(x.shape[1:]), "dtype": str(x.dtype)}
    if task == "classification":
        values, counts = np.unique(y, return_counts=True)
        entry["class_balance"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
    return entry


def _read_images(root: str, config: ml_collections.ConfigDict, fitted: dict | None):
    from jtrain.data import images

    roles = images.layout(root)
    size = tuple(fitted["input_shape"][:2]) if fitted else tuple(config.image_size)
    channels = fitted["input_shape"][2] if fitted else config.image_channels
    if not all(size):
        size = _first_size(images.files(root))
    first = "train" if "train" in roles else "all"
    names = tuple(fitted["class_names"]) if fitted else None
    x, y, names = images.read_folder(roles[first], names, size, channels)
    arrays, labels = {first: (x, y)}, {first: roles[first]}
    for role in ("val", "test"):
        if role in roles:
            arrays[role] = images.read_folder(roles[role], names, size, x.shape[-1])[:2]
            labels[role] = roles[role]
    out, fitted_, report = prepare_arrays(arrays, labels, config, fitted, names)
    fitted_ = {**fitted_, "kind": "images", "class_names": list(names), "image_size": list(size)}
    return out, fitted_, report


def _first_size(files: list[str]) -> tuple[int, int]:
    """(height, width) of the first image: every image is resized to it when data.image_size is (0, 0)."""
    from PIL import Image, UnidentifiedImageError

    if not files:
        raise DataError("no image files (.png, .jpg, .jpeg) in the folder")
    try:
        with Image.open(files[0]) as image:
            return image.size[1], image.size[0]
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{files[0]}: cannot read the image: {e}") from e


def hf_fingerprint(dsdict) -> str:
    return json.dumps({split: getattr(ds, "_fingerprint", "") for split, ds in dsdict.items()}, sort_keys=True)


def _from_hf(dsdict, config: ml_collections.ConfigDict, fitted: dict | None):
    from jtrain.data import hf

    label = config.name
    roles = hf.splits(dsdict, label)
    train = dsdict[roles["train"]]
    column = hf.image_column(train)
    if column:
        target = config.target or hf.label_column(train)
        names = tuple(fitted["class_names"]) if fitted else hf.label_names(train, target)
        size = tuple(fitted["input_shape"][:2]) if fitted else tuple(config.image_size)
        channels = fitted["input_shape"][2] if fitted else config.image_channels
        if not all(size):
            first = train[0][column]
            size = (first.height, first.width)
        arrays = {}
        for role, split in roles.items():
            arrays[role] = hf.to_images(dsdict[split], column, target, size, channels, names)
            channels = arrays[role][0].shape[-1]  # every split as the train split was read
        out, fitted_, report = prepare_arrays(arrays, {r: f"{label} ({r})" for r in arrays}, config, fitted, names)
        return out, {**fitted_, "kind": "images", "class_names": list(names), "image_size": list(size)}, report
    frames = hf.to_frames(dsdict, label)
    if list(frames) == ["train"]:
        frames = {"all": frames["train"]}  # one split: divided by data.split_ratios
    labels = {role: f"{label} ({role})" for role in frames}
    arrays, fitted_, report = prepare_tables(frames, labels, config, fitted)
    if config.target and not fitted and fitted_["task"] == "classification":
        import datasets

        feature = train.features.get(config.target)
        if isinstance(feature, datasets.ClassLabel):  # its codes became the classes; reports show the names
            fitted_["class_names"] = [feature.names[int(c)] for c in fitted_["class_names"]]
    return arrays, fitted_, report


# ---------------------------------------------------------------------------------------------- Python


class FromArrays:
    """Arrays or a DataFrame given in Python: `bind(config.data)` (called by components.build) prepares them
    with the run's data config into a source."""

    def __init__(self, x, y=None, *, val=None, test=None, target: str = "", class_names=()):
        self.x, self.y, self.val, self.test = x, y, val, test
        self.target, self.class_names = target, tuple(class_names)

    def bind(self, config: ml_collections.ConfigDict, fitted: dict | None = None) -> OwnSource:
        import pandas as pd

        if isinstance(self.x, pd.DataFrame):
            if self.target:
                config = ml_collections.ConfigDict({**config.to_dict(), "target": self.target})
            frames = {"train" if (self.val is not None or self.test is not None) else "all": self.x}
            frames.update({role: f for role, f in (("val", self.val), ("test", self.test)) if f is not None})
            arrays, fitted_, report = prepare_tables(frames, {r: f"DataFrame ({r})" for r in frames}, config, fitted)
        else:
            if self.y is None:
                raise DataError("jtrain.data.from_arrays(x, y): targets y are required with NumPy inputs "
                                "(or pass a DataFrame and target=COLUMN)")
            arrays = {"train" if (self.val is not None or self.test is not None) else "all":
                      (np.asarray(self.x), np.asarray(self.y))}
            arrays.update({role: (np.asarray(v[0]), np.asarray(v[1])) for role, v in (("val", self.val),
                                                                                      ("test", self.test))
                           if v is not None})
            arrays, fitted_, report = prepare_arrays(arrays, {r: f"arrays ({r})" for r in arrays}, config, fitted,
                                                     self.class_names)
        return build_source(config, arrays, fitted_, report)


def from_arrays(x, y=None, *, val=None, test=None, target: str = "", class_names=()) -> FromArrays:
    """A data source from NumPy arrays (x (N, ...) and y (N,)) or a pandas DataFrame with a target column
    (`target`, else data.target): `jtrain.train(config, workdir, data=jtrain.data.from_arrays(x, y))`.

    One pool is split by data.split_ratios; `val` / `test` (pairs (x, y), or DataFrames) give those roles
    instead. Tables are prepared as the csv: sources are; uint8 (N, H, W[, C]) arrays are images."""
    return FromArrays(x, y, val=val, test=test, target=target, class_names=class_names)
