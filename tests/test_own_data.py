"""Your own data (jtrain/data/own.py): real tables (Palmer penguins, vega_datasets cars), image folders written
from scikit-learn's digits, a Hugging Face dataset saved locally and NumPy arrays train, evaluate from
config.json alone and predict on new rows with the preparation fitted on the training split; the cache follows
the files' content; bad input is one line and exit code 2."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits, load_wine

import jtrain
from _cli import SMOKE_OVERRIDES, run_jtrain
from jtrain import config as config_lib
from jtrain.data import own
from jtrain.errors import ConfigError, DataError

PENGUINS = "experiments/penguins_mlp.py"
CARS = "experiments/cars_mlp.py"


def _config(experiment: str, data_dir: str, **data) -> object:
    c = config_lib.load_experiment(experiment)
    config_lib.apply_overrides(c, [o.removeprefix("--config.") for o in SMOKE_OVERRIDES])
    c.train.progress = False
    c.train.early_stopping_patience = 0
    c.data.dir = data_dir
    for key, value in data.items():
        config_lib.set_value(c, f"data.{key}", value)
    return c


def _penguins() -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_csv_trains_evaluates_and_predicts_through_the_cli(tmp_path):
    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "data")
    result = run_jtrain(["train", "--config", PENGUINS, *SMOKE_OVERRIDES, "--config.train.early_stopping_patience=0",
                         "--workdir", workdir], data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "classes (train): Adelie" in result.stdout and "missing values: " in result.stdout
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(workdir, "data_report.json")) as f:
        report = json.load(f)
    # 344 penguins split 70 / 15 / 15, stratified: every species in every split.
    assert sum(r["rows"] for r in report["roles"].values()) == 344
    assert all(len(r["class_balance"]) == 3 for r in report["roles"].values())
    sex = report["transforms"]["columns"]["sex"]
    assert sex["missing"] == report["roles"]["train"]["missing"]["sex"] > 0  # imputed with the training mode
    assert sex["impute"] in ("female", "male") and sex["categories"] == ["female", "male"]
    assert summary["test"]["accuracy"] > 0.8  # three species: chance is about 0.44

    evaluated = run_jtrain(["eval", "--workdir", workdir], data_dir)  # config.json alone
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert _last_json(evaluated.stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-9)

    new = _penguins().head(6).copy()
    new.loc[0, "island"] = "Atlantis"  # a category training never saw
    new = new.drop(columns=["species"])
    new.to_csv(tmp_path / "new.csv", index=False)
    out = str(tmp_path / "preds.csv")
    predicted = run_jtrain(["predict", "--workdir", workdir, "--input", str(tmp_path / "new.csv"), "--output", out],
                           data_dir)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "categories unseen in training: island 1" in predicted.stdout
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["row", "prediction", "Adelie", "Chinstrap", "Gentoo"]
    np.testing.assert_allclose(preds[["Adelie", "Chinstrap", "Gentoo"]].sum(1), 1.0, atol=1e-6)
    assert (preds["prediction"] == preds[["Adelie", "Chinstrap", "Gentoo"]].idxmax(1)).all()
    assert (preds["prediction"][1:] == "Adelie").mean() >= 0.8  # the first rows of the file are Adelie penguins


def test_the_preparation_is_fitted_on_the_training_split_alone(tmp_path):
    frame = _penguins()
    rows = np.random.default_rng(0).permutation(len(frame))
    parts = {"train": frame.iloc[rows[:200]], "val": frame.iloc[rows[200:270]], "test": frame.iloc[rows[270:]]}
    for role, part in parts.items():
        part.to_csv(tmp_path / f"{role}.csv", index=False)
    config = _config(PENGUINS, str(tmp_path / "data"), name=f"csv:{tmp_path}/{{split}}.csv")
    first = own.load(config.data)
    # Every val and test row changed: no fitted constant moves.
    for role in ("val", "test"):
        changed = parts[role].copy()
        changed[["bill_length_mm", "body_mass_g"]] *= 100
        changed["island"] = "Atlantis"
        changed.to_csv(tmp_path / f"{role}.csv", index=False)
    second = own.load(config.data)
    assert first.fitted["preparation"] == second.fitted["preparation"]
    np.testing.assert_array_equal(first.sources["train"].inputs, second.sources["train"].inputs)
    assert not np.array_equal(first.sources["val"].inputs, second.sources["val"].inputs)
    assert second.report["roles"]["val"]["unseen_categories"] == {"island": 70}
    assert first.splits.keys() == {"train", "val", "test"} and first.num_train == 200


def test_prepared_data_is_cached_by_content(tmp_path):
    path = tmp_path / "penguins.parquet"
    _penguins().to_parquet(path)
    config = _config(PENGUINS, str(tmp_path / "data"), name=f"parquet:{path}")
    first = own.load(config.data)
    caches = os.listdir(tmp_path / "data" / "own")
    again = own.load(config.data)
    assert os.listdir(tmp_path / "data" / "own") == caches  # the same content: read from the cache
    assert isinstance(again.sources["train"].inputs, np.memmap)
    np.testing.assert_array_equal(first.sources["test"].inputs, again.sources["test"].inputs)
    _penguins().iloc[::-1].to_parquet(path)  # the same name, other content
    changed = own.load(config.data)
    assert len(os.listdir(tmp_path / "data" / "own")) == 2
    assert not np.array_equal(first.sources["train"].inputs, changed.sources["train"].inputs)


def test_a_glob_of_files_is_one_table(tmp_path):
    frame = _penguins()
    frame.iloc[:150].to_csv(tmp_path / "part-0.csv", index=False)
    frame.iloc[150:].to_csv(tmp_path / "part-1.csv", index=False)
    source = own.load(_config(PENGUINS, str(tmp_path / "data"), name=f"csv:{tmp_path}/part-*.csv").data)
    assert sum(source.num_examples(r) for r in source.splits) == 344


def test_a_log_target_reports_and_predicts_in_the_targets_units(tmp_path):
    """cars: the model learns log(mpg); eval's MAE and predictions in miles per gallon agree."""
    import vega_datasets

    cars = vega_datasets.data.cars().dropna(subset=["Miles_per_Gallon"])
    cars["Year"] = cars["Year"].astype(str)
    rows = np.random.default_rng(1).permutation(len(cars))
    cars.iloc[rows[:280]].to_csv(tmp_path / "train.csv", index=False)
    cars.iloc[rows[280:]].to_csv(tmp_path / "test.csv", index=False)
    config = _config(CARS, str(tmp_path / "data"), name=f"csv:{tmp_path}/{{split}}.csv")
    config.train.steps = 200
    workdir = str(tmp_path / "run")
    summary = jtrain.train(config, workdir)
    test = summary["test"]
    preds = jtrain.predict(workdir, str(tmp_path / "test.csv"))
    truth = cars.iloc[rows[280:]]["Miles_per_Gallon"].to_numpy()
    assert np.abs(preds["prediction"] - truth).mean() == pytest.approx(test["mae"], rel=1e-4)
    assert test["r2"] > 0.5  # the mean predictor scores 0
    assert 8 < preds["prediction"].mean() < 50  # miles per gallon, not log units


