"""grain pipelines over TFDS data sources: a shuffled, repeating training iterator whose position is
checkpointable, and exact evaluation batches (the last one padded, with a mask) that count every example once.

Batches are dicts of NumPy arrays: `inputs` (B, H, W, C) float32 (or (B, D) tabular features), `targets` (B,)
int32 labels (or float32 regression targets), and for eval `mask` (B,) bool. Training images without
augmentation may instead leave as stored (uint8), finished on the device (`device_finish`). B is the per-process batch: the
global batch divided by the number of processes.

Standardisation (`Stats`): images use the dataset's constants; tabular features, and regression targets when
`data.normalize_targets`, use the training split's per-feature mean and std, computed when the data is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np

from jtrain.data import decoded, order, registry, transforms
from jtrain.errors import ConfigError

AUGMENT_STREAM = 0x617567  # keeps the augmentation generators apart from the epoch orders' ([seed, epoch])


@dataclasses.dataclass(frozen=True)
class Stats:
    """Standardisation constants. `mean` / `std` are named as in DatasetSpec, so transforms.normalize takes either."""

    mean: float | np.ndarray  # inputs: a scalar (images) or (D,) per feature
    std: float | np.ndarray
    target_mean: np.ndarray | None = None  # () regression target; None = targets left as they are
    target_std: np.ndarray | None = None


@dataclasses.dataclass
class Data:
    spec: registry.DatasetSpec
    sources: dict[str, object]  # role (train / val / test) -> random-access TFDS data source
    splits: dict[str, str]  # role -> TFDS split spec actually used
    stats: Stats | None = None  # None = the spec's constants, targets untouched

    def __post_init__(self):
        if self.stats is None:
            self.stats = Stats(self.spec.mean, self.spec.std)

    @property
    def num_train(self) -> int:
        return len(self.sources["train"])

    @property
    def target_std(self) -> np.ndarray | None:
        """The regression targets' scale in the pipeline (None = unscaled): reports multiply errors back by it."""
        return self.stats.target_std

    def num_examples(self, role: str) -> int:
        return len(self.sources[role])


def resolve_splits(config: ml_collections.ConfigDict, spec: registry.DatasetSpec) -> dict[str, str]:
    """role (train / val / test) -> TFDS split spec: the config's, else the dataset's default; "none" drops it."""
    splits = {}
    for role in ("train", "val", "test"):
        chosen = config.splits[role] or spec.splits[role]
        if chosen != "none":
            splits[role] = chosen
    if "train" not in splits:
        raise ConfigError("config key 'data.splits.train': a training split is required")
    return splits


def load(config: ml_collections.ConfigDict) -> Data:
    """Opens the sources of `config.data` (preparing the dataset on first use)."""
    spec = registry.get_spec(config.name)
    if spec.examples or config.jsonl.train or config.jsonl.val or config.jsonl.test:
        from jtrain.data import sft  # post-training examples: SFT rows or preference pairs (jtrain/data/sft.py)

        return sft.load(config, spec)
    if spec.is_text:  # token streams packed into rows: their own reader (jtrain/data/text.py)
        from jtrain.data import text

        return text.load(config, spec)
    splits = resolve_splits(config, spec)
    sources = {role: open_split(spec, split, config) for role, split in splits.items()}
    return Data(spec=spec, sources=sources, splits=splits, stats=training_stats(spec, sources["train"], config))


def open_split(spec: registry.DatasetSpec, split: str, config: ml_collections.ConfigDict):
    """The split's TFDS source, or its decoded arrays when they fit in data.in_memory_mb (jtrain/data/decoded.py)."""
    source = registry.data_source(spec.name, split, config.dir)
    if config.in_memory_mb <= 0 or decoded.estimated_mb(source, spec.input_key) > config.in_memory_mb:
        return source
    dataset_dir = registry.builder(spec.name, config.dir).data_dir
    return decoded.load(source, split, dataset_dir, spec.input_key, spec.target_key)


