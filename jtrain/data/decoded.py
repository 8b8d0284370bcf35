"""A split decoded once into NumPy arrays, so a batch is an array gather instead of per-record decoding.

Reading a batch from a TFDS `array_record` source parses every record in Python (3k-12k examples/s on one
core), slower than a small model trains. Splits that fit in `data.in_memory_mb` are therefore decoded once and
kept as two arrays (inputs as stored, e.g. uint8 pixels, and targets). The decoded arrays are also cached as
`.npy` files in the dataset's own directory (named by its input files' content, jtrain/data/registry.py), keyed
by the split spec, so later runs memory-map them instead of decoding again. The `array_record` files stay the storage format and the source of truth: the cache is
rebuilt whenever it is missing or its example count disagrees with the source.
"""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

DECODE_CHUNK = 4096  # records parsed per call while decoding a split


class DecodedSplit:
    """Random access like a TFDS data source (`len`, `[i]`, `__getitems__`), plus `gather` for whole batches."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, input_key: str, target_key: str):
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs  # (N, *input_shape) as stored (e.g. uint8 pixels)
        self.targets = targets  # (N,)
        self.input_key, self.target_key = input_key, target_key

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {self.input_key: self.inputs[index], self.target_key: self.targets[index]}

    def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
        return [self[int(i)] for i in indices]

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (n, ...), targets (n,)) of the examples at `indices`, copied out of the arrays."""
        indices = np.asarray(indices, np.int64)
        return self.inputs[indices], self.targets[indices]


def estimated_mb(source, input_key: str) -> float:
    """Size of the split's inputs as stored, from its first record (every record of a split has one shape)."""
    if len(source) == 0:
        return 0.0
    first = np.asarray(source[0][input_key])
    return len(source) * first.nbytes / 2**20


def decode(source, input_key: str, target_key: str) -> DecodedSplit:
    """Parses every record of `source` once."""
    inputs, targets = [], []
    for start in range(0, len(source), DECODE_CHUNK):
        records = source.__getitems__(list(range(start, min(start + DECODE_CHUNK, len(source)))))
        inputs.append(np.stack([np.asarray(r[input_key]) for r in records]))
        targets.append(np.asarray([r[target_key] for r in records]))
    return DecodedSplit(np.concatenate(inputs), np.concatenate(targets), input_key, target_key)


def _same_ends(source, inputs, targets, input_key: str, target_key: str) -> bool:
    """The cache's first and last examples equal the source's: a cheap guard against a stale cache."""
    for i in (0, len(source) - 1):
        record = source[i]
        if not (np.array_equal(record[input_key], inputs[i]) and np.array_equal(record[target_key], targets[i])):
            return False
    return True


def cache_paths(dataset_dir: str, split: str) -> tuple[str, str]:
    """Two .npy files per split spec: a readable stem plus a hash, since specs like `train[:90%]` collide
    once reduced to file-name characters."""
    digest = hashlib.sha1(split.encode()).hexdigest()[:10]
    stem = os.path.join(dataset_dir, "decoded", f"{re.sub(r'[^A-Za-z0-9]+', '_', split).strip('_')}-{digest}")
    return f"{stem}.inputs.npy", f"{stem}.targets.npy"


def load(source, split: str, dataset_dir: str, input_key: str, target_key: str) -> DecodedSplit:
    """The cached arrays when they match the source, else decodes and (best effort) writes the cache."""
    inputs_path, targets_path = cache_paths(dataset_dir, split)
    try:
        inputs, targets = np.load(inputs_path, mmap_mode="r"), np.load(targets_path, mmap_mode="r")
        if len(inputs) == len(targets) == len(source) and _same_ends(source, inputs, targets, input_key, target_key):
            # A memory map reads pages on demand; a gather from it is as fast as from RAM once they are in.
            return DecodedSplit(inputs, targets, input_key, target_key)
    except (OSError, ValueError):
        pass  # no cache yet, or a torn one: decode again
    split_data = decode(source, input_key, target_key)
    try:
        os.makedirs(os.path.dirname(inputs_path), exist_ok=True)
        for path, array in ((inputs_path, split_data.inputs), (targets_path, split_data.targets)):
            # Write then rename: a reader (another process of the same run) never sees half a file.
            partial = f"{path}.{os.getpid()}.partial"
            with open(partial, "wb") as f:
                np.save(f, array)
            os.replace(partial, path)
    except OSError:
        pass  # a read-only dataset directory: keep the decoded arrays for this run only
    return split_data
