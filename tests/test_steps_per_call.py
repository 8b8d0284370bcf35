"""Several optimizer steps per dispatch (train.steps_per_call): the stacked batches hold the same examples in the
same order as single batches, the run's result equals the one-step-per-call run, and a resume that would
misalign the data is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jtrain
from jtrain.checkpoint import load_arrays
from jtrain.config import default_config, validate
from jtrain import data as data_lib
from jtrain.errors import ConfigError, UserError


def _config(data_dir: str, steps: int, per_call: int, unroll: int = 1):
    c = default_config()
    c.data.dir = data_dir
    c.data.batch_size = 16
    c.model.name = "mlp"
    c.model.hidden_sizes = (32,)
    c.schedule.name = "cosine"  # the step number matters inside the scan: the learning rate must follow it
    c.schedule.warmup_steps = 2
    c.train.steps = steps
    c.train.log_every_steps = 4
    c.train.progress = False
    c.eval.every_steps = 8
    c.checkpoint.every_steps = 8
    c.train.steps_per_call = per_call
    c.train.scan_unroll = unroll
    return c


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_stacked_batches_are_consecutive_single_batches(digits_data_dir):
    c = default_config().data
    c.dir, c.batch_size, c.prefetch = digits_data_dir, 8, 0
    data = data_lib.load(c)
    singles = _take(iter(data.train_dataset(c, seed=3)), 9)
    stacked = _take(iter(data.train_dataset(c, seed=3, stack=3)), 3)
    for j, group in enumerate(stacked):
        assert group["inputs"].shape == (3, 8, 8, 8, 1) and group["targets"].shape == (3, 8)
        for i in range(3):
            for key in ("inputs", "targets"):
                np.testing.assert_array_equal(group[key][i], singles[3 * j + i][key])
    # Two processes: each gets its own half of every step's global batch.
    halves = [_take(iter(data.train_dataset(c, seed=3, process_index=p, process_count=2,
                                                stack=3)), 1)[0] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h["targets"] for h in halves], axis=1), stacked[0]["targets"])


@pytest.mark.parametrize("unroll", [1, 4])  # the scan's loop, or its 4 steps unrolled
def test_several_steps_per_call_train_like_one(digits_data_dir, tmp_path, unroll):
    # 10 steps in calls of 4: 4 + 4 + a final call of 2.
    one = jtrain.train(_config(digits_data_dir, 10, 1), str(tmp_path / "one"))
    four = jtrain.train(_config(digits_data_dir, 10, 4, unroll), str(tmp_path / "four"))
    assert one["step"] == four["step"] == 10
    assert four["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"], abs=1e-6)
    params = [{k: v for k, v in load_arrays(str(tmp_path / name / "checkpoints" / "10" / "state")).items()
               if k.startswith("params/")} for name in ("one", "four")]
    assert params[0].keys() == params[1].keys() and params[0]
    for path in params[0]:
        np.testing.assert_allclose(params[1][path], params[0][path], rtol=1e-5, atol=1e-6, err_msg=path)
    # Every step's metrics were logged: the windows' mean losses agree.
    def losses(name):
        with open(tmp_path / name / "metrics.jsonl") as f:
            return [(r["step"], r["loss"]) for r in map(json.loads, f) if r["split"] == "train"]
    a, b = losses("one"), losses("four")
    assert [s for s, _ in a] == [s for s, _ in b] == [4, 8, 10]
    np.testing.assert_allclose([l for _, l in a], [l for _, l in b], rtol=1e-5)


def test_resuming_with_other_steps_per_call_is_refused(digits_data_dir, tmp_path):
    jtrain.train(_config(digits_data_dir, 8, 4), str(tmp_path))
    with pytest.raises(UserError, match="train.steps_per_call"):
        jtrain.train(_config(digits_data_dir, 16, 2), str(tmp_path))


@pytest.mark.parametrize("value", [0, -2])
def test_scan_unroll_must_be_at_least_one(value):
    c = default_config()
    c.train.scan_unroll = value
    with pytest.raises(ConfigError, match=r"train\.scan_unroll"):
        validate(c)


@pytest.mark.parametrize("key", ["train.log_every_steps", "eval.every_steps", "checkpoint.every_steps"])
def test_intervals_must_be_whole_calls(key):
    c = default_config()
    c.train.steps_per_call = 4
    c.train.log_every_steps, c.eval.every_steps, c.checkpoint.every_steps = 8, 8, 8
    section, field = key.split(".")
    c[section][field] = 6
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(c)