def training_stats(spec: registry.DatasetSpec, train_source, config: ml_collections.ConfigDict) -> Stats:
    """The spec's constants where it has them; otherwise per-feature statistics of the training split."""
    regression = spec.target_dtype == "float32" and config.normalize_targets
    if spec.mean is not None and not regression:
        return Stats(spec.mean, spec.std)
    everything = read_batch(train_source, np.arange(len(train_source)), spec)  # tabular data: small
    mean, std = spec.mean, spec.std
    if mean is None:
        mean, std = _mean_std(everything["inputs"])  # (D,) each
    if not regression:
        return Stats(mean, std)
    return Stats(mean, std, *_mean_std(everything["targets"]))


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    std = x.std(0)
    # A constant column would divide by zero; leaving it unscaled is what standardisation means there.
    return x.mean(0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


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
    stack: int = 1,
    raw: bool = False,
) -> grain.IterDataset:
    """An endless iterator of training batches; its `get_state()` is saved in checkpoints.

    `stack` > 1 yields the next k batches at once, stacked (k, B, ...), for one copy to the device
    (jtrain/feed.py): the same examples in the same order as k single batches. `raw` leaves image inputs as
    stored, for `device_finish` to scale and standardise on the device."""
    spec = data.spec
    if spec.is_text:
        from jtrain.data import text

        return text.train_dataset(data, config, seed, process_index, process_count, stack)
    batch = local_batch_size(config.batch_size, process_count, "data.batch_size")
    source = data.sources["train"]
    # The pipeline runs over example indices and reads a whole batch at once: a TFDS data source reads
    # many records several times faster than one at a time. Every process draws the same global order of
    # indices and reads only its own rows of each global batch, so the global batches - and the training -
    # are the same whatever the number of processes.
    if len(source) < config.batch_size:
        raise ConfigError(f"config key 'data.batch_size': {config.batch_size} exceeds the {len(source)} training examples")
    # (k * global_batch,) indices per element; every epoch a fresh permutation when shuffling (jtrain/data/order.py)
    ds = grain.MapDataset.source(order.EpochOrder(len(source), config.batch_size * stack, seed,
                                                  config.shuffle))
    ds = ds.map(lambda indices: read_batch(source, own_rows(indices, config.batch_size, process_index, batch), spec,
                                           raw))
    if raw:
        return to_iterator(ds, config, stack)
    augment = transforms.parse_augmentations(config.augment)
    if augment and not spec.is_image:
        raise ConfigError(f"config key 'data.augment': {config.augment!r} augments images; {spec.name} is not images")
    if augment:
        # Element e holds global batches e*k ... e*k + k - 1; each batch draws from its own generator, a function
        # of (seed, batch number), so data.transfer_batches (a speed setting) leaves the augmented examples alone.
        ds = ds.map_with_index(lambda e, b: transforms.augment_batch(b, augment, [
            np.random.default_rng([seed, AUGMENT_STREAM, e * stack + j]) for j in range(stack)]))
    if config.normalize or data.stats.target_mean is not None:
        ds = ds.map(lambda b: standardize(b, data.stats, config.normalize))
    return to_iterator(ds, config, stack)


def to_iterator(ds: grain.MapDataset, config: ml_collections.ConfigDict, stack: int) -> grain.IterDataset:
    """The end of every training pipeline: batches stacked k at a time for one transfer, then iterated."""
    if stack > 1:
        ds = ds.map(lambda b: stack_steps(b, stack))
    # No read-ahead here (grain's default is 16 threads filling a 500-batch buffer, slow to start and to
    # restore); data.prefetch alone decides how many batches a background thread prepares.
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if config.prefetch > 0:
        it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=config.prefetch)
    return it


def own_rows(indices: np.ndarray, global_batch: int, process_index: int, local_batch: int) -> np.ndarray:
    """This process's rows of each global batch in `indices` (k * global_batch,) -> (k * local_batch,)."""
    per_step = indices.reshape(-1, global_batch)  # (k, global_batch)
    return per_step[:, process_index * local_batch : (process_index + 1) * local_batch].reshape(-1)


