"""Tests for jtrain/data/tabular.py on real tables (palmerpenguins, vega_datasets' cars): fitted constants and
outputs equal scikit-learn's, nothing is fitted outside the training split, unseen categories and bad data are
named, and the JSON form round-trips."""

from __future__ import annotations

import json

import numpy as np
import palmerpenguins
import pytest
import vega_datasets
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from jtrain.data.tabular import UNSEEN, Options, Preparation, infer_types
from jtrain.errors import DataError

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
CATEGORICAL = ["island", "sex"]


@pytest.fixture(scope="module")
def penguins():
    """(frame, train rows, other rows): a fixed shuffle, 240 training rows; missing values fall in both."""
    df = palmerpenguins.load_penguins()
    order = np.random.default_rng(0).permutation(len(df))
    train, other = np.sort(order[:240]), np.sort(order[240:])
    assert df.iloc[train][NUMERIC[:4] + ["sex"]].isna().any().all() and df.iloc[other]["sex"].isna().any()
    return df, train, other


@pytest.fixture(scope="module")
def cars():
    return vega_datasets.data.cars()


def _fit(df, **options):
    types = infer_types(df, "species")
    return Preparation.fit(df, "species", types, Options(**options), "classification", source="penguins.csv")


def _columns(prep):
    return {c["name"]: c for c in prep.to_json()["columns"]}


@pytest.mark.parametrize("impute", ["mean", "median", "most_frequent"])
@pytest.mark.parametrize("scale,scaler", [("standard", StandardScaler), ("robust", RobustScaler),
                                          ("minmax", MinMaxScaler)])
def test_constants_and_outputs_equal_sklearn(penguins, impute, scale, scaler):
    df, train, other = penguins
    prep = _fit(df.iloc[train], impute_numeric=impute, scale=scale)
    ref = make_pipeline(SimpleImputer(strategy=impute), scaler()).fit(df.iloc[train][NUMERIC])
    imputer, fitted = ref.steps[0][1], ref.steps[1][1]
    cols = _columns(prep)
    np.testing.assert_allclose([cols[c]["impute"] for c in NUMERIC], imputer.statistics_, rtol=1e-12)
    if scale == "standard":
        center, spread = fitted.mean_, fitted.scale_
    elif scale == "robust":
        center, spread = fitted.center_, fitted.scale_
    else:
        center, spread = fitted.data_min_, fitted.data_range_
    np.testing.assert_allclose([cols[c]["center"] for c in NUMERIC], center, rtol=1e-12)
    np.testing.assert_allclose([cols[c]["scale"] for c in NUMERIC], spread, rtol=1e-12)
    for rows in (train, other):  # the other rows hold missing values too: imputed with the training constant
        x, _ = prep.transform(df.iloc[rows])
        got = x[:, [prep.feature_names.index(c) for c in NUMERIC]]
        np.testing.assert_allclose(got, ref.transform(df.iloc[rows][NUMERIC]), rtol=1e-6, atol=1e-6)


def test_categories_equal_onehot_encoder(penguins):
    df, train, other = penguins
    prep = _fit(df.iloc[train])
    ref = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore"))
    ref.fit(df.iloc[train][CATEGORICAL].astype(object))
    cols = _columns(prep)
    assert [cols[c]["impute"] for c in CATEGORICAL] == list(ref.steps[0][1].statistics_)
    encoder = ref.steps[1][1]
    for c, cats in zip(CATEGORICAL, encoder.categories_):
        assert cols[c]["categories"] == list(cats)
    x, unseen = prep.transform(df.iloc[other])
    assert unseen == {}
    names = [f"{c}={v}" for c, cats in zip(CATEGORICAL, encoder.categories_) for v in cats]
    expected = ref.transform(df.iloc[other][CATEGORICAL].astype(object)).toarray()
    np.testing.assert_array_equal(x[:, [prep.feature_names.index(n) for n in names]], expected)
    assert not x[:, prep.feature_names.index(f"island={UNSEEN}")].any()


