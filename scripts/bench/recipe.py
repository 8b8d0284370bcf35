"""The default experiment's recipe (experiments/digits_cnn.py) for the peers of time_to_accuracy.py.

jtrain trains `ceil(30 epochs * N / 32)` steps of batch 32 drawn from a stream of per-epoch permutations, each
image shifted by up to one pixel (zero background, `data.augment="shift"`), AdamW 2e-3 with weight decay 1e-4,
cosine schedule with 50 warm-up steps. `stream()` builds the same kind of stream up front, so a peer runs
exactly as many steps, on equally augmented batches, with the same schedule length.
"""

from __future__ import annotations

import math

import numpy as np

EPOCHS = 30.0  # config.train.epochs of experiments/digits_cnn.py
BATCH = 32  # config.data.batch_size


def steps(num_train: int, epochs: float = EPOCHS) -> int:
    return max(1, math.ceil(epochs * num_train / BATCH))  # jtrain/components.py total_steps


def stream(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: float = EPOCHS) -> tuple[np.ndarray, np.ndarray]:
    """(steps * BATCH, H, W, C) shifted images and their labels, in training order."""
    rng = np.random.default_rng(seed)
    total = steps(len(x), epochs) * BATCH
    order = np.concatenate([rng.permutation(len(x)) for _ in range(math.ceil(total / len(x)))])[:total]
    images, labels = x[order], y[order]
    # The data is standardised already: raw 0 (the background jtrain pads with) is the smallest value.
    background = x.min()
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=background)  # (n, H+2, W+2, C)
    dy, dx = rng.integers(0, 3, size=(2, total))
    h, w = x.shape[1:3]
    out = np.empty_like(images)
    for oy in range(3):
        for ox in range(3):
            pick = (dy == oy) & (dx == ox)
            out[pick] = padded[pick, oy:oy + h, ox:ox + w]
    return out, labels
