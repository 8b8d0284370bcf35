"""grain pipelines over TFDS data sources: a shuffled, repeating training iterator whose position is
checkpointable, and exact evaluation batches (the last one padded, with a mask) that count every example once.

Batches are dicts of NumPy arrays: `inputs` (B, H, W, C) float32, `targets` (B,) int32, and for eval `mask` (B,)
bool. B is the per-process batch: the global batch divided by the number of processes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import grain
import ml_collections
import numpy as np

from jtrain.data import registry, transforms
from jtrain.errors import ConfigError


@dataclasses.dataclass
class Data:
    spec: registry.DatasetSpec
    sources: dict[str, object]  # role (train / val / test) -> random-access TFDS data source
    splits: dict[str, str]  # role -> TFDS split spec actually used

    @property
    def num_train(self) -> int:
        return len(self.sources["train"])

    def num_examples(self, role: str) -> int:
        return len(self.sources[role])


def load(config: ml_collections.ConfigDict) -> Data:
    """Opens the sources of `config.data` (preparing the dataset on first use)."""
    spec = registry.get_spec(config.name)
    splits = {}
    for role in ("train", "val", "test"):
        chosen = config.splits[role] or spec.splits[role]
        if chosen != "none":
            splits[role] = chosen
    if "train" not in splits:
        raise ConfigError("config key 'data.splits.train': a training split is required")
    sources = {role: registry.data_source(spec.name, split, config.dir) for role, split in splits.items()}
    return Data(spec=spec, sources=sources, splits=splits)


def local_batch_size(global_batch: int, process_count: int, key: str) -> int:
    if global_batch % process_count:
        raise ConfigError(f"config key {key!r}: global batch {global_batch} is not divisible by {process_count} processes")
    return global_batch // process_count


def train_dataset(
    data: Data,
    config: ml_collections.ConfigDict,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """An endless iterator of training batches; its `get_state()` is saved in checkpoints."""
    spec = data.spec
    batch = local_batch_size(config.batch_size, process_count, "data.batch_size")
    source = data.sources["train"]
    # The pipeline runs over example indices and reads a whole batch at once: a TFDS data source reads
    # many records several times faster than one at a time.
    ds = grain.MapDataset.range(process_index, len(source), process_count)  # each process: its own shard
    if len(ds) < batch:
        raise ConfigError(f"config key 'data.batch_size': {batch} per process exceeds the {len(ds)} training examples")
    ds = ds.seed(seed)
    if config.shuffle:
        ds = ds.shuffle()  # before repeat: every epoch gets a fresh permutation
    ds = ds.repeat(None)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda indices: read_batch(source, indices, spec))
    augment = transforms.parse_augmentations(config.augment)
    if augment:
        ds = ds.random_map(lambda b, rng: transforms.augment_batch(b, augment, rng))
    if config.normalize:
        ds = ds.map(lambda b: transforms.normalize(b, spec))
    # No read-ahead here (grain's default is 16 threads filling a 500-batch buffer, slow to start and to
    # restore); data.prefetch alone decides how many batches a background thread prepares.
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if config.prefetch > 0:
        it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=config.prefetch)
    return it


def eval_batches(
    data: Data,
    role: str,
    config: ml_collections.ConfigDict,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Every example of the split exactly once, in order, padded to full batches with `mask` False on padding.

    All processes yield the same number of batches (shards differ by at most one example), so collective
    eval steps stay in lockstep.
    """
    spec = data.spec
    source = data.sources[role]
    global_batch = config.eval_batch_size or config.batch_size
    batch = local_batch_size(global_batch, process_count, "data.eval_batch_size")
    shard = np.arange(process_index, len(source), process_count)
    num_batches = math.ceil(math.ceil(len(source) / process_count) / batch)
    for i in range(num_batches):
        indices = shard[i * batch : (i + 1) * batch]
        yield pad_batch(read_batch(source, indices, spec) if len(indices) else None, batch, spec, config.normalize)


def read_batch(source, indices: np.ndarray, spec: registry.DatasetSpec) -> dict[str, np.ndarray]:
    """Records at `indices` -> {'inputs': (n, H, W, C) float32 in [0, 1], 'targets': (n,) int32}."""
    records = source.__getitems__([int(i) for i in indices])
    raw = np.stack([r[spec.input_key] for r in records])  # (n, H, W, C) as stored
    return {
        "inputs": raw.astype(np.float32) * np.float32(spec.scale),
        "targets": np.asarray([r[spec.target_key] for r in records], np.int32),
    }


def pad_batch(batch_: dict[str, np.ndarray] | None, batch: int, spec: registry.DatasetSpec,
              normalize: bool) -> dict[str, np.ndarray]:
    """Pads n <= batch examples to `batch` rows of zeros; `mask` marks the real ones."""
    n = 0 if batch_ is None else len(batch_["targets"])
    inputs = np.zeros((batch, *spec.input_shape), np.float32)  # (B, H, W, C)
    targets = np.zeros((batch,), np.int32)  # (B,)
    mask = np.zeros((batch,), bool)  # (B,) True for real examples
    if n:
        inputs[:n] = batch_["inputs"]
        targets[:n] = batch_["targets"]
        mask[:n] = True
    out = {"inputs": inputs, "targets": targets}
    if normalize:
        out = transforms.normalize(out, spec)
        out["inputs"][n:] = 0.0  # padding stays zeros (normalising maps 0 to -mean/std)
    out["mask"] = mask
    return out


def steps_per_epoch(data: Data, config: ml_collections.ConfigDict) -> float:
    return data.num_train / config.batch_size
