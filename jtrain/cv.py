"""`jtrain cv` / `jtrain.cv(config, workdir, folds=K)`: k-fold cross-validation of the training split.

Every fold is an ordinary run: the config with data.cv.* naming its fold (jtrain/data/folds.py) and
data.splits.test = "none", trained by `train.train` into WORKDIR/fold-K (WORKDIR/fold-R-K with repeats), so
`jtrain eval`, `compare` and a resume rebuild it from its config.json alone. Its role "train" is the other folds,
its role "val" the held-out fold, and the test split is never read. The table - each scalar metric of each fold's
final val evaluation, their mean and their population standard deviation (ddof=0, as np.std of sklearn's
cross_val_score) - is printed and written to WORKDIR/cv.csv and WORKDIR/cv.json. `refit` trains once more on the
whole training split into WORKDIR/refit, evaluated on val and test as the config says.

Running it again on the same workdir trains only what is missing: a fold whose summary.json is newer than its
config.json (the same config) is read, not retrained; an interrupted fold resumes from its checkpoint.
"""

from __future__ import annotations

import csv
import json
import os

import ml_collections
import numpy as np

from jtrain import config as config_lib
from jtrain import data as data_lib
from jtrain.errors import UserError
from jtrain.metrics import scalars
from jtrain.train import train

STD = "population (ddof=0)"


def cv(config: ml_collections.ConfigDict, workdir: str, folds: int = 5, repeats: int = 1, stratify: bool = True,
       group: str = "", refit: bool = False, data=None) -> dict:
    """Trains the folds (and the refit) that are not finished yet; returns
    {"rows": [{"run", "repeat", "fold", "workdir", metric: value, ..., "num_examples"}], "metrics": [names],
     "mean": {metric: value}, "std": {metric: value}, "std_kind", "refit": {"workdir", "val", "test"} or None}.

    `data` is a data source given in Python (jtrain.data.from_arrays), folded like a file of one's own."""
    if folds < 2:
        raise UserError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if repeats < 1:
        raise UserError(f"--repeats {repeats}: must be >= 1")
    runs = [(r, k, fold_config(config, folds, k, repeats, r, stratify, group))
            for r in range(repeats) for k in range(folds)]
    dirs = [os.path.join(workdir, f"fold-{r}-{k}" if repeats > 1 else f"fold-{k}") for r, k, _ in runs]
    for fold_dir, (_, _, fold_cfg) in zip(dirs, runs):
        _check_same_folds(fold_dir, fold_cfg)
    finished = [_finished(d, c, data) for d, (_, _, c) in zip(dirs, runs)]
    if not all(finished):
        # Bad folds (too few rows of a class, a missing group column, text data) fail here, before any training.
        _check_data(runs[0][2], data)
    rows = []
    for (r, k, fold_cfg), fold_dir, done in zip(runs, dirs, finished):
        summary = _read_summary(fold_dir) if done else train(fold_cfg, fold_dir, data=data)
        val = summary.get("val")
        if not val:
            raise UserError(f"{fold_dir}: the fold run reports no val metrics")
        counts = {"num_examples": val["num_examples"]} if "num_examples" in val else {}
        rows.append({"run": os.path.basename(fold_dir), "repeat": r, "fold": k, "workdir": fold_dir, **scalars(val),
                     **counts})
    metrics = [m for m in rows[0] if m not in ("run", "repeat", "fold", "workdir") and all(m in row for row in rows)]
    values = {m: np.asarray([row[m] for row in rows], np.float64) for m in metrics}
    result = {"folds": folds, "repeats": repeats, "stratify": stratify, "group": group, "seed": config.seed,
              "rows": rows, "metrics": metrics, "mean": {m: float(v.mean()) for m, v in values.items()},
              "std": {m: float(v.std()) for m, v in values.items()}, "std_kind": STD, "refit": None}
    if refit:
        refit_dir = os.path.join(workdir, "refit")
        refit_cfg = config.copy_and_resolve_references()
        config_lib.set_value(refit_cfg, "data.cv.folds", 0)  # the whole training split
        config_lib.set_value(refit_cfg, "data.cv.fold", 0)
        summary = _read_summary(refit_dir) if _finished(refit_dir, refit_cfg, data) else \
            train(refit_cfg, refit_dir, data=data)
        result["refit"] = {"workdir": refit_dir, **{role: scalars(summary[role]) for role in ("val", "test")
                                                     if summary.get(role)}}
    _write(workdir, result)
    print(format_table(result))
    return result


