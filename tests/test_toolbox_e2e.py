"""The toolbox through the real loop (`jtrain.train` in-process): a quick smoke run with most features on at
once, and the experiments to their targets (slow: diabetes R^2 >= 0.40, breast cancer ROC-AUC >= 0.97, the
digits MLP with L2 + dropout stopped early at its best step)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

import jtrain
from jtrain import workdir as workdir_lib
from jtrain.data import registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tabular_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("toolbox_tfds"))
    for name in ("diabetes", "breast_cancer"):
        registry.prepare(name, path)
    return path


def _experiment(name: str, data_dir: str, *overrides: str):
    config = jtrain.load_experiment(os.path.join(REPO_ROOT, "experiments", name))
    config.data.dir = data_dir
    config.train.progress = False
    jtrain.apply_overrides(config, list(overrides))
    return config


def _records(workdir) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_toolbox_features_together_through_the_loop(digits_data_dir, tmp_path):
    config = _experiment("digits_mlp_l2.py", digits_data_dir, "train.epochs=0", "train.steps=12",
                         "train.log_every_steps=6", "eval.every_steps=0", "train.early_stopping_patience=0",
                         "eval.best_metric=", "eval.top_k=3", "optim.accumulate_steps=2", "optim.grad_clip_value=1.0",
                         "optim.policy=('Dense_0/.*=frozen', 'Dense_2/.*=lr:2')", "schedule.name=step",
                         "schedule.unit=epochs", "schedule.step_size=1", "schedule.gamma=0.5", "loss.l1=1e-5")
    summary = jtrain.train(config, str(tmp_path))
    run, state, step = workdir_lib.restore(str(tmp_path), config)
    assert step == 12
    initial = run.init()  # the same seed: the state training started from
    # The frozen layer is bitwise its initialisation; the layers after it trained.
    for key in ("kernel", "bias"):
        np.testing.assert_array_equal(state.params["Dense_0"][key], initial.params["Dense_0"][key])
    for layer in ("Dense_1", "Dense_2"):
        assert not np.array_equal(state.params[layer]["kernel"], initial.params[layer]["kernel"]), layer

    # Accuracy and top-3 accuracy recomputed from the final parameters over every test example.
    forward = jax.jit(lambda params, x: run.model.apply({"params": params, **state.model_state}, x, train=False))
    hits1 = hits3 = count = 0
    for batch in run.data.eval_batches("test", config.data):
        logits, real, y = np.asarray(forward(state.params, batch["inputs"])), batch["mask"].astype(bool), batch["targets"]
        hits1 += int(((logits.argmax(-1) == y) & real).sum())
        hits3 += int(((np.argsort(-logits, -1)[:, :3] == y[:, None]).any(-1) & real).sum())
        count += int(real.sum())
    assert count == summary["test"]["num_examples"] == 270
    assert summary["test"]["accuracy"] == pytest.approx(hits1 / count, abs=1e-9)
    assert summary["test"]["top_k_accuracy"] == pytest.approx(hits3 / count, abs=1e-9)
    assert hits3 > hits1  # the top-3 hits include some the top-1 misses: k was applied
    train = [r for r in _records(tmp_path) if r["split"] == "train"]
    assert [r["step"] for r in train] == [6, 12]
    assert all(r["penalty"] > 0 for r in train)  # L1 + L2 terms, logged apart from the data loss
    # 1258 examples / batch 32: epoch 0 is steps 0-39, so the step decay has not fired yet at step 12.
    assert train[-1]["learning_rate"] == pytest.approx(1e-3)


@pytest.mark.slow
def test_diabetes_regression_reaches_r2_040(tabular_dir, tmp_path):
    summary = jtrain.train(_experiment("diabetes_regression.py", tabular_dir), str(tmp_path))
    test = summary["test"]
    assert test["r2"] >= 0.40, test
    assert test["num_examples"] == 66
    assert 1000 < test["mse"] < 6000 and 20 < test["mae"] < 70  # in the target's units (its std is about 77)
    assert "accuracy" not in test


@pytest.mark.slow
def test_breast_cancer_binary_reaches_auc_097(tabular_dir, tmp_path):
    summary = jtrain.train(_experiment("breast_cancer_binary.py", tabular_dir), str(tmp_path))
    test = summary["test"]
    assert test["roc_auc"] >= 0.97, {k: v for k, v in test.items() if k != "roc_curve"}
    assert test["accuracy"] >= 0.9 and test["f1"] >= 0.9
    assert len(test["roc_curve"]["fpr"]) == len(test["roc_curve"]["tpr"]) >= 3
    for role in ("val", "test"):
        assert os.path.isfile(tmp_path / "plots" / f"roc_curve_{role}.png")
        assert os.path.isfile(tmp_path / "plots" / f"confusion_matrix_{role}.png")
    on_disk = json.load(open(tmp_path / "summary.json"))
    assert on_disk["test"]["roc_auc"] == test["roc_auc"]


@pytest.mark.slow
def test_digits_mlp_l2_dropout_stops_early_at_its_best_step(digits_data_dir, tmp_path):
    config = _experiment("digits_mlp_l2.py", digits_data_dir)
    summary = jtrain.train(config, str(tmp_path))
    best = summary["best"]
    assert best["stopped_early"] and best["metric"] == "accuracy"
    assert summary["step"] < 0.5 * 200 * 1258 / 32  # far short of the 200 epochs asked for
    assert best["step"] < summary["step"]
    assert summary["test"]["accuracy"] >= 0.95