def _write_digit_pngs(root, per_class: int = 40) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    digits = load_digits()
    pixels = (digits.images * 255 / 16).round().astype(np.uint8)  # (1797, 8, 8)
    chosen = np.concatenate([np.flatnonzero(digits.target == k)[:per_class] for k in range(10)])
    for i in chosen:
        folder = os.path.join(root, str(digits.target[i]))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(pixels[i]).save(os.path.join(folder, f"{i:04d}.png"))
    return pixels, digits.target


def test_an_image_folder_trains_and_predicts_on_new_images(tmp_path):
    pixels, labels = _write_digit_pngs(tmp_path / "digits")
    config = _config("experiments/digits_cnn.py", str(tmp_path / "data"), name=f"images:{tmp_path}/digits")
    config.train.steps = 120
    workdir = str(tmp_path / "run")
    summary = jtrain.train(config, workdir)
    assert summary["test"]["accuracy"] > 0.5  # ten classes: chance is 0.1
    fitted = json.load(open(os.path.join(workdir, "preparation.json")))
    assert fitted["input_shape"] == [8, 8, 1] and fitted["class_names"] == [str(k) for k in range(10)]
    # New images: digits the folder does not hold, as PNG files.
    from PIL import Image

    new = tmp_path / "new"
    new.mkdir()
    unseen = [i for i in range(len(labels)) if i >= 1000][:30]
    for i in unseen:
        Image.fromarray(pixels[i]).save(new / f"{i:04d}.png")
    preds = jtrain.predict(workdir, str(new))
    assert len(preds) == 30 and list(preds.columns[:2]) == ["file", "prediction"]
    assert (preds["prediction"].astype(int).to_numpy() == labels[unseen]).mean() > 0.5


