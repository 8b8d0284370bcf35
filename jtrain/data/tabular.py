"""Tabular preparation: a DataFrame's feature columns -> a float32 matrix, its target -> class indices or floats.

Every constant (imputed values, clip bounds, scaling centre/scale, category lists, classes) is fitted on the
TRAINING split only (`Preparation.fit(train_df, ...)`); `transform` applies those constants to any split and
never refits, so validation and test rows cannot leak into training. The steps match scikit-learn's
Pipeline(SimpleImputer, StandardScaler / RobustScaler / MinMaxScaler) and OneHotEncoder(categories="auto"):

  numeric      impute (mean / median / most_frequent / constant) -> optional clip to training quantiles ->
               scale (standard: mean, population std; robust: median, IQR; minmax: min, range; a zero scale -> 1)
  categorical  values compared as strings of the frame's own values (4.0 -> "4", True -> "True"); missing
               (NaN / None / pd.NA / blank strings) imputed with the most frequent category or "missing";
               categories sorted (numerically when every value is a number); one-hot with an extra
               "<col>=<unseen>" column, or ordinal codes with code len(categories) for unseen values (not scaled);
               `transform` counts unseen values per column (a "missing" constant never seen in training also lands
               in the bucket, uncounted)
  indicator    with `missing_indicator`, a 0/1 "<col>_missing" column after each column that had missing values
               in training
  datetime     seconds since 1970-01-01 UTC (float), then treated as numeric

Features are laid out per column in the frame's column order. `to_json` holds every fitted constant as plain JSON
(never pickle); `from_json` rebuilds an identical transform. Pure pandas / NumPy: no Python loop per row.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pandas as pd

from jtrain.errors import ConfigError, DataError

UNSEEN = "<unseen>"
MISSING_CATEGORY = "missing"
_CHOICES = {"impute_numeric": ("mean", "median", "most_frequent", "constant"),
            "impute_categorical": ("most_frequent", "constant"), "encode": ("onehot", "ordinal"),
            "scale": ("standard", "robust", "minmax", "none")}


@dataclasses.dataclass(frozen=True)
class Options:
    impute_numeric: str = "mean"
    impute_categorical: str = "most_frequent"
    fill_value: float = 0.0  # numeric constant for impute "constant"; the categorical constant is "missing"
    missing_indicator: bool = False
    encode: str = "onehot"
    scale: str = "standard"
    clip_quantiles: tuple[float, float] = (0.0, 1.0)  # (0, 1) = off; clips before scaling
    log_target: bool = False  # regression only; positive targets only
    max_categories: int = 0  # 0 = no limit; else the most frequent categories, the rest share the unseen bucket

    def __post_init__(self):
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"tabular option {name}={getattr(self, name)!r}: expected one of {choices}")
        lo, hi = (float(q) for q in self.clip_quantiles)
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"tabular option clip_quantiles={self.clip_quantiles!r}: expected 0 <= low < high <= 1")
        if self.max_categories < 0:
            raise ConfigError(f"tabular option max_categories={self.max_categories}: expected >= 0 (0 = no limit)")


def _at(source: str) -> str:
    return f"{source}: " if source else ""


def _key(v) -> str | None:
    """A category's string, None for missing: the frame's own value, with integral floats as integers."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else (str(int(v)) if float(v).is_integer() else repr(float(v)))
    s = str(v)
    return s if s.strip() else None


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray, list]:
    """(codes, uniques, keys): codes index uniques, -1 = missing; one hash per row, `_key` once per distinct value."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    return codes, uniques, [_key(u) for u in uniques]


def _first_row(codes: np.ndarray, wanted) -> int:
    return int(np.flatnonzero(np.isin(codes, list(wanted)))[0])


def _numeric(series: pd.Series, col: str, source: str) -> np.ndarray:
    """float64 values, NaN = missing; datetimes as epoch seconds; text that is not a number -> DataError."""
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            series = series.dt.tz_convert(None)
        seconds = (series - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
        return seconds.to_numpy(np.float64, na_value=np.nan, copy=True)
    if pd.api.types.is_timedelta64_dtype(dtype):
        return (series / pd.Timedelta(seconds=1)).to_numpy(np.float64, na_value=np.nan, copy=True)
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return series.to_numpy(np.float64, na_value=np.nan, copy=True)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    blank = np.array([_key(u) is None for u in uniques], dtype=bool)
    parsed = pd.to_numeric(pd.Series(uniques, dtype=object).where(~blank), errors="coerce").to_numpy(np.float64)
    bad = np.isnan(parsed) & ~blank
    if bad.any():
        row = _first_row(codes, np.flatnonzero(bad))
        raise DataError(f"{_at(source)}column {col!r} is numeric but row {row} holds {series.iloc[row]!r}; "
                        f"fix the value or declare the column categorical")
    return np.append(parsed, np.nan)[codes]  # code -1 (missing) picks the appended NaN


def _sorted_keys(raw_by_key: dict) -> list[str]:
    """sklearn's order: by value when every category is a number (or bool), else as strings."""
    if all(_is_number(v) or isinstance(v, (bool, np.bool_)) for v in raw_by_key.values()):
        return sorted(raw_by_key, key=lambda k: float(raw_by_key[k]))
    return sorted(raw_by_key)


