"""Tests for jtrain.plots: each plot is a readable PNG and leaves no figure open."""

from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from jtrain.plots import plot_confusion_matrix, plot_roc_curve, plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_figures_leak():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def _assert_png(path, returned) -> np.ndarray:
    assert returned == str(path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return image


def test_training_curves(tmp_path):
    records = []
    for step in range(0, 100, 10):
        records.append({"step": step, "split": "train", "loss": 1.0 / (step + 1), "learning_rate": 1e-3})
        if step % 50 == 0:
            records.append({"step": step, "split": "val", "loss": 1.2 / (step + 1), "accuracy": 0.5 + step / 200,
                            "confusion": [[3, 1], [0, 4]]})  # non-scalar: skipped
    records.append({"step": 100, "split": "test", "accuracy": 0.9})  # a single point
    path = tmp_path / "curves.png"
    _assert_png(path, plot_training_curves(records, str(path)))


def test_training_curves_without_scalars_raises(tmp_path):
    with pytest.raises(ValueError):
        plot_training_curves([{"step": 1, "split": "val", "confusion": [[1]]}], str(tmp_path / "x.png"))


@pytest.mark.parametrize("class_names", [None, ["cat", "dog", "bird"]])
def test_confusion_matrix(tmp_path, class_names):
    confusion = np.array([[50, 2, 0], [3, 40, 7], [0, 1, 60]])
    path = tmp_path / "confusion.png"
    _assert_png(path, plot_confusion_matrix(confusion, class_names, str(path), title="val"))


def test_confusion_matrix_rejects_non_square(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), None, str(tmp_path / "x.png"))


def test_roc_curve(tmp_path):
    fpr = np.array([0.0, 0.1, 0.3, 1.0])
    tpr = np.array([0.0, 0.6, 0.9, 1.0])
    path = tmp_path / "sub" / "roc.png"  # parent directory created on demand
    _assert_png(path, plot_roc_curve(fpr, tpr, 0.87, str(path)))