def test_a_saved_hugging_face_dataset_trains(tmp_path):
    import datasets

    wine = load_wine(as_frame=True).frame
    rows = np.random.default_rng(0).permutation(len(wine))
    dsdict = datasets.DatasetDict({"train": datasets.Dataset.from_pandas(wine.iloc[rows[:120]], preserve_index=False),
                                   "validation": datasets.Dataset.from_pandas(wine.iloc[rows[120:150]],
                                                                              preserve_index=False),
                                   "test": datasets.Dataset.from_pandas(wine.iloc[rows[150:]], preserve_index=False)})
    dsdict.save_to_disk(str(tmp_path / "wine"))
    config = _config(PENGUINS, str(tmp_path / "data"), name=f"hf:{tmp_path}/wine", target="target")
    workdir = str(tmp_path / "run")
    summary = jtrain.train(config, workdir)
    assert summary["test"]["num_examples"] == len(wine) - 150
    assert summary["test"]["accuracy"] > 0.6  # three cultivars
    assert jtrain.evaluate(workdir)["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-9)


def test_a_dataframe_and_arrays_given_in_python(tmp_path):
    config = _config(PENGUINS, str(tmp_path / "data"))
    summary = jtrain.train(config, str(tmp_path / "frame"), data=jtrain.data.from_arrays(_penguins(), target="species"))
    assert summary["test"]["accuracy"] > 0.8
    preds = jtrain.predict(str(tmp_path / "frame"), _penguins().drop(columns=["species"]).head(3))
    assert list(preds.columns[1:]) == ["prediction", "Adelie", "Chinstrap", "Gentoo"]
    with pytest.raises(DataError, match="'island'"):  # a column the preparation needs, missing at predict time
        jtrain.predict(str(tmp_path / "frame"), _penguins().drop(columns=["species", "island"]).head(3))

    wine = load_wine()
    summary = jtrain.train(config, str(tmp_path / "arrays"),
                           data=jtrain.data.from_arrays(wine.data, wine.target, class_names=wine.target_names))
    assert summary["test"]["accuracy"] > 0.6
    # Stratified 70 / 15 / 15 of 178 wines.
    assert summary["test"]["num_examples"] + summary["val"]["num_examples"] == 178 - 124


@pytest.mark.parametrize("setup, expected", [
    ("missing_target_column", "no target column 'species'"),
    ("target_with_missing_values", "row 3 has no value in the target column 'species'"),
    ("empty_file", "the file is empty"),
    ("glob_matching_nothing", "the glob matches no file"),
    ("split_files_with_other_columns", "lacks year"),
    ("mixed_types", "column 'bill_length_mm' mixes numbers and text"),
    ("one_class_folder", "at least 2"),
    ("unreadable_image", "x.png"),
])
def test_bad_input_is_one_line(tmp_path, setup, expected):
    frame = _penguins()
    name = f"csv:{tmp_path}/t.csv"
    if setup == "missing_target_column":
        frame.drop(columns=["species"]).to_csv(tmp_path / "t.csv", index=False)
    elif setup == "target_with_missing_values":
        frame.loc[3, "species"] = None
        frame.to_csv(tmp_path / "t.csv", index=False)
    elif setup == "empty_file":
        (tmp_path / "t.csv").write_text("")
    elif setup == "glob_matching_nothing":
        name = f"csv:{tmp_path}/nothing-*.csv"
    elif setup == "split_files_with_other_columns":
        frame.to_csv(tmp_path / "train.csv", index=False)
        frame.drop(columns=["year"]).to_csv(tmp_path / "val.csv", index=False)
        name = f"csv:{tmp_path}/{{split}}.csv"
    elif setup == "mixed_types":
        frame["bill_length_mm"] = frame["bill_length_mm"].astype(object)
        frame.loc[5, "bill_length_mm"] = "long"
        frame.to_csv(tmp_path / "t.csv", index=False)
    elif setup == "one_class_folder":
        _write_digit_pngs(tmp_path / "all", per_class=2)
        for k in range(1, 10):
            for f in os.listdir(tmp_path / "all" / str(k)):
                os.remove(tmp_path / "all" / str(k) / f)
            os.rmdir(tmp_path / "all" / str(k))
        name = f"images:{tmp_path}/all"
    elif setup == "unreadable_image":
        _write_digit_pngs(tmp_path / "all", per_class=2)
        (tmp_path / "all" / "3" / "x.png").write_bytes(b"not a png")
        name = f"images:{tmp_path}/all"
    config = _config(PENGUINS, str(tmp_path / "data"), name=name)
    with pytest.raises((DataError, ConfigError)) as raised:
        own.load(config.data)
    message = str(raised.value)
    assert expected in message and "\n" not in message, message
    assert not os.path.exists(tmp_path / "data" / "own") or not os.listdir(tmp_path / "data" / "own")


def test_a_bad_file_from_the_cli_exits_2_and_keeps_the_runs_files(tmp_path):
    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "data")
    _penguins().drop(columns=["species"]).to_csv(tmp_path / "t.csv", index=False)
    os.makedirs(workdir)
    with open(os.path.join(workdir, "notes.txt"), "w") as f:
        f.write("mine")
    result = run_jtrain(["train", "--config", PENGUINS, f"--config.data.name=csv:{tmp_path}/t.csv", "--workdir",
                         workdir], data_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no target column 'species'" in lines[0], result.stderr
    assert os.listdir(workdir) == ["notes.txt"]


def test_a_tfds_catalog_dataset_offline(tmp_path, monkeypatch, digits_data_dir):
    from jtrain.data import catalog, registry

    # Tests reach nothing but loopback: a closed local port stands in for TFDS's servers out of reach.
    monkeypatch.setattr(catalog, "PROBE", ("127.0.0.1", 9))
    config = _config(PENGUINS, str(tmp_path / "empty"), name="tfds:mnist")
    import time

    start = time.monotonic()
    with pytest.raises(DataError) as raised:
        jtrain.data.load(config.data)
    assert time.monotonic() - start < 5
    assert "not prepared in" in str(raised.value) and "download_and_prepare" in str(raised.value)
    with pytest.raises(DataError, match="no dataset 'no_such_set' in the TFDS catalog"):
        jtrain.data.load(_config(PENGUINS, str(tmp_path), name="tfds:no_such_set").data)
    # A dataset already prepared in the data dir needs no network: jtrain's own digits builder, as TFDS knows it.
    prepared = os.path.dirname(os.path.dirname(registry.prepare("digits", digits_data_dir)))
    config = _config("experiments/digits_cnn.py", prepared, name="tfds:digits")
    config.train.steps = 60
    summary = jtrain.train(config, str(tmp_path / "run"))
    assert summary["test"]["accuracy"] > 0.5


def test_a_resumed_csv_run_equals_an_uninterrupted_one_and_keeps_its_preparation(tmp_path):
    path = tmp_path / "penguins.csv"
    _penguins().to_csv(path, index=False)
    config = _config(PENGUINS, str(tmp_path / "data"), name=f"csv:{path}")
    straight = jtrain.train(config, str(tmp_path / "straight"))
    resumed_dir = str(tmp_path / "resumed")
    config.train.steps = 20  # stops at the step-20 checkpoint
    jtrain.train(config, resumed_dir)
    fitted = json.load(open(os.path.join(resumed_dir, "preparation.json")))
    config.train.steps = 30
    resumed = jtrain.train(config, resumed_dir)
    assert json.load(open(os.path.join(resumed_dir, "preparation.json"))) == fitted
    assert resumed["test"]["loss"] == pytest.approx(straight["test"]["loss"], rel=1e-6)
    assert resumed["test"]["accuracy"] == straight["test"]["accuracy"]


@pytest.mark.slow
def test_two_processes_train_a_csv_like_one(tmp_path):
    import subprocess
    import sys

    from _cli import REPO_ROOT
    from test_multiprocess import _free_port, _losses

    path = tmp_path / "penguins.csv"
    _penguins().to_csv(path, index=False)
    args = ["train", "--config", PENGUINS, *SMOKE_OVERRIDES, f"--config.data.name=csv:{path}",
            "--config.data.eval_batch_size=32"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    single = run_jtrain([*args, "--workdir", one], str(tmp_path / "data1"),
                        {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "JTRAIN_DATA_DIR": str(tmp_path / "data2"), "PYTHONPATH": REPO_ROOT,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [subprocess.Popen([sys.executable, "-m", "jtrain", *args, "--workdir", two, "--coordinator",
                               f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)], cwd=REPO_ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    a, b = _losses(one), _losses(two)
    assert a.keys() == b.keys() and len(a) >= 3
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), step
    s1, s2 = (json.load(open(os.path.join(w, "summary.json"))) for w in (one, two))
    assert s2["test"]["num_examples"] == s1["test"]["num_examples"] > 0
    assert s2["test"]["loss"] == pytest.approx(s1["test"]["loss"], rel=1e-4)