def _plain(v):
    """A class label as a JSON value (NumPy scalars -> Python)."""
    return v.item() if isinstance(v, np.generic) else (v if isinstance(v, (str, int, float, bool)) else str(v))


def _require(df: pd.DataFrame, names, source: str, what: str):
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise DataError(f"{_at(source)}{what} {missing[0]!r} is not a column; the columns are {list(df.columns)}")


def infer_types(df: pd.DataFrame, target: str, features: tuple[str, ...] = (), categorical: tuple[str, ...] = (),
                numeric: tuple[str, ...] = (), drop: tuple[str, ...] = (), source: str = "") -> dict[str, str]:
    """Feature column -> "numeric" | "categorical", in the frame's column order (see the module docstring)."""
    _require(df, [target], source, "target column")
    _require(df, [*features, *categorical, *numeric, *drop], source, "column")
    chosen = set(features) if features else set(df.columns) - {target, *drop}
    types = {}
    for col in df.columns:
        if col not in chosen:
            continue
        dtype = df[col].dtype
        if col in categorical:
            types[col] = "categorical"
        elif pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
            types[col] = "numeric" if col in numeric else "categorical"
        elif (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)
              or pd.api.types.is_timedelta64_dtype(dtype)):
            types[col] = "numeric"
        else:
            types[col] = _text_type(df[col], col, source, col in numeric)
    return types


