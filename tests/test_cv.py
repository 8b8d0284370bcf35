"""`jtrain cv` (jtrain/cv.py, jtrain/data/folds.py): the folds are scikit-learn's on the training split's rows,
each fold prepares its data from its own training rows, the CLI writes the table of per-fold val metrics with
mean and std, every fold is a run `jtrain eval` reopens, a second `jtrain cv` trains nothing, and bad input is
one line with exit code 2."""

from __future__ import annotations

import csv
import importlib
import json
import os

import ml_collections
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold, KFold, RepeatedStratifiedKFold, StratifiedKFold

import jtrain
from _cli import SMOKE_OVERRIDES, run_jtrain
from jtrain import config as config_lib
from jtrain.data import folds, own
from jtrain.errors import ConfigError

cv_lib = importlib.import_module("jtrain.cv")  # the module; jtrain.cv is the function

PENGUINS = "experiments/penguins_mlp.py"


def _penguins_config(data_dir: str, csv_path: str, **cv) -> ml_collections.ConfigDict:
    c = config_lib.load_experiment(PENGUINS)
    config_lib.apply_overrides(c, [o.removeprefix("--config.") for o in SMOKE_OVERRIDES])
    c.train.progress = False
    c.data.dir = data_dir
    config_lib.set_value(c, "data.name", f"csv:{csv_path}")
    return cv_lib.fold_config(c, **cv) if cv else c


@pytest.fixture(scope="module")
def penguins_csv(tmp_path_factory) -> str:
    import palmerpenguins

    path = tmp_path_factory.mktemp("penguins") / "penguins.csv"
    palmerpenguins.load_penguins().to_csv(path, index=False)
    return str(path)


def _training_frame(config) -> pd.DataFrame:
    """The rows a run without folds trains on, in their order (data.split_ratios, stratified)."""
    frame = pd.read_csv(config.data.name.partition(":")[2])
    rows = own.split_rows(frame["species"].to_numpy(), "classification", config.data)["train"]
    return frame.iloc[rows].reset_index(drop=True)


@pytest.mark.parametrize("kind", ["stratified", "plain", "group", "repeated"])
def test_table_folds_equal_scikit_learns_and_are_prepared_from_their_own_rows(tmp_path, penguins_csv, kind):
    data_dir = str(tmp_path / "data")
    args = {"stratified": dict(folds=3, fold=1), "plain": dict(folds=4, fold=3, stratify=False),
            "group": dict(folds=3, fold=2, group="year"), "repeated": dict(folds=3, fold=2, repeats=2, repeat=1)}[kind]
    config = _penguins_config(data_dir, penguins_csv, **args)
    train = _training_frame(config)
    x, y, seed = np.zeros((len(train), 1)), train["species"].to_numpy(), config.seed
    splitter = {"stratified": StratifiedKFold(3, shuffle=True, random_state=seed).split(x, y),
                "plain": KFold(4, shuffle=True, random_state=seed).split(x),
                "group": GroupKFold(3, shuffle=True, random_state=seed).split(x, y, train["year"]),
                "repeated": RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=seed).split(x, y)}[kind]
    expected = list(splitter)[args.get("repeat", 0) * args["folds"] + args["fold"]]

    source = own.load(config.data)
    assert set(source.splits) == {"train", "val"}  # the test split is not read
    assert source.num_examples("train") == len(expected[0]) and source.num_examples("val") == len(expected[1])
    # The fold's rows given as files of their own prepare to the same arrays with the same fitted constants:
    # the preparation saw the fold's training rows and nothing else.
    alone = own.prepare_tables({"train": train.iloc[expected[0]], "val": train.iloc[expected[1]]},
                               {"train": "train", "val": "val"}, _penguins_config(data_dir, penguins_csv).data, None)
    arrays, fitted, _ = alone
    assert source.fitted["preparation"] == fitted["preparation"]
    for role in ("train", "val"):
        np.testing.assert_array_equal(source.sources[role].inputs, arrays[role][0])
        np.testing.assert_array_equal(source.sources[role].targets, arrays[role][1])
    if kind == "group":  # whole years held out
        assert set(train["year"].iloc[expected[1]]).isdisjoint(train["year"].iloc[expected[0]])


def test_builtin_folds_equal_scikit_learns(digits_data_dir):
    from jtrain.data import pipeline, registry

    def load(**cv):
        c = config_lib.default_config()
        c.data.dir = digits_data_dir
        for key, value in cv.items():
            config_lib.set_value(c, f"data.cv.{key}", value)
        config_lib.validate(c)
        return pipeline.load(c.data, registry.get_spec("digits"))

    whole = load()
    target_key = registry.get_spec("digits").target_key
    labels = folds.split_targets(whole.sources["train"], target_key)
    x = np.zeros((len(labels), 1))
    for cv, splitter in [(dict(folds=5, fold=3, seed=7), StratifiedKFold(5, shuffle=True, random_state=7).split(x, labels)),
                         (dict(folds=5, fold=0, stratify=False), KFold(5, shuffle=True, random_state=0).split(x)),
                         (dict(folds=3, fold=2, repeats=2, repeat=1),
                          RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0).split(x, labels))]:
        train_rows, heldout = list(splitter)[cv.get("repeat", 0) * cv["folds"] + cv["fold"]]
        source = load(**cv)
        assert set(source.splits) == {"train", "val", "test"}
        np.testing.assert_array_equal(source.sources["train"].rows, train_rows)
        np.testing.assert_array_equal(source.sources["val"].rows, heldout)
        # Examples read through the fold are the training split's rows.
        np.testing.assert_array_equal(folds.split_targets(source.sources["val"], target_key), labels[heldout])
        assert source.num_examples("test") == whole.num_examples("test")