def fold_config(config: ml_collections.ConfigDict, folds: int, fold: int, repeats: int = 1, repeat: int = 0,
                stratify: bool = True, group: str = "") -> ml_collections.ConfigDict:
    """The run of one fold: the config with data.cv.* naming it, seeded by the run's seed, and no test split."""
    c = config.copy_and_resolve_references()
    for key, value in (("folds", folds), ("fold", fold), ("repeats", repeats), ("repeat", repeat),
                       ("stratify", stratify), ("group", group), ("seed", config.seed)):
        config_lib.set_value(c, f"data.cv.{key}", value)
    config_lib.set_value(c, "data.splits.test", "none")  # nested: the test split stays untouched
    if c.data.splits.val == "none":  # the held-out fold is the val split, whatever the config turned off
        config_lib.set_value(c, "data.splits.val", "")
    config_lib.validate(c)
    return c


def _check_data(config: ml_collections.ConfigDict, data) -> None:
    """Opens the first fold's data: what would fail in every fold fails once, before anything trains."""
    if data is None:
        data_lib.load(config.data)
    else:
        data_lib.bind(data, config.data)


def _check_same_folds(run_dir: str, config: ml_collections.ConfigDict) -> None:
    """A fold directory of another cross-validation (other folds, seed or groups) would resume the wrong run."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        saved = json.load(f).get("data", {})
    if saved.get("cv") != config.data.cv.to_dict():
        raise UserError(f"{run_dir}: holds a fold of another cross-validation (data.cv {saved.get('cv')}); "
                        f"use another workdir")


def _finished(run_dir: str, config: ml_collections.ConfigDict, data) -> bool:
    """Whether `run_dir` holds a finished run of `config`: its summary.json written after its config.json,
    which records this config."""
    config_path, summary_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "summary.json")
    if not (os.path.isfile(config_path) and os.path.isfile(summary_path)):
        return False
    if os.path.getmtime(summary_path) < os.path.getmtime(config_path):  # a later run started and did not finish
        return False
    if data is not None:  # train records a source given in Python by its class
        config = config.copy_and_resolve_references()
        config.data.name = data_lib.python_name(data)
    with open(config_path) as f:
        return json.load(f) == json.loads(config_lib.to_json(config))


def _read_summary(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def _write(workdir: str, result: dict) -> None:
    os.makedirs(workdir, exist_ok=True)
    metrics = result["metrics"]
    with open(os.path.join(workdir, "cv.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "repeat", "fold", *metrics])
        for row in result["rows"]:
            writer.writerow([row["run"], row["repeat"], row["fold"], *(row[m] for m in metrics)])
        for name in ("mean", "std"):
            writer.writerow([name, "", "", *(result[name][m] for m in metrics)])
    with open(os.path.join(workdir, "cv.json"), "w") as f:
        json.dump(result, f, indent=2)


def format_table(result: dict) -> str:
    """Each fold's val metrics, then their mean and standard deviation; the refit's below."""
    metrics = result["metrics"]

    def cell(value) -> str:  # counts as counts
        return str(value) if isinstance(value, (int, np.integer)) else f"{value:.4f}"

    header = ["run", *metrics]
    rows = [[row["run"], *(cell(row[m]) for m in metrics)] for row in result["rows"]]
    rows += [[name, *(f"{result[name][m]:.4f}" for m in metrics)] for name in ("mean", "std")]
    refit = result.get("refit") or {}
    rows += [[f"refit {role}", *(cell(refit[role][m]) if m in refit[role] else "-" for m in metrics)]
             for role in ("val", "test") if role in refit]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    repeats = f" x {result['repeats']} repeats" if result["repeats"] > 1 else ""
    title = (f"{result['folds']}-fold cross-validation{repeats} of the training split: val metrics per fold "
             f"(std: {result['std_kind']})")
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])