def test_numeric_looking_and_bool_categories(cars):
    df = cars.dropna(subset=["Miles_per_Gallon"]).reset_index(drop=True)
    df["heavy"] = df["Weight_in_lbs"] > 3000
    types = infer_types(df, "Miles_per_Gallon", categorical=("Cylinders",), drop=("Name",))
    assert types["Cylinders"] == "categorical" and types["heavy"] == "categorical" and types["Year"] == "numeric"
    prep = Preparation.fit(df, "Miles_per_Gallon", types, Options(), "regression", source="cars.json")
    assert _columns(prep)["Cylinders"]["categories"] == ["3", "4", "5", "6", "8"]
    assert _columns(prep)["heavy"]["categories"] == ["False", "True"]
    # Cylinders read back as floats (as after a NaN) still find their categories
    other = df.assign(Cylinders=df["Cylinders"].astype(float))
    x, unseen = prep.transform(other)
    assert unseen == {}
    np.testing.assert_array_equal(x[:, prep.feature_names.index("Cylinders=8")], df["Cylinders"] == 8)
    np.testing.assert_array_equal(x[:, prep.feature_names.index("heavy=True")], df["heavy"])
    ordinal = Preparation.fit(df, "Miles_per_Gallon", types, Options(encode="ordinal"), "regression")
    x, _ = ordinal.transform(df)
    codes = x[:, ordinal.feature_names.index("Cylinders")]
    np.testing.assert_array_equal(codes, df["Cylinders"].map({3: 0, 4: 1, 5: 2, 6: 3, 8: 4}))


def test_no_fitted_constant_sees_other_rows(penguins):
    df, train, other = penguins
    prep = _fit(df.iloc[train], missing_indicator=True, clip_quantiles=(0.05, 0.95))
    before = prep.to_json()
    changed = df.copy()
    changed.loc[changed.index[other], NUMERIC] *= 100
    changed.loc[changed.index[other], "island"] = "Atlantis"
    changed.loc[changed.index[other], "sex"] = None
    x, unseen = prep.transform(changed)
    assert prep.to_json() == before  # transform fits nothing
    assert unseen == {"island": len(other)}
    x_train, _ = prep.transform(df.iloc[train])
    np.testing.assert_array_equal(x[train], x_train)
    # fitted again on the same training rows, whatever the other rows hold: identical constants
    assert _fit(changed.iloc[train], missing_indicator=True, clip_quantiles=(0.05, 0.95)).to_json() == before
    standard = _fit(df.iloc[train]).transform(df.iloc[train])[0]
    j = [_fit(df.iloc[train]).feature_names.index(c) for c in NUMERIC]
    np.testing.assert_allclose(standard[:, j].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(standard[:, j].std(0), 1, atol=1e-5)


def test_unseen_categories_go_to_their_bucket(penguins):
    df, train, other = penguins
    test = df.iloc[other].copy()
    test.iloc[:7, test.columns.get_loc("island")] = "Atlantis"
    test.iloc[7:9, test.columns.get_loc("sex")] = "unknown"
    onehot = _fit(df.iloc[train])
    x, unseen = onehot.transform(test)
    assert unseen == {"island": 7, "sex": 2}
    bucket = x[:, onehot.feature_names.index(f"island={UNSEEN}")]
    np.testing.assert_array_equal(np.flatnonzero(bucket), np.arange(7))
    island = [n for n in onehot.feature_names if n.startswith("island=")]
    np.testing.assert_array_equal(x[:, [onehot.feature_names.index(n) for n in island]].sum(1), 1)
    ordinal = _fit(df.iloc[train], encode="ordinal")
    x, unseen = ordinal.transform(test)
    assert unseen == {"island": 7, "sex": 2}
    np.testing.assert_array_equal(x[:7, ordinal.feature_names.index("island")], 3)  # 3 known islands


def test_bad_data_is_one_line_naming_file_row_and_column(penguins, cars):
    df, train, other = penguins
    prep = _fit(df.iloc[train])
    with pytest.raises(DataError, match=r"^val\.csv: feature column 'sex' is not a column") as e:
        prep.transform(df.drop(columns="sex"), source="val.csv")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"penguins\.csv: target column 'kind' is not a column; the columns are"):
        infer_types(df, "kind", source="penguins.csv")
    with pytest.raises(DataError, match="target column 'species'"):
        Preparation.fit(df.drop(columns="species"), "species", {"island": "categorical"}, Options(),
                        "classification")
    row = int(np.flatnonzero(cars["Miles_per_Gallon"].isna())[0])
    types = infer_types(cars, "Miles_per_Gallon", drop=("Name",))
    with pytest.raises(DataError, match=rf"^cars\.json: target 'Miles_per_Gallon' is missing at row {row} "):
        Preparation.fit(cars, "Miles_per_Gallon", types, Options(), "regression", source="cars.json")
    mixed = df.assign(bill_length_mm=df["bill_length_mm"].astype(object))
    mixed.iloc[5, mixed.columns.get_loc("bill_length_mm")] = "long"
    with pytest.raises(DataError, match=r"^p\.csv: column 'bill_length_mm' mixes numbers and text: row 5 holds "
                                        r"'long'"):
        infer_types(mixed, "species", source="p.csv")
    with pytest.raises(DataError, match=r"column 'bill_length_mm' is numeric but row 5 holds 'long'"):
        prep.transform(mixed)
    test = df.iloc[other].copy()
    test.iloc[3, test.columns.get_loc("species")] = "Emperor"
    with pytest.raises(DataError, match=r"target 'species' row 3 has the label 'Emperor'"):
        prep.encode_target(test["species"])


