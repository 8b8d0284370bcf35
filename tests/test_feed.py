"""Batches copied to the device T at a time (jtrain/feed.py): each call gets the same batches, in the same order,
as one copy per batch would give it; a run trains the same whatever T; a run saved in the middle of a chunk
resumes on exactly the next batch; a resume with another T is refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jtrain
from jtrain import feed
from jtrain.checkpoint import load_arrays
from jtrain.config import default_config, validate
from jtrain import data as data_lib
from jtrain.errors import ConfigError, UserError


def _data(data_dir: str):
    c = default_config().data
    c.dir, c.batch_size, c.prefetch = data_dir, 8, 0
    return data_lib.load(c), c


def _feed(data, c, per_transfer: int, per_call: int, take_in_call: bool = False) -> feed.DeviceFeed:
    it = iter(data.train_dataset(c, seed=3, stack=per_transfer))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return feed.DeviceFeed(it, lambda chunk: jax.tree.map(jax.device_put, chunk), per_transfer, per_call, device,
                           device, device, take_in_call=take_in_call)


# Each way a call gets its batches: one step taken by the call before, one step taking its own, two steps scanned.
CALL_KINDS = pytest.mark.parametrize("per_call, take_in_call", [(1, False), (1, True), (2, False)])


def _echo_calls(scan: bool):
    """A stand-in for Run.train_call whose metrics are the batches each call was given: (n, B, ...) per key."""
    def train_call(n: int):
        if not scan:  # (arrays, batch)
            return jax.jit(lambda arrays, batch: (arrays, jax.tree.map(lambda a: a[None], batch)))
        return jax.jit(lambda arrays, chunk, index: (arrays, jax.tree.map(
            lambda a: jax.lax.dynamic_slice_in_dim(a, index, n), chunk)))
    return train_call


def _calls(f: feed.DeviceFeed, count: int, n: int) -> list[dict]:
    """The batches of `count` calls of `n` steps each, as the loop's calls get them: (n, B, ...) per key."""
    call = f.calls(_echo_calls(scan=f.per_call > 1))
    return [{k: np.asarray(v) for k, v in call([], n)[1].items()} for _ in range(count)]


