"""Per-example and per-batch transforms: decode to float, augment (training only), normalise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jtrain.data.source import DatasetSpec
from jtrain.errors import ConfigError

AUGMENTATIONS = ("shift", "flip", "noise")


def to_example(record: dict, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """TFDS record -> {'inputs': (H, W, C) float32 in [0, 1], 'targets': () int32}."""
    return {
        "inputs": np.asarray(record[spec.input_key], np.float32) * np.float32(spec.scale),
        "targets": np.asarray(record[spec.target_key], np.int32),
    }


def normalize(batch: dict[str, np.ndarray], spec: DatasetSpec) -> dict[str, np.ndarray]:
    return {**batch, "inputs": (batch["inputs"] - np.float32(spec.mean)) / np.float32(spec.std)}


def parse_augmentations(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for n in names:
        if n not in AUGMENTATIONS:
            raise ConfigError(f"config key 'data.augment': unknown augmentation {n!r}; known: {', '.join(AUGMENTATIONS)}")
    return names


def augment(example: dict[str, np.ndarray], names: tuple[str, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`augment_batch` on one (H, W, C) image."""
    return {**example, "inputs": augment_batch({"inputs": example["inputs"][None]}, names, rng)["inputs"][0]}


def augment_batch(batch: dict[str, np.ndarray], names: tuple[str, ...],
                  rng: np.random.Generator | Sequence[np.random.Generator],
                  process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
    """Random image augmentations, each example with its own draws. `rng` is one generator, or one for each of
    len(rng) equal consecutive groups of rows (the training batches of a stack, so that a batch's draws do not
    depend on how many batches travel together). With several processes each group is this process's slice of
    a global batch: the draws are made for the whole global batch and sliced the same way, so every example is
    augmented alike whatever the number of processes. Whole-batch NumPy: a Python loop per image would cost more
    than the step."""
    images = batch["inputs"]  # (B, H, W, C) in [0, 1]
    b, h, w = images.shape[:3]
    rngs = [rng] if isinstance(rng, np.random.Generator) else list(rng)
    per_rng = b // len(rngs)
    assert per_rng * len(rngs) == b, f"{b} rows do not split into {len(rngs)} equal groups"

    own = slice(process_index * per_rng, (process_index + 1) * per_rng)

    def draw(sample):  # sample(generator, rows) -> (rows, ...): this process's rows of each group -> (B, ...)
        return np.concatenate([sample(g, per_rng * process_count)[own] for g in rngs])

    for name in names:
        if name == "shift":
            # Translate by up to 1/8 of the size: pad with zeros (background) and crop back at a random offset.
            pad = max(1, h // 8)
            padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # (B, H + 2p, W + 2p, C)
            dy, dx = draw(lambda g, n: g.integers(0, 2 * pad + 1, size=(2, n)).T).T  # (B,) each
            rows = dy[:, None, None] + np.arange(h)[None, :, None]  # (B, H, 1)
            cols = dx[:, None, None] + np.arange(w)[None, None, :]  # (B, 1, W)
            images = padded[np.arange(b)[:, None, None], rows, cols]  # (B, H, W, C)
        elif name == "flip":
            flip = draw(lambda g, n: g.random(n)) < 0.5  # (B,)
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        elif name == "noise":
            noise = draw(lambda g, n: g.normal(0.0, 0.05, (n, *images.shape[1:])))  # (B, H, W, C)
            images = np.clip(images + noise.astype(np.float32), 0.0, 1.0)
    return {**batch, "inputs": np.ascontiguousarray(images, np.float32)}