def test_json_round_trip_and_log_target(penguins, cars):
    df, train, other = penguins
    for options in (Options(missing_indicator=True, clip_quantiles=(0.01, 0.99)),
                    Options(impute_numeric="constant", impute_categorical="constant", encode="ordinal",
                            scale="robust", max_categories=2)):
        prep = _fit(df.iloc[train], **{f.name: getattr(options, f.name) for f in options.__dataclass_fields__.values()})
        back = Preparation.from_json(json.loads(json.dumps(prep.to_json())))
        assert back.feature_names == prep.feature_names and back.class_names == prep.class_names
        for rows in (train, other):
            np.testing.assert_array_equal(back.transform(df.iloc[rows])[0], prep.transform(df.iloc[rows])[0])
        y = back.encode_target(df.iloc[other]["species"])
        assert y.dtype == np.int32 and list(back.decode_target(y)) == list(df.iloc[other]["species"])
    assert prep.class_names == ("Adelie", "Chinstrap", "Gentoo")
    data = cars.dropna(subset=["Miles_per_Gallon"]).reset_index(drop=True)
    types = infer_types(data, "Miles_per_Gallon", drop=("Name",))
    prep = Preparation.fit(data, "Miles_per_Gallon", types, Options(log_target=True), "regression")
    back = Preparation.from_json(json.loads(json.dumps(prep.to_json())))
    y = back.encode_target(data["Miles_per_Gallon"])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.log(data["Miles_per_Gallon"]), rtol=1e-6)
    np.testing.assert_allclose(back.decode_target(y), data["Miles_per_Gallon"], rtol=1e-6)
    np.testing.assert_array_equal(back.transform(data)[0], prep.transform(data)[0])
    bad = data.assign(Miles_per_Gallon=data["Miles_per_Gallon"] - 20)
    with pytest.raises(DataError, match="log_target needs every target > 0, use it only for positive targets"):
        Preparation.fit(bad, "Miles_per_Gallon", types, Options(log_target=True), "regression", source="cars.json")


def test_clip_bounds_are_training_quantiles_after_imputation(penguins):
    df, train, other = penguins
    q = (0.05, 0.9)
    for impute in ("mean", "median"):
        prep = _fit(df.iloc[train], impute_numeric=impute, clip_quantiles=q)
        cols = _columns(prep)
        for c in NUMERIC:
            imputed = SimpleImputer(strategy=impute).fit_transform(df.iloc[train][[c]])[:, 0]
            np.testing.assert_allclose(cols[c]["clip"], np.quantile(imputed, q), rtol=1e-12)
            clipped = np.clip(imputed, *np.quantile(imputed, q))
            np.testing.assert_allclose([cols[c]["center"], cols[c]["scale"]], [clipped.mean(), clipped.std()],
                                       rtol=1e-12)
        x, _ = prep.transform(df)
        j = prep.feature_names.index("body_mass_g")
        lo, hi = ((np.array(cols["body_mass_g"]["clip"]) - cols["body_mass_g"]["center"])
                  / cols["body_mass_g"]["scale"])
        assert x[:, j].min() >= np.float32(lo) - 1e-6 and x[:, j].max() <= np.float32(hi) + 1e-6


def test_report_names_every_step(penguins):
    df, train, _ = penguins
    report = _fit(df.iloc[train], missing_indicator=True).report()
    sex = report["columns"]["sex"]
    assert sex["type"] == "categorical" and sex["missing"] == int(df.iloc[train]["sex"].isna().sum())
    assert sex["n_categories"] == 2 and sex["indicator"] and sex["impute"] in ("female", "male")
    mass = report["columns"]["body_mass_g"]
    assert {"impute", "center", "scale", "clip", "missing"} <= set(mass)
    assert report["target"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    json.dumps(report)
