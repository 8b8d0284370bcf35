"""Predictions of a trained run on new inputs: `jtrain predict --workdir W --input FILE --output preds.csv` and
`jtrain.predict(workdir, data)`.

The run's own preparation (WORKDIR/preparation.json, jtrain/data/own.py; for a builtin dataset its
standardisation constants) is applied to the new rows, so predictions see exactly what evaluation saw.
Classifiers give the class and the probability of each class under the class names; regressions give values
in the target's units.
"""

from __future__ import annotations

import glob
import os

import jax
import numpy as np

from jtrain import workdir as workdir_lib
from jtrain.data import own
from jtrain.data.source import DatasetSpec, SpecOnly
from jtrain.errors import UserError

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".jsonl": "json",
                  ".ndjson": "json"}


def predict(workdir: str, data, step: int | None = None):
    """A pandas DataFrame of predictions for `data`: a DataFrame, a NumPy array, or a path (CSV / Parquet / JSON
    table, .npz, an image file or a folder of images). `attrs["unseen"]` counts, per column, categories the
    training split never had (they go to the unseen bucket)."""
    import pandas as pd

    config = workdir_lib.read_config(workdir)
    fitted = workdir_lib.read_fitted(workdir) or _builtin_fitted(config)
    x, ids, unseen = _inputs(fitted, data, config.data.normalize)
    spec = DatasetSpec(name=config.data.name, num_classes=len(fitted["class_names"]),
                       input_shape=tuple(fitted["input_shape"]), class_names=tuple(fitted["class_names"]),
                       target_dtype="float32" if fitted["task"] == "regression" else "int32")
    run, state, step = workdir_lib.restore(workdir, config, step, data=_Shapes(spec, fitted))
    outputs = _forward(run, state, x)  # (N, num_outputs)
    frame = pd.DataFrame({ids[0]: ids[1]})
    if fitted["task"] == "regression":
        values = _to_units(outputs, fitted, config.data.normalize_targets)
        if values.shape[1] == 1:
            frame["prediction"] = values[:, 0]
        else:
            for j in range(values.shape[1]):
                frame[f"prediction_{j}"] = values[:, j]
    else:
        names = list(fitted["class_names"])
        if outputs.shape[1] == 1:  # one logit: a binary classifier's positive class
            p1 = 1 / (1 + np.exp(-outputs[:, 0].astype(np.float64)))
            probs = np.stack([1 - p1, p1], axis=1)
        else:
            logits = outputs.astype(np.float64)
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
        frame["prediction"] = [names[i] for i in probs.argmax(1)]
        for j, name in enumerate(names):
            frame[name] = probs[:, j]
    frame.attrs["unseen"] = unseen
    frame.attrs["step"] = step
    return frame


def write(frame, path: str) -> None:
    """preds.csv, or JSON lines for .jsonl / .json."""
    if path.endswith((".jsonl", ".json")):
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)


class _Shapes(SpecOnly):
    """The run's shapes without its training data: predictions need the model, not the rows it learned from."""

    def __init__(self, spec: DatasetSpec, fitted: dict):
        super().__init__(spec)
        self.rows = fitted.get("rows", {})

    def num_examples(self, role: str) -> int:
        return self.rows.get(role, 0)


def _builtin_fitted(config) -> dict:
    """The record own.py saves, for a run of a builtin image or tabular dataset: its standardisation and names."""
    from jtrain import data as data_lib

    source = data_lib.load(config.data)
    spec = source.spec
    if spec.is_text:
        raise UserError(f"jtrain predict: {spec.name} is text; generate from a language model with `jtrain sample`")
    stats = {"mean": np.asarray(source.stats.mean).tolist(), "std": np.asarray(source.stats.std).tolist()}
    if source.stats.target_mean is not None:
        stats.update(target_mean=float(source.stats.target_mean), target_std=float(source.stats.target_std))
    return {"kind": "images" if spec.is_image else "arrays", "task": "regression" if spec.num_classes == 0 else
            "classification", "class_names": list(spec.class_names), "stats": stats, "scale": spec.scale,
            "input_shape": list(spec.input_shape), "image_size": list(spec.input_shape[:2]),
            "rows": {role: source.num_examples(role) for role in source.splits}}


