"""Sources of examples read by index: a grain pipeline over example indices for training, exact padded batches
for evaluation. The builtin image and tabular datasets (TFDS records, jtrain/data/pipeline.py) and `ArraySource`
(NumPy arrays in memory, for a source of your own) are both this.

Batches are dicts of NumPy arrays: `inputs` (B, H, W, C) float32 (or (B, D) tabular features), `targets` (B,)
int32 labels (or float32 regression targets), and for eval `mask` (B,) bool. Training images without
augmentation may instead leave as stored (uint8), finished on the device (`device_finish`). B is the
per-process batch: the global batch divided by the number of processes.

Standardisation (`Stats`): images use the dataset's constants; tabular features, and regression targets when
`data.normalize_targets`, use the training split's per-feature mean and std, computed when the data is loaded.

    def factory(config):                         # data.name="my_package.my_module:factory"
        x, y = my_arrays()                       # (N, D) features, (N,) labels
        return ArraySource("mine", {"train": (x[:800], y[:800]), "val": (x[800:], y[800:])}, config)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np

from jtrain.data import curriculum, order, transforms
from jtrain.data.decoded import DecodedSplit
from jtrain.data.folds import Subset
from jtrain.data.source import DatasetSpec, Source, Stats, eval_indices, local_batch_size, own_rows, to_iterator
from jtrain.errors import ConfigError, DataError

AUGMENT_STREAM = 0x617567  # keeps the augmentation generators apart from the epoch orders' ([seed, epoch])


@dataclasses.dataclass
class IndexedSource(Source):
    spec: DatasetSpec
    # role -> random access to its examples: a TFDS data source (records by `__getitems__`) or a DecodedSplit
    # (arrays, by `gather`)
    sources: dict[str, object]
    splits: dict[str, str]  # role -> what it was read from
    stats: Stats | None = None  # None = the spec's constants, targets untouched
    difficulty: np.ndarray | None = None  # data.curriculum: every training row's, set by jtrain/data/rows.py

    def __post_init__(self):
        if self.stats is None:
            self.stats = Stats(self.spec.mean, self.spec.std)

    def num_examples(self, role: str) -> int:
        return len(self.sources[role])

    def train_dataset(self, config: ml_collections.ConfigDict, seed: int, process_index: int = 0,
                      process_count: int = 1, stack: int = 1, raw: bool = False) -> grain.IterDataset:
        """An endless iterator of training batches; its `get_state()` is saved in checkpoints.

        `stack` > 1 yields the next k batches at once, stacked (k, B, ...), for one copy to the device
        (jtrain/feed.py): the same examples in the same order as k single batches. `raw` leaves image inputs as
        stored, for `device_finish` to scale and standardise on the device."""
        spec, stats = self.spec, self.stats
        batch = local_batch_size(config.batch_size, process_count, "data.batch_size")
        source = self.sources["train"]
        # The pipeline runs over example indices and reads a whole batch at once: a TFDS data source reads
        # many records several times faster than one at a time. Every process draws the same global order of
        # indices and reads only its own rows of each global batch, so the global batches - and the training -
        # are the same whatever the number of processes.
        if len(source) < config.batch_size:
            raise ConfigError(f"config key 'data.batch_size': {config.batch_size} exceeds the {len(source)} "
                              f"training examples")
        # (k * global_batch,) indices per element; every epoch a fresh permutation when shuffling (jtrain/data/order.py)
        if curriculum.active(config):  # a pool ranked by difficulty that grows with the step
            if self.difficulty is None:
                raise ConfigError("config key 'data.curriculum.difficulty': this source was not opened through "
                                  "jtrain.data.load or bind, which read the difficulty")
            batches = curriculum.CurriculumOrder(curriculum.ranking(source, self.difficulty, config, seed),
                                                 config.batch_size, stack, seed, config)
        else:
            batches = order.EpochOrder(len(source), config.batch_size * stack, seed, config.shuffle)
        ds = grain.MapDataset.source(batches)
        ds = ds.map(lambda indices: read_batch(source, own_rows(indices, config.batch_size, process_index, batch),
                                               spec, raw))
        if raw:
            return to_iterator(ds, config, stack)
        augment = transforms.parse_augmentations(config.augment)
        if augment and not spec.is_image:
            raise ConfigError(f"config key 'data.augment': {config.augment!r} augments images; "
                              f"{spec.name} is not images")
        if augment:
            # Element e holds global batches e*k ... e*k + k - 1; each batch draws from its own generator, a function
            # of (seed, batch number), so data.transfer_batches (a speed setting) leaves the augmented examples alone,
            # and draws for the global batch, so the number of processes does too.
            ds = ds.map_with_index(lambda e, b: transforms.augment_batch(b, augment, [
                np.random.default_rng([seed, AUGMENT_STREAM, e * stack + j]) for j in range(stack)],
                process_index, process_count))
        if config.normalize or stats.target_mean is not None:
            ds = ds.map(lambda b: standardize(b, stats, config.normalize))
        return to_iterator(ds, config, stack)

    def eval_batches(self, role: str, config: ml_collections.ConfigDict, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Every example of the split exactly once, in order, padded to full batches with `mask` False on padding."""
        source = self.sources[role]
        batch, batches = eval_indices(len(source), config, process_index, process_count)
        for indices in batches:
            yield pad_batch(read_batch(source, indices, self.spec) if len(indices) else None, batch, self.spec,
                            config.normalize, self.stats)

    def device_finish(self, config: ml_collections.ConfigDict) -> Callable | None:
        """For training images without augmentation: the jnp function that scales and standardises batches read
        with `raw` (uint8 (..., H, W, C) -> float32), run on the device (jtrain/feed.py); None = the host does it.

        A uint8 batch is a quarter of the bytes to copy, and the loader skips the float conversion. The
        arithmetic is the host's, in float32."""
        spec, stats = self.spec, self.stats
        if not spec.is_image or config.augment or np.ndim(stats.mean) != 0 or stats.target_mean is not None:
            return None
        if read_batch(self.sources["train"], np.arange(1), spec, raw=True)["inputs"].dtype != np.uint8:
            return None
        scale, mean, std = np.float32(spec.scale), np.float32(stats.mean), np.float32(stats.std)
        normalize = config.normalize

        def finish(batch: dict) -> dict:
            inputs = batch["inputs"].astype(jnp.float32) * scale  # (..., H, W, C) in [0, 1]
            return {**batch, "inputs": (inputs - mean) / std if normalize else inputs}

        return finish


