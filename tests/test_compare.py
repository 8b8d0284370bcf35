"""`jtrain compare`: finished runs side by side, each run's difference from the first, one-line errors."""

from __future__ import annotations

import json
import os

import pytest

import jtrain
from jtrain.errors import UserError
from _cli import run_jtrain


def _summary(workdir, step, **test):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump({"step": step, "test": {"num_examples": 100, "confusion_matrix": [[1]], **test}}, f)


def test_differences_from_the_first_run(tmp_path):
    _summary(tmp_path / "scratch", 300, accuracy=0.40, loss=1.05)
    _summary(tmp_path / "finetuned", 300, accuracy=0.62, loss=0.80, f1_macro=0.6)
    result = jtrain.compare([str(tmp_path / "scratch"), str(tmp_path / "finetuned")])
    assert [r["step"] for r in result["runs"]] == [300, 300]
    assert set(result["runs"][0]) == {"workdir", "step", "loss", "accuracy"}  # f1_macro: only one run has it
    assert result["minus_first"][0]["accuracy"] == pytest.approx(0.22)
    assert result["minus_first"][0]["loss"] == pytest.approx(-0.25)


def test_cli_prints_the_table_and_errors_in_one_line(tmp_path, digits_data_dir):
    _summary(tmp_path / "a", 10, accuracy=0.5)
    _summary(tmp_path / "b", 10, accuracy=0.75)
    ok = run_jtrain(["compare", str(tmp_path / "a"), str(tmp_path / "b")], digits_data_dir)
    assert ok.returncode == 0, ok.stderr
    assert "+0.2500" in ok.stdout and "accuracy" in ok.stdout
    missing = run_jtrain(["compare", str(tmp_path / "a"), str(tmp_path / "nope")], digits_data_dir)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "summary.json" in missing.stderr
    with pytest.raises(UserError, match="'val'"):
        jtrain.compare([str(tmp_path / "a"), str(tmp_path / "b")], split="val")
