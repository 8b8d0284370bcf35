"""Data parallelism on 8 fake CPU devices gives the same training as one device."""

from __future__ import annotations

import json
import os

import pytest

from _cli import SMOKE_OVERRIDES, assert_same_state, final_state, run_jtrain

EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def _train_losses(workdir: str) -> dict[int, float]:
    records = map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def test_eight_device_data_parallel_matches_one_device(digits_data_dir, tmp_path):
    # The experiment as it is, shift augmentation and dropout included: both must not depend on the device count.
    args = ["train", "--config", "experiments/digits_cnn.py", *SMOKE_OVERRIDES, "--config.data.eval_batch_size=40"]
    one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
    result = run_jtrain([*args, "--workdir", one], digits_data_dir, {"XLA_FLAGS": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_jtrain([*args, "--workdir", eight], digits_data_dir, EIGHT_DEVICES)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'data': 8" in result.stderr  # the mesh filled all eight devices

    # Same data, augmentation, dropout masks and init: only the order of floating-point sums differs across
    # devices (the gradient's all-reduce). After 30 AdamW steps the largest difference of any leaf is 9e-8
    # (measured); 1e-6 leaves a 10x margin and stays far below one step's update (lr 2e-3), so a batch, an
    # augmentation or a dropout mask that differed on some device would show.
    assert_same_state(final_state(one), final_state(eight), rtol=1e-5, atol=1e-6)
    a, b = _train_losses(one), _train_losses(eight)
    assert a.keys() == b.keys()
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), step
    s1 = json.load(open(os.path.join(one, "summary.json")))
    s8 = json.load(open(os.path.join(eight, "summary.json")))
    assert s8["test"]["num_examples"] == s1["test"]["num_examples"] == 270
    assert s8["test"]["loss"] == pytest.approx(s1["test"]["loss"], rel=1e-4)


def test_batch_not_divisible_by_data_parallel_size_is_a_one_line_error(digits_data_dir, tmp_path):
    result = run_jtrain(["train", "--config", "experiments/digits_cnn.py", "--config.data.batch_size=12",
                         "--workdir", str(tmp_path)], digits_data_dir, EIGHT_DEVICES)
    assert result.returncode == 2
    assert "'data.batch_size': global batch 12 is not divisible by the data-parallel size 8" in result.stderr