class ArraySource(IndexedSource):
    """A source over NumPy arrays in memory: `arrays` maps each role (train, and val / test if you have them) to
    (inputs (N, ...), targets (N,)). Integer targets are class labels (num_classes = the largest + 1 and class
    names "0", "1", ... unless given), floating ones regression targets. Inputs are multiplied by `scale`, then
    standardised with `mean` / `std`, or per feature from the training split when those are None (as the
    tabular datasets are)."""

    def __init__(self, name: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
                 config: ml_collections.ConfigDict, class_names: tuple[str, ...] = (), num_classes: int | None = None,
                 scale: float = 1.0, mean: float | None = None, std: float | None = None):
        if "train" not in arrays:
            raise DataError(f"data source {name}: arrays for the role 'train' are required, got {sorted(arrays)}")
        splits = {}
        for role, (x, y) in arrays.items():
            if len(x) != len(y):
                raise DataError(f"data source {name}: role {role!r} has {len(x)} inputs but {len(y)} targets")
            splits[role] = DecodedSplit(np.asarray(x), np.asarray(y), "inputs", "targets")
        y = np.asarray(arrays["train"][1])
        classes = np.issubdtype(y.dtype, np.integer)
        if num_classes is None:
            num_classes = int(max(np.max(t) for _, t in arrays.values())) + 1 if classes else 0
        class_names = tuple(class_names) or tuple(str(i) for i in range(num_classes))  # reports and plots name them
        spec = DatasetSpec(name=name, num_classes=num_classes, input_shape=tuple(np.shape(arrays["train"][0])[1:]),
                           scale=scale, mean=mean, std=std, class_names=class_names,
                           target_dtype="int32" if classes else "float32")
        super().__init__(spec=spec, sources=splits, splits={role: f"{len(s)} examples in memory"
                                                            for role, s in splits.items()})
        self.stats = training_stats(spec, splits["train"], config)


# ---------------------------------------------------------------------------------------------- reading and finishing


def read_batch(source, indices: np.ndarray, spec: DatasetSpec, raw: bool = False) -> dict[str, np.ndarray]:
    """Records at `indices` -> {'inputs': (n, H, W, C) float32 in [0, 1] (or (n, D)), 'targets': (n,)};
    with `raw` the inputs as stored (e.g. uint8 pixels)."""
    if isinstance(source, Subset):  # a cross-validation fold or data.train_rows: its rows of the whole split
        return read_batch(source.base, source.rows[np.asarray(indices, np.int64)], spec, raw)
    if hasattr(source, "relabel"):  # data.label_noise (jtrain/data/rows.py)
        batch = read_batch(source.base, indices, spec, raw)
        return {**batch, "targets": source.relabel(indices, batch["targets"]).astype(spec.target_dtype)}
    if isinstance(source, DecodedSplit):
        stored, targets = source.gather(indices)  # (n, H, W, C) as stored, (n,)
    else:
        records = source.__getitems__([int(i) for i in indices])
        stored = np.stack([r[spec.input_key] for r in records])  # (n, H, W, C) as stored
        targets = [r[spec.target_key] for r in records]
    return {
        "inputs": stored if raw else stored.astype(np.float32) * np.float32(spec.scale),
        "targets": np.asarray(targets, spec.target_dtype),
    }


def training_stats(spec: DatasetSpec, train_source, config: ml_collections.ConfigDict) -> Stats:
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


def standardize(batch: dict[str, np.ndarray], stats: Stats, normalize: bool) -> dict[str, np.ndarray]:
    """Inputs (when `normalize`) and regression targets (when the stats carry theirs) standardised."""
    if normalize:
        batch = transforms.normalize(batch, stats)
    if stats.target_mean is not None:
        batch = {**batch, "targets": ((batch["targets"] - stats.target_mean) / stats.target_std).astype(np.float32)}
    return batch


def pad_batch(batch_: dict[str, np.ndarray] | None, batch: int, spec: DatasetSpec,
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
