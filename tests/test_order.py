"""The training order (jtrain/data/order.py): every epoch is a permutation of the examples, a function of (seed,
epoch) alone; batches run across epoch ends without dropping examples; no shuffle = the stored order."""

from __future__ import annotations

import numpy as np

from jtrain.data.order import EpochOrder


def _stream(order: EpochOrder, batches: int) -> np.ndarray:
    return np.concatenate([order[b] for b in range(batches)])


def test_each_epoch_is_a_permutation_and_batches_span_epochs():
    order = EpochOrder(num_examples=10, global_batch=4, seed=3, shuffle=True)
    stream = _stream(order, 15)  # 60 positions = 6 epochs; batch 2 holds the end of epoch 0 and start of 1
    epochs = stream.reshape(6, 10)
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))
    assert len({tuple(e) for e in epochs}) == 6  # a fresh permutation every epoch
    np.testing.assert_array_equal(order[2], np.concatenate([epochs[0][8:], epochs[1][:2]]))


def test_same_seed_same_order_in_any_access_order():
    a, b = EpochOrder(1000, 64, seed=7, shuffle=True), EpochOrder(1000, 64, seed=7, shuffle=True)
    forward = [a[i] for i in range(40)]
    backward = [b[i] for i in reversed(range(40))][::-1]  # a resumed iterator may start anywhere
    for x, y in zip(forward, backward):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(EpochOrder(1000, 64, seed=8, shuffle=True)[0], forward[0])


def test_without_shuffle_the_stored_order_repeats():
    order = EpochOrder(num_examples=5, global_batch=3, seed=0, shuffle=False)
    np.testing.assert_array_equal(_stream(order, 5), np.tile(np.arange(5), 3))