def test_three_folds_through_the_cli_then_a_rerun_trains_nothing(tmp_path, penguins_csv):
    workdir, data_dir = str(tmp_path / "cv"), str(tmp_path / "data")
    args = ["cv", "--config", PENGUINS, "--workdir", workdir, "--folds", "3", "--refit", *SMOKE_OVERRIDES,
            f"--config.data.name=csv:{penguins_csv}"]
    result = run_jtrain(args, data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3-fold cross-validation" in result.stdout

    with open(os.path.join(workdir, "cv.csv")) as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["fold-0", "fold-1", "fold-2", "mean", "std"]
    accuracy = np.array([float(r["accuracy"]) for r in table[:3]])
    assert float(table[3]["accuracy"]) == pytest.approx(accuracy.mean())
    assert float(table[4]["accuracy"]) == pytest.approx(accuracy.std())  # population std
    train_rows = len(_training_frame(_penguins_config(data_dir, penguins_csv)))
    assert sum(int(float(r["num_examples"])) for r in table[:3]) == train_rows  # every training row held out once

    summaries = []
    for k in range(3):
        with open(os.path.join(workdir, f"fold-{k}", "summary.json")) as f:
            summaries.append(json.load(f))
        assert "test" not in summaries[-1]  # nested: the test split stays untouched
        assert float(table[k]["accuracy"]) == pytest.approx(summaries[-1]["val"]["accuracy"])
    evaluated = run_jtrain(["eval", "--workdir", os.path.join(workdir, "fold-1"), "--split", "val"], data_dir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(
        summaries[1]["val"]["accuracy"], abs=1e-9)

    with open(os.path.join(workdir, "refit", "summary.json")) as f:
        refit = json.load(f)
    assert refit["test"]["num_examples"] > 0 and "accuracy" in refit["test"]
    with open(os.path.join(workdir, "cv.json")) as f:
        assert json.load(f)["refit"]["test"]["accuracy"] == pytest.approx(refit["test"]["accuracy"])
    preparations = []
    for run in ("fold-0", "fold-1", "fold-2", "refit"):
        with open(os.path.join(workdir, run, "preparation.json")) as f:
            preparations.append(json.dumps(json.load(f)["preparation"], sort_keys=True))
    assert len(set(preparations)) == 4  # each fitted on its own training rows

    checkpoints = {p: os.path.getmtime(os.path.join(workdir, p)) for run in ("fold-0", "fold-1", "fold-2", "refit")
                   for p in [os.path.join(run, "checkpoints", d) for d in os.listdir(os.path.join(workdir, run, "checkpoints"))]}
    again = run_jtrain(args, data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training examples" not in again.stdout  # no run started
    assert {p: os.path.getmtime(os.path.join(workdir, p)) for p in checkpoints} == checkpoints
    with open(os.path.join(workdir, "cv.csv")) as f:
        assert list(csv.DictReader(f)) == table


@pytest.mark.parametrize("flags, message", [
    (["--folds", "1"], "--folds 1: cross-validation needs at least 2 folds"),
    (["--folds", "60"], "config key 'data.cv.folds': 60 stratified folds, but the class"),
    (["--folds", "3", "--group", "colony"], "no column 'colony' (data.cv.group)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, penguins_csv, flags, message):
    workdir = str(tmp_path / "cv")
    result = run_jtrain(["cv", "--config", PENGUINS, "--workdir", workdir, *flags, *SMOKE_OVERRIDES,
                         f"--config.data.name=csv:{penguins_csv}"], str(tmp_path / "data"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(workdir, "fold-0"))  # nothing trained


def test_groups_need_a_table_and_text_cannot_be_folded(digits_data_dir, tmp_path):
    c = config_lib.default_config()
    c.data.dir = digits_data_dir
    with pytest.raises(ConfigError, match=r"data.cv.group.*builtin 'digits'"):
        jtrain.data.load(cv_lib.fold_config(c, 3, 0, group="year").data)
    config_lib.set_value(c, "data.name", "shakespeare_char")
    with pytest.raises(ConfigError, match="applies to image and tabular data"):
        jtrain.data.load(cv_lib.fold_config(c, 3, 0).data)
    with pytest.raises(ConfigError, match="data.cv.fold"):
        config_lib.apply_overrides(c, ["data.cv.folds=3", "data.cv.fold=3"])