def stack_steps(batch: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
    """(k * B, ...) arrays -> (k, B, ...): one batch per step."""
    return {key: value.reshape(steps, -1, *value.shape[1:]) for key, value in batch.items()}


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
    if spec.is_text:
        from jtrain.data import text

        yield from text.eval_batches(data, role, config, process_index, process_count)
        return
    source = data.sources[role]
    global_batch = config.eval_batch_size or config.batch_size
    batch = local_batch_size(global_batch, process_count, "data.eval_batch_size")
    shard = np.arange(process_index, len(source), process_count)
    num_batches = math.ceil(math.ceil(len(source) / process_count) / batch)
    for i in range(num_batches):
        indices = shard[i * batch : (i + 1) * batch]
        yield pad_batch(read_batch(source, indices, spec) if len(indices) else None, batch, spec, config.normalize,
                        data.stats)


def read_batch(source, indices: np.ndarray, spec: registry.DatasetSpec, raw: bool = False) -> dict[str, np.ndarray]:
    """Records at `indices` -> {'inputs': (n, H, W, C) float32 in [0, 1] (or (n, D)), 'targets': (n,)};
    with `raw` the inputs as stored (e.g. uint8 pixels)."""
    if isinstance(source, decoded.DecodedSplit):
        stored, targets = source.gather(indices)  # (n, H, W, C) as stored, (n,)
    else:
        records = source.__getitems__([int(i) for i in indices])
        stored = np.stack([r[spec.input_key] for r in records])  # (n, H, W, C) as stored
        targets = [r[spec.target_key] for r in records]
    return {
        "inputs": stored if raw else stored.astype(np.float32) * np.float32(spec.scale),
        "targets": np.asarray(targets, spec.target_dtype),
    }


def device_finish(data: Data, config: ml_collections.ConfigDict) -> Callable | None:
    """For training images without augmentation: the jnp function that scales and standardises batches read
    with `raw` (uint8 (..., H, W, C) -> float32), run on the device (jtrain/feed.py); None = the host does it.

    A uint8 batch is a quarter of the bytes to copy, and the loader skips the float conversion, whose CPU time
    on a 2-core machine came out of the step's (BENCHMARKS.md). The arithmetic is the host's, in float32."""
    spec = data.spec
    if not spec.is_image or config.augment or np.ndim(data.stats.mean) != 0 or data.stats.target_mean is not None:
        return None
    if read_batch(data.sources["train"], np.arange(1), spec, raw=True)["inputs"].dtype != np.uint8:
        return None
    scale, mean, std = np.float32(spec.scale), np.float32(data.stats.mean), np.float32(data.stats.std)
    normalize = config.normalize

    def finish(batch: dict) -> dict:
        inputs = batch["inputs"].astype(jnp.float32) * scale  # (..., H, W, C) in [0, 1]
        return {**batch, "inputs": (inputs - mean) / std if normalize else inputs}

    return finish


def standardize(batch: dict[str, np.ndarray], stats: Stats, normalize: bool) -> dict[str, np.ndarray]:
    """Inputs (when `normalize`) and regression targets (when the stats carry theirs) standardised."""
    if normalize:
        batch = transforms.normalize(batch, stats)
    if stats.target_mean is not None:
        batch = {**batch, "targets": ((batch["targets"] - stats.target_mean) / stats.target_std).astype(np.float32)}
    return batch


def pad_batch(batch_: dict[str, np.ndarray] | None, batch: int, spec: registry.DatasetSpec,
              normalize: bool, stats: Stats | None = None) -> dict[str, np.ndarray]:
    """Pads n <= batch examples to `batch` rows of zeros; `mask` marks the real ones."""
    stats = stats or Stats(spec.mean, spec.std)
    n = 0 if batch_ is None else len(batch_["targets"])
    inputs = np.zeros((batch, *spec.input_shape), np.float32)  # (B, H, W, C)
    targets = np.zeros((batch,), spec.target_dtype)  # (B,)
    mask = np.zeros((batch,), bool)  # (B,) True for real examples
    if n:
        inputs[:n] = batch_["inputs"]
        targets[:n] = batch_["targets"]
        mask[:n] = True
    out = standardize({"inputs": inputs, "targets": targets}, stats, normalize)
    # Padding stays zeros (standardising maps 0 to -mean/std).
    out["inputs"][n:] = 0.0
    out["targets"][n:] = 0
    out["mask"] = mask
    return out


def steps_per_epoch(data: Data, config: ml_collections.ConfigDict) -> float:
    return data.num_train / config.batch_size
