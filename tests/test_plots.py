"""Tests for jtrain.plots: each plot is a readable PNG and leaves no figure open."""

from __future__ import annotations

import os

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


def test_training_curves_draw_the_methods_keys_with_two_points_or_more(tmp_path, monkeypatch):
    import jtrain.plots as plots_module

    drawn = []
    monkeypatch.setattr(plots_module, "_save", lambda fig, path, tight=True: drawn.append(
        [ax.get_title() for ax in fig.axes if ax.get_visible()]) or plt.close(fig) or path)
    records = [{"step": s, "split": "train", "loss": 1.0 / s, "accuracy": 0.5, "learning_rate": 1e-3,
                "examples_per_sec": 100.0 + s, "skipped_steps": 0} for s in (10, 20, 30)]
    records += [{"step": 30, "split": "test", "accuracy": 0.9, "precision_macro": 0.9}]  # one point each
    plot_training_curves(records, str(tmp_path / "x.png"), keys=("loss", "accuracy", "f1_macro"))
    assert drawn == [["loss (train)", "accuracy (train)", "learning_rate (train)", "examples_per_sec (train)"]]


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



def test_time_breakdown_is_one_bar_per_part(tmp_path, monkeypatch):
    from jtrain import plots

    seen = {}
    save = plots._save

    def keep(fig, path, tight=True):
        ax = fig.axes[0]
        seen["labels"] = [t.get_text() for t in ax.get_yticklabels()]
        seen["texts"] = [t.get_text().strip() for t in ax.texts]
        seen["title"] = ax.get_title()
        return save(fig, path, tight)

    monkeypatch.setattr(plots, "_save", keep)
    time = {"compile_s": 2.0, "data_s": 0.5, "eval_s": 1.0, "checkpoint_s": 0.5, "step_s": 6.0, "total_s": 10.0,
            "goodput": 0.6}
    path = plots.plot_time_breakdown(time, str(tmp_path / "time.png"))
    assert os.path.getsize(path) > 5000
    assert seen["labels"] == ["checkpoint", "evaluation", "data wait", "compile", "steps"]
    assert seen["texts"] == ["0.5 s (5%)", "1.0 s (10%)", "0.5 s (5%)", "2.0 s (20%)", "6.0 s (60%)"]
    assert "10.0 s" in seen["title"] and "goodput 60%" in seen["title"]