def _inputs(fitted: dict, data, normalize: bool) -> tuple[np.ndarray, tuple[str, list], dict]:
    """(x float32 (N, ...) as the model saw in training, (id column name, ids), unseen categories per column)."""
    import pandas as pd

    unseen: dict = {}
    if fitted["kind"] == "table":
        from jtrain.data import tabular

        if isinstance(data, (str, os.PathLike)):
            path = str(data)
            kind = TABLE_SUFFIXES.get(os.path.splitext(path)[1].lower())
            if kind is None:
                raise UserError(f"{path}: a table to predict on is .csv, .parquet, .json or .jsonl")
            if not os.path.isfile(path):
                raise UserError(f"{path}: no such file")
            frame, label = own.read_table(kind, path), path
        elif isinstance(data, pd.DataFrame):
            frame, label = data, "the DataFrame"
        else:
            raise UserError(f"jtrain predict: this run was trained on a table; give a DataFrame or a table file, "
                            f"not {type(data).__name__}")
        prep = tabular.Preparation.from_json(fitted["preparation"])
        x, unseen = prep.transform(frame, label)
        unseen = {k: int(v) for k, v in unseen.items() if v}
        return x, ("row", list(range(len(frame)))), unseen
    if isinstance(data, (str, os.PathLike)):
        x, ids = _read_array_input(str(data), fitted)
    else:
        x = np.asarray(data)
        ids = ("row", list(range(len(x))))
    shape = tuple(fitted["input_shape"])
    if fitted["kind"] == "images" and x.ndim == len(shape):
        x = x[..., None]
    if x.shape[1:] != shape:
        raise UserError(f"jtrain predict: inputs of shape {x.shape[1:]} per row, but the run was trained on {shape}")
    x = x.astype(np.float32) * np.float32(fitted.get("scale", 1.0))
    if normalize:
        stats = fitted["stats"]
        x = (x - np.asarray(stats["mean"], np.float32)) / np.asarray(stats["std"], np.float32)
    return x, ids, unseen


def _read_array_input(path: str, fitted: dict) -> tuple[np.ndarray, tuple[str, list]]:
    if path.endswith(".npz") or path.endswith(".npy"):
        try:
            if path.endswith(".npy"):
                x = np.load(path, allow_pickle=False)
            else:
                with np.load(path, allow_pickle=False) as npz:
                    key = next((k for k in ("x", "X", "inputs", "features", "images") if k in npz.files), None)
                    if key is None:
                        raise UserError(f"{path}: no inputs among its keys {', '.join(npz.files)}; name them x")
                    x = npz[key]
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read it: {str(e).splitlines()[0]}") from e
        return x, ("row", list(range(len(x))))
    if fitted["kind"] != "images":
        raise UserError(f"{path}: this run was trained on arrays; give a .npz (key x) or .npy file")
    from jtrain.data import images

    if os.path.isdir(path):
        files = images.files(path)
    elif os.path.isfile(path):
        files = [path]
    else:
        files = sorted(glob.glob(path))
    if not files and not glob.has_magic(path) and not os.path.exists(path):
        raise UserError(f"{path}: no such file or folder")
    if not files:
        raise UserError(f"{path}: no image files (.png, .jpg, .jpeg)")
    size, channels = tuple(fitted["input_shape"][:2]), fitted["input_shape"][2]
    return np.stack([images.read_image(f, size, channels) for f in files]), ("file", files)


def _forward(run, state, x: np.ndarray) -> np.ndarray:
    """The model's outputs (N, num_outputs) in evaluation mode, a fixed batch at a time (one compilation)."""
    batch = run.config.data.eval_batch_size or run.config.data.batch_size
    apply = jax.jit(lambda state, inputs: run.model.apply({"params": state.params, **state.model_state}, inputs,
                                                          train=False))
    out = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        padded = np.zeros((batch, *x.shape[1:]), np.float32)
        padded[: len(chunk)] = chunk
        result = apply(state, run.put_batch({"inputs": padded})["inputs"])
        out.append(np.asarray(jax.device_get(result), np.float64)[: len(chunk)])
    if not out:
        raise UserError("jtrain predict: no rows to predict on")
    return np.concatenate(out).reshape(len(x), -1)


def _to_units(outputs: np.ndarray, fitted: dict, normalize_targets: bool) -> np.ndarray:
    stats = fitted["stats"]
    values = outputs
    if stats.get("target_mean") is not None and (normalize_targets or fitted.get("log_target")):
        values = values * stats["target_std"] + stats["target_mean"]
    return np.exp(values) if fitted.get("log_target") else values