@CALL_KINDS
def test_calls_get_consecutive_batches_across_chunks(digits_data_dir, per_call, take_in_call):
    data, c = _data(digits_data_dir)
    singles = iter(data.train_dataset(c, seed=3))
    expected = [next(singles) for _ in range(14)]
    # 14 batches in chunks of 4: 4, 4, 4 and half of the fourth
    got = _calls(_feed(data, c, 4, per_call, take_in_call), count=14 // per_call, n=per_call)
    for j, call in enumerate(got):
        for i in range(per_call):
            for key in ("inputs", "targets"):
                np.testing.assert_array_equal(call[key][i], expected[per_call * j + i][key])


@CALL_KINDS
@pytest.mark.parametrize("calls_before", [1, 2, 3, 4])  # k=2: mid-chunk, at a boundary, mid-chunk, at a boundary;
# k=1: 4 calls end the first chunk, after which (taken by the call before) the next one is already fetched
def test_position_saved_inside_a_chunk_resumes_on_the_next_batch(digits_data_dir, calls_before, per_call,
                                                                   take_in_call):
    data, c = _data(digits_data_dir)
    original = _feed(data, c, 4, per_call, take_in_call)
    _calls(original, calls_before, n=per_call)
    saved = original.get_state()
    after = _calls(original, 3, n=per_call)
    resumed = _feed(data, c, 4, per_call, take_in_call)
    resumed.set_state(saved)
    for a, b in zip(after, _calls(resumed, 3, n=per_call)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_a_call_straddling_two_chunks_after_a_resume_skips_nothing(digits_data_dir):
    # A run whose last call was partial (5 steps in calls of 2: 2, 2, 1) leaves an odd position; calls of 2
    # from there reach the end of a chunk with one batch left, and join it with the next chunk's first.
    data, c = _data(digits_data_dir)
    singles = iter(data.train_dataset(c, seed=3))
    expected = [next(singles) for _ in range(13)]
    first = _feed(data, c, 4, per_call=2)
    _calls(first, 2, n=2)
    _calls(first, 1, n=1)
    resumed = _feed(data, c, 4, per_call=2)
    resumed.set_state(first.get_state())
    got = _calls(resumed, 4, n=2)  # batches 5-6, 7-8 (straddles chunks 1 and 2), 9-10, 11-12
    for j, call in enumerate(got):
        assert call["inputs"].shape[0] == 2
        for i in range(2):
            np.testing.assert_array_equal(call["targets"][i], expected[5 + 2 * j + i]["targets"])
            np.testing.assert_array_equal(call["inputs"][i], expected[5 + 2 * j + i]["inputs"])


def _config(data_dir: str, steps: int, per_transfer: int):
    c = default_config()
    c.data.dir = data_dir
    c.data.batch_size = 16
    c.data.transfer_batches = per_transfer
    c.model.name = "mlp"
    c.model.hidden_sizes = (32,)
    c.schedule.name = "constant"  # with a warm-up: the step number matters, but not the run's length
    c.schedule.warmup_steps = 6
    c.train.steps = steps
    c.train.log_every_steps = 4
    c.train.progress = False
    c.eval.every_steps = 0
    c.checkpoint.every_steps = 0
    return c


def _params(workdir, step: int) -> dict:
    arrays = load_arrays(str(workdir / "checkpoints" / str(step) / "state"))
    return {k: v for k, v in arrays.items() if k.startswith("params/")}


def _assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)


def test_one_batch_per_transfer_and_auto_train_alike(digits_data_dir, tmp_path):
    # digits MLP at batch 16 (4 KB a batch): auto copies 256 batches at a time, so 20 steps never finish a chunk.
    assert feed.batches_per_transfer(0, 1, 16 * 8 * 8 * 4) == 256
    one = jtrain.train(_config(digits_data_dir, 20, 1), str(tmp_path / "one"))
    auto = jtrain.train(_config(digits_data_dir, 20, 0), str(tmp_path / "auto"))
    assert one["test"]["accuracy"] == auto["test"]["accuracy"]
    _assert_same_params(_params(tmp_path / "one", 20), _params(tmp_path / "auto", 20))


@pytest.mark.parametrize("take_in_call", [True, False])
def test_resume_from_the_middle_of_a_chunk_equals_an_uninterrupted_run(digits_data_dir, tmp_path, monkeypatch,
                                                                        take_in_call):
    # 4 KB batches: each call takes its own batch, unless the size limit says the call before takes it.
    monkeypatch.setattr(feed, "TAKE_IN_CALL_MAX_BYTES", feed.TAKE_IN_CALL_MAX_BYTES if take_in_call else 0)
    whole = tmp_path / "whole"
    jtrain.train(_config(digits_data_dir, 20, 8), str(whole))
    split = tmp_path / "split"
    jtrain.train(_config(digits_data_dir, 12, 8), str(split))  # its last checkpoint is 4 batches into chunk 2
    summary = jtrain.train(_config(digits_data_dir, 20, 8), str(split))
    assert summary["step"] == 20
    _assert_same_params(_params(whole, 20), _params(split, 20))


def test_resuming_with_another_transfer_size_equals_an_uninterrupted_run(digits_data_dir, tmp_path):
    # data.transfer_batches is a speed setting: the position is counted in batches, whatever the stack size.
    whole = tmp_path / "whole"
    jtrain.train(_config(digits_data_dir, 20, 4), str(whole))
    split = tmp_path / "split"
    jtrain.train(_config(digits_data_dir, 6, 4), str(split))  # its checkpoint is 2 batches into chunk 2
    summary = jtrain.train(_config(digits_data_dir, 20, 8), str(split))  # resumed with stacks of 8
    assert summary["step"] == 20
    _assert_same_params(_params(whole, 20), _params(split, 20))


def test_auto_transfer_size():
    small, medium, huge = 4 << 10, 400 << 10, 100 << 20  # bytes of one batch
    assert feed.batches_per_transfer(0, 1, small) == 256  # 1 MB: small batches travel in larger stacks
    assert feed.batches_per_transfer(0, 1, 1 << 8) == 1024  # at most 1024 batches
    assert feed.batches_per_transfer(0, 1, medium) == 32  # 32 batches when they pass 1 MB
    assert feed.batches_per_transfer(0, 3, medium) == 30  # whole calls of 3 steps
    assert feed.batches_per_transfer(0, 40, medium) == 40  # at least one call
    assert feed.batches_per_transfer(0, 3, small) == 255
    assert feed.batches_per_transfer(0, 1, huge) == 1  # over 64 MB: one batch at a time
    assert feed.batches_per_transfer(0, 1, 8 << 20) == 8
    assert feed.batches_per_transfer(6, 3, small) == 6  # as configured


def test_transfer_size_must_be_whole_calls():
    c = default_config()
    c.train.steps_per_call, c.train.log_every_steps, c.eval.every_steps, c.checkpoint.every_steps = 4, 8, 8, 8
    c.data.transfer_batches = 6
    with pytest.raises(ConfigError, match=r"data\.transfer_batches.*multiple of train\.steps_per_call=4"):
        validate(c)
    c.data.transfer_batches = -1
    with pytest.raises(ConfigError, match=r"data\.transfer_batches"):
        validate(c)


def test_images_finished_on_the_device_match_the_host_pipeline(digits_data_dir):
    # Without augmentation, uint8 images leave the host as stored and are scaled and standardised on the device.
    data, c = _data(digits_data_dir)
    finish = data.device_finish(c)
    assert finish is not None
    host = next(iter(data.train_dataset(c, seed=3)))
    raw = next(iter(data.train_dataset(c, seed=3, raw=True)))
    assert raw["inputs"].dtype == np.uint8 and raw["inputs"].shape == host["inputs"].shape
    finished = jax.jit(finish)(jax.tree.map(jax.device_put, raw))
    assert finished["inputs"].dtype == np.float32
    # The same float32 arithmetic, up to XLA's rounding of the division (one unit in the last place).
    np.testing.assert_allclose(np.asarray(finished["inputs"]), host["inputs"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(finished["targets"]), host["targets"])
    # Augmented training images stay on the host path: the augmentations work on floats.
    c.augment = "shift"
    assert data.device_finish(c) is None


def test_augmented_batches_do_not_depend_on_the_transfer_size(digits_data_dir):
    # Each batch draws its shifts, flips and noise from its own generator, so stacking changes nothing.
    data, c = _data(digits_data_dir)
    c.augment = "shift,flip,noise"
    singles = iter(data.train_dataset(c, seed=3))
    expected = [next(singles) for _ in range(8)]
    stacks = iter(data.train_dataset(c, seed=3, stack=4))
    got = [{k: v[i] for k, v in stack.items()} for stack in (next(stacks), next(stacks)) for i in range(4)]
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have["inputs"], want["inputs"])
        np.testing.assert_array_equal(have["targets"], want["targets"])
    assert not np.array_equal(expected[0]["inputs"], expected[1]["inputs"])
    # Without shuffling the seed changes only the draws: the same examples, augmented otherwise.
    c.shuffle = False
    a, b = (next(iter(data.train_dataset(c, seed=s))) for s in (3, 4))
    np.testing.assert_array_equal(a["targets"], b["targets"])
    assert not np.array_equal(a["inputs"], b["inputs"])


class _CountingIterator:
    """A user's iterator whose state is its own (not grain's `next_index`): chunks (T, B) of batch numbers."""

    def __init__(self, per_transfer: int):
        self.per_transfer, self.element = per_transfer, 0

    def __next__(self):
        first = self.element * self.per_transfer
        self.element += 1
        return {"inputs": np.arange(first, first + self.per_transfer, dtype=np.float32)[:, None]}

    def get_state(self):
        return {"element": self.element}

    def set_state(self, state):
        self.element = state["element"]


def _counting_feed(per_transfer: int) -> feed.DeviceFeed:
    import jax
    from jax.sharding import SingleDeviceSharding

    sharding = SingleDeviceSharding(jax.devices()[0])
    return feed.DeviceFeed(_CountingIterator(per_transfer), lambda chunk: jax.device_put(chunk, sharding),
                           per_transfer, 2, sharding, sharding, sharding)


def test_an_iterator_of_its_own_resumes_mid_chunk_and_refuses_another_stack_size():
    first = _counting_feed(4)
    first.next(2)
    first.next(2)
    first.next(2)  # 6 batches: 2 into the second chunk
    saved = first.get_state()
    again = _counting_feed(4)
    again.set_state(saved)
    chunk, index = again.next(2)
    np.testing.assert_array_equal(np.asarray(chunk["inputs"])[int(index):int(index) + 2, 0], [6, 7])
    with pytest.raises(UserError, match=r"data\.transfer_batches=4"):
        _counting_feed(8).set_state(saved)
