"""Per-example and per-batch transforms: decode to float, augment (training only), normalise."""

from __future__ import annotations

import numpy as np

from jtrain.data.registry import DatasetSpec
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
    """Random image augmentations; `rng` comes from grain, so the result is a function of (seed, index)."""
    image = example["inputs"]  # (H, W, C) in [0, 1]
    for name in names:
        if name == "shift":
            # Translate by up to 1/8 of the size: pad with zeros (background) and crop back.
            pad = max(1, image.shape[0] // 8)
            padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
            dy, dx = rng.integers(0, 2 * pad + 1, size=2)
            image = padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
        elif name == "flip":
            if rng.random() < 0.5:
                image = image[:, ::-1]
        elif name == "noise":
            image = np.clip(image + rng.normal(0.0, 0.05, image.shape).astype(np.float32), 0.0, 1.0)
    return {**example, "inputs": np.ascontiguousarray(image, np.float32)}


def augment_batch(batch: dict[str, np.ndarray], names: tuple[str, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`augment` applied to every example of a batch, each with its own draws from `rng`."""
    inputs = np.stack([augment({"inputs": x}, names, rng)["inputs"] for x in batch["inputs"]])
    return {**batch, "inputs": inputs}