def _text_type(series: pd.Series, col: str, source: str, declared_numeric: bool) -> str:
    """An object / string column: real numbers only -> numeric; text only -> categorical; both -> DataError."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    present = np.array([_key(u) is not None for u in uniques], dtype=bool)
    flag = np.array([isinstance(u, (bool, np.bool_)) for u in uniques], dtype=bool)
    number = pd.to_numeric(pd.Series(uniques, dtype=object).where(present & ~flag), errors="coerce").notna()
    number = number.to_numpy() & present
    text = present & ~number
    if number.any() and text.any():
        first = int(np.flatnonzero(codes >= 0)[0]) if (codes >= 0).any() else 0
        odd = text if number[codes[first]] else number
        row = _first_row(codes, np.flatnonzero(odd))
        raise DataError(f"{_at(source)}column {col!r} mixes numbers and text: row {row} holds "
                        f"{series.iloc[row]!r} but row {first} holds {series.iloc[first]!r}; fix the value or "
                        f"declare the column categorical")
    if declared_numeric:
        return "numeric"
    real = np.array([_is_number(u) for u in uniques], dtype=bool)
    return "numeric" if number.any() and real[present].all() else "categorical"


class Preparation:
    """Fitted constants of every feature column and the target; build with `fit` (training split) or `from_json`."""

    def __init__(self, state: dict):
        self._state = state
        self.task = state["task"]
        self.options = Options(**{**state["options"], "clip_quantiles": tuple(state["options"]["clip_quantiles"])})
        self._index = {c["name"]: {k: i for i, k in enumerate(c["categories"])}
                       for c in state["columns"] if c["type"] == "categorical"}
        t = state["target"]
        self.class_names = tuple(t.get("classes", ()))
        self._class_index = {k: i for i, k in enumerate(self.class_names)}
        self.feature_names = []
        for c in state["columns"]:
            if c["type"] == "numeric" or self.options.encode == "ordinal":
                self.feature_names.append(c["name"])
            else:
                self.feature_names += [f"{c['name']}={k}" for k in [*c["categories"], UNSEEN]]
            if c["indicator"]:
                self.feature_names.append(f"{c['name']}_missing")

    @classmethod
    def fit(cls, train_df: pd.DataFrame, target: str, types: dict[str, str], options: Options, task: str,
            source: str = "") -> "Preparation":
        if task not in ("classification", "regression"):
            raise ConfigError(f"tabular task={task!r}: expected 'classification' or 'regression'")
        if options.log_target and task != "regression":
            raise ConfigError("tabular option log_target applies to regression targets only")
        _require(train_df, [target], source, "target column")
        _require(train_df, list(types), source, "feature column")
        if target in types:
            raise DataError(f"{_at(source)}column {target!r} is the target and cannot also be a feature")
        if len(train_df) == 0:
            raise DataError(f"{_at(source)}the training split has no rows")
        columns = [_fit_numeric(train_df[c], c, options, source) if t == "numeric"
                   else _fit_categorical(train_df[c], c, options, source) for c, t in types.items()]
        state = {"format": 1, "task": task, "options": dataclasses.asdict(options), "columns": columns,
                 "target": _fit_target(train_df[target], target, task, options, source)}
        state["options"]["clip_quantiles"] = [float(q) for q in options.clip_quantiles]
        return cls(state)

    def transform(self, df: pd.DataFrame, source: str = "") -> tuple[np.ndarray, dict[str, int]]:
        _require(df, [c["name"] for c in self._state["columns"]], source, "feature column")
        n, onehot = len(df), self.options.encode == "onehot"
        x = np.zeros((n, len(self.feature_names)), np.float32)  # (N, D)
        unseen, j = {}, 0
        for c in self._state["columns"]:
            col = c["name"]
            if c["type"] == "numeric":
                v = _numeric(df[col], col, source)
                missing = np.isnan(v)
                v[missing] = c["impute"]
                if c["clip"] is not None:
                    np.clip(v, c["clip"][0], c["clip"][1], out=v)
                x[:, j] = (v - c["center"]) / c["scale"]
                j += 1
            else:
                codes, _, keys = _factorize(df[col])
                index, known = self._index[col], len(c["categories"])
                lookup = np.array([-1 if k is None else index.get(k, known) for k in keys] + [-1], np.int64)
                mapped = lookup[codes]  # category index, known = unseen, -1 = missing
                missing = mapped < 0
                count = int(np.count_nonzero(mapped == known))
                if count:
                    unseen[col] = count
                mapped[missing] = index.get(c["impute"], known)
                if onehot:
                    x[np.arange(n), j + mapped] = 1.0
                    j += known + 1
                else:
                    x[:, j] = mapped
                    j += 1
            if c["indicator"]:
                x[:, j] = missing
                j += 1
        return x, unseen

    def encode_target(self, series: pd.Series, source: str = "") -> np.ndarray:
        t = self._state["target"]
        if self.task == "classification":
            codes, _, keys = _factorize(series)
            _no_missing(codes, keys, t["name"], source)
            for i, k in enumerate(keys):
                if k not in self._class_index:
                    raise DataError(f"{_at(source)}target {t['name']!r} row {_first_row(codes, [i])} has the "
                                    f"label {k!r}, not among the training classes {list(self.class_names)}")
            return np.array([self._class_index[k] for k in keys], np.int32)[codes]
        y = _numeric(series, t["name"], source)
        _no_missing(np.where(np.isnan(y), -1, 0), [""], t["name"], source)
        if self.options.log_target:
            _positive(y, t["name"], source)
            y = np.log(y)
        return y.astype(np.float32)

    def decode_target(self, y: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return np.asarray(self._state["target"]["values"])[np.asarray(y)]
        y = np.asarray(y, np.float64)
        return np.exp(y) if self.options.log_target else y

    def to_json(self) -> dict:
        return copy.deepcopy(self._state)

    @classmethod
    def from_json(cls, d: dict) -> "Preparation":
        if d.get("format") != 1:
            raise DataError(f"tabular preparation of format {d.get('format')!r}: this version reads format 1")
        return cls(copy.deepcopy(d))

    def report(self) -> dict:
        columns = {}
        for c in self._state["columns"]:
            r = {k: v for k, v in c.items() if k not in ("name", "counts")}
            if c["type"] == "categorical":
                r["n_categories"] = len(c["categories"])
                r["counts"] = dict(zip(c["categories"], c["counts"]))
            columns[c["name"]] = r
        return {"task": self.task, "options": self._state["options"], "n_features": len(self.feature_names),
                "columns": columns, "target": self._state["target"]}


def _fit_numeric(series: pd.Series, col: str, options: Options, source: str) -> dict:
    v = _numeric(series, col, source)
    missing = np.isnan(v)
    if np.isinf(v).any():
        row = int(np.flatnonzero(np.isinf(v))[0])
        raise DataError(f"{_at(source)}column {col!r} row {row} is infinite; fix or drop it")
    if missing.all() and options.impute_numeric != "constant":
        raise DataError(f"{_at(source)}column {col!r} has no values in the training split; drop it")
    present = v[~missing]
    how = options.impute_numeric
    if how == "mean":
        impute = present.mean()
    elif how == "median":
        impute = np.median(present)
    elif how == "most_frequent":
        values, counts = np.unique(present, return_counts=True)
        impute = values[np.argmax(counts)]  # the smallest of the most frequent, like SimpleImputer
    else:
        impute = options.fill_value
    v[missing] = impute
    clip = None
    if tuple(options.clip_quantiles) != (0.0, 1.0):
        clip = [float(b) for b in np.quantile(v, options.clip_quantiles)]
        np.clip(v, clip[0], clip[1], out=v)
    if options.scale == "standard":
        center, scale = v.mean(), v.std()
    elif options.scale == "robust":
        q25, center, q75 = np.percentile(v, [25, 50, 75])
        scale = q75 - q25
    elif options.scale == "minmax":
        center, scale = v.min(), v.max() - v.min()
    else:
        center, scale = 0.0, 1.0
    scale = float(scale) if scale > 10 * np.finfo(np.float64).eps * max(abs(float(center)), 1.0) else 1.0
    return {"name": col, "type": "numeric", "missing": int(missing.sum()), "impute": float(impute),
            "indicator": bool(options.missing_indicator and missing.any()), "clip": clip,
            "center": float(center), "scale": scale}


def _fit_categorical(series: pd.Series, col: str, options: Options, source: str) -> dict:
    codes, uniques, keys = _factorize(series)
    raw_by_key, counts = {}, {}
    for k, u, c in zip(keys, uniques, np.bincount(codes[codes >= 0], minlength=len(keys))):
        if k is not None:
            raw_by_key.setdefault(k, u)
            counts[k] = counts.get(k, 0) + int(c)
    n_missing = len(series) - sum(counts.values())
    if options.impute_categorical == "constant" and n_missing:
        raw_by_key.setdefault(MISSING_CATEGORY, MISSING_CATEGORY)
        counts[MISSING_CATEGORY] = counts.get(MISSING_CATEGORY, 0) + n_missing
    if not counts:
        raise DataError(f"{_at(source)}column {col!r} has no values in the training split; drop it")
    categories = _sorted_keys(raw_by_key)
    if options.max_categories and len(categories) > options.max_categories:
        keep = set(sorted(categories, key=lambda k: -counts[k])[:options.max_categories])  # stable: ties in order
        categories = [k for k in categories if k in keep]
    if options.impute_categorical == "constant":
        impute = MISSING_CATEGORY
    else:
        impute = max(categories, key=lambda k: counts[k])  # the first in sorted order among ties, like SimpleImputer
    return {"name": col, "type": "categorical", "missing": int(n_missing), "impute": impute,
            "indicator": bool(options.missing_indicator and n_missing), "categories": categories,
            "counts": [counts[k] for k in categories]}


def _no_missing(codes: np.ndarray, keys: list, col: str, source: str):
    blank = [i for i, k in enumerate(keys) if k is None]
    missing = (codes < 0) | np.isin(codes, blank)
    if missing.any():
        raise DataError(f"{_at(source)}target {col!r} is missing at row {int(np.argmax(missing))} "
                        f"({int(missing.sum())} rows); drop or fill those rows")


def _positive(y: np.ndarray, col: str, source: str):
    if (y <= 0).any():
        row = int(np.argmax(y <= 0))
        raise DataError(f"{_at(source)}target {col!r} row {row} is {y[row]!r}; log_target needs every target > 0, "
                        f"use it only for positive targets")


def _fit_target(series: pd.Series, col: str, task: str, options: Options, source: str) -> dict:
    if task == "classification":
        codes, uniques, keys = _factorize(series)
        _no_missing(codes, keys, col, source)
        raw_by_key, per_key = {}, {}
        for k, u, c in zip(keys, uniques, np.bincount(codes, minlength=len(keys))):
            raw_by_key.setdefault(k, _plain(u))
            per_key[k] = per_key.get(k, 0) + int(c)
        classes = _sorted_keys(raw_by_key)
        return {"name": col, "classes": classes, "values": [raw_by_key[k] for k in classes],
                "counts": [per_key[k] for k in classes]}
    y = _numeric(series, col, source)
    _no_missing(np.where(np.isnan(y), -1, 0), [""], col, source)
    if options.log_target:
        _positive(y, col, source)
    return {"name": col, "log": bool(options.log_target), "mean": float(y.mean()), "std": float(y.std()),
            "min": float(y.min()), "max": float(y.max())}
