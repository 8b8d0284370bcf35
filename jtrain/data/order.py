"""The order training reads examples in, one whole global batch of indices at a time.

The examples form an endless stream: epoch 0, epoch 1, ..., each a permutation of range(N) drawn from
(seed, epoch) (the identity when not shuffling). Global batch b is positions b*G ... (b+1)*G - 1 of that stream,
so a batch may span two epochs and no example is dropped at an epoch's end. Computed with NumPy for the whole
batch: grain's per-index shuffle and batching run Python per example, which costs more than a small model's step.
Used through grain (`grain.MapDataset.source`), whose iterator position is what checkpoints record.
"""

from __future__ import annotations

import sys

import numpy as np


class EpochOrder:
    """An (effectively endless) sequence: item b = the example indices (G,) of global batch b."""

    def __init__(self, num_examples: int, global_batch: int, seed: int, shuffle: bool):
        self.num_examples, self.global_batch = num_examples, global_batch
        self.seed, self.shuffle = seed, shuffle
        self._permutations: dict[int, np.ndarray] = {}  # the few epochs the latest batches touched

    def __len__(self) -> int:
        return sys.maxsize // self.global_batch  # no run gets near it; grain needs a length

    def __getitem__(self, b: int) -> np.ndarray:
        positions = np.arange(b * self.global_batch, (b + 1) * self.global_batch, dtype=np.int64)  # (G,)
        epochs = positions // self.num_examples  # (G,)
        out = np.empty_like(positions)
        for epoch in range(int(epochs[0]), int(epochs[-1]) + 1):
            here = epochs == epoch
            out[here] = self.permutation(epoch)[positions[here] - epoch * self.num_examples]
        return out

    def permutation(self, epoch: int) -> np.ndarray:
        """(N,) the order of epoch `epoch`, a function of (seed, epoch) alone."""
        if epoch not in self._permutations:
            if len(self._permutations) > 2:  # batches move forward: the oldest epoch is done with
                del self._permutations[min(self._permutations)]
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            else:
                order = np.arange(self.num_examples)
            self._permutations[epoch] = order
        return self._permutations[epoch]
