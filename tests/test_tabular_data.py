"""Tests for the tabular datasets (diabetes regression, breast_cancer binary): TFDS builders from scikit-learn,
splits, per-feature standardisation from the training split only, standardised float targets, exact eval batches."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from jtrain.config import default_config
from jtrain import data as data_lib
from jtrain.data import indexed, registry
from jtrain.errors import ConfigError


@pytest.fixture(scope="module")
def tabular_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tabular_tfds"))
    for name in ("diabetes", "breast_cancer"):
        registry.prepare(name, path)
    return path


def _config(data_dir, name, **fields):
    c = default_config().data
    c.dir, c.name = data_dir, name
    for k, v in fields.items():
        c[k] = v
    return c


def _all(data, role, normalize=False):
    """Every example of a split, un-normalised unless asked, via the eval path (in order, no padding)."""
    c = _config("", data.spec.name, eval_batch_size=1000, normalize=normalize)
    (b,) = list(data.eval_batches(role, c))
    return b["inputs"][b["mask"]], b["targets"][b["mask"]]


def _raw(data, role):
    b = indexed.read_batch(data.sources[role], np.arange(data.num_examples(role)), data.spec)
    return b["inputs"], b["targets"]


def test_diabetes_splits_keep_sklearn_rows_in_order(tabular_dir):
    data = data_lib.load(_config(tabular_dir, "diabetes"))
    x, y = load_diabetes(return_X_y=True)
    sizes = {role: data.num_examples(role) for role in ("train", "val", "test")}
    assert sizes == {"train": 309, "val": 67, "test": 66}
    inputs, targets = _raw(data, "test")
    np.testing.assert_allclose(inputs, x[-66:], rtol=1e-6)
    np.testing.assert_allclose(targets, y[-66:], rtol=1e-6)
    assert targets.dtype == np.float32 and data.spec.input_shape == (10,)


def test_breast_cancer_is_a_binary_labelled_table(tabular_dir):
    data = data_lib.load(_config(tabular_dir, "breast_cancer"))
    sizes = [data.num_examples(role) for role in ("train", "val", "test")]
    assert sum(sizes) == 569 and sizes[0] == 398
    x, y = load_breast_cancer(return_X_y=True)
    inputs = np.concatenate([_raw(data, r)[0] for r in ("train", "val", "test")])
    labels = np.concatenate([_raw(data, r)[1] for r in ("train", "val", "test")])
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1}
    # The same rows (TFDS shuffles them by key): compare as sorted sets of rows.
    key = lambda a: np.sort(np.ascontiguousarray(a, np.float32).view([("", np.float32)] * 30).ravel())  # noqa: E731
    np.testing.assert_array_equal(key(inputs), key(x))
    assert labels.sum() == y.sum()
    assert data.spec.class_names == ("malignant", "benign")


def test_features_are_standardised_with_training_statistics_only(tabular_dir):
    data = data_lib.load(_config(tabular_dir, "breast_cancer"))
    raw_train, _ = _raw(data, "train")
    np.testing.assert_allclose(data.stats.mean, raw_train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(data.stats.std, raw_train.std(0), rtol=1e-5)
    c = _config(tabular_dir, "breast_cancer", batch_size=398, shuffle=False, prefetch=0)
    it = iter(data.train_dataset(c, seed=0))
    train = next(it)["inputs"]
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
    # Val / test use the training split's statistics, not their own.
    test_inputs, _ = _all(data, "test", normalize=True)
    raw_test, _ = _raw(data, "test")
    np.testing.assert_allclose(test_inputs, (raw_test - raw_train.mean(0)) / raw_train.std(0), rtol=1e-4, atol=1e-4)
    assert data.target_std is None  # labels are not scaled


def test_regression_targets_standardised_and_padding_zero(tabular_dir):
    data = data_lib.load(_config(tabular_dir, "diabetes"))
    _, raw_train_y = _raw(data, "train")
    assert float(data.stats.target_mean) == pytest.approx(raw_train_y.mean(), rel=1e-5)
    assert float(data.target_std) == pytest.approx(raw_train_y.std(), rel=1e-5)
    c = _config(tabular_dir, "diabetes", eval_batch_size=50)
    batches = list(data.eval_batches("val", c))
    targets = np.concatenate([b["targets"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    inputs = np.concatenate([b["inputs"] for b in batches])
    assert mask.sum() == 67 and len(mask) == 100
    _, raw_val_y = _raw(data, "val")
    np.testing.assert_allclose(targets[mask], (raw_val_y - raw_train_y.mean()) / raw_train_y.std(), rtol=1e-4,
                               atol=1e-5)
    assert not targets[~mask].any() and not inputs[~mask].any()
    # normalize_targets=False: raw targets, nothing to scale back.
    raw = data_lib.load(_config(tabular_dir, "diabetes", normalize_targets=False))
    assert raw.target_std is None
    (b,) = list(raw.eval_batches("val", _config(tabular_dir, "diabetes", eval_batch_size=67)))
    np.testing.assert_allclose(b["targets"], raw_val_y)


def test_image_augmentations_are_refused_for_tables(tabular_dir):
    data = data_lib.load(_config(tabular_dir, "diabetes"))
    with pytest.raises(ConfigError, match="data.augment"):
        data.train_dataset(_config(tabular_dir, "diabetes", augment="noise"), seed=0)
