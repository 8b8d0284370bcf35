"""The data-source protocol: what every dataset gives the training loop, whoever wrote it.

A source is an object with these attributes and methods (`Source` below is a base class with the common parts;
jtrain/data/indexed.py `ArraySource` builds one from NumPy arrays in a few lines):

    spec            DatasetSpec: name, input_shape of one example, target_dtype, num_classes (0 = regression
                    targets; the vocabulary for language models), class_names, and for text the tokenizer kind
                    and the example layout (`examples`). Read by components.build (model width, loss checks),
                    feed.py (bytes per batch), train.py (plots) and plan.py (batch shapes).
    splits          role (train / val / test) -> what the role was read from; its keys are the roles present.
                    train.py evaluates val during training and val / test at the end when present.
    num_examples(role), num_train
                    examples (rows) of a role; components.build turns train.epochs into steps with num_train.
    stats           Stats: standardisation constants, from the training split only; `target_std` (stats'
                    regression target scale, None = unscaled) is how evaluate.py reports errors in target units.
    train_dataset(config, seed, process_index=0, process_count=1, stack=1, raw=False) -> grain.IterDataset
                    endless training batches (the `data` config section), in an order that is a function of
                    `seed` alone; the iterator's get_state / set_state is the data position a checkpoint saves
                    (feed.py, checkpoint.py). Every process reads its own rows of the same global batches;
                    `stack` = k yields k consecutive batches at once, (k, B, ...); `raw` may leave inputs as
                    stored for `device_finish`.
    eval_batches(role, config, process_index=0, process_count=1) -> iterator of batches
                    every example of the role exactly once, in order, padded to full batches with a `mask`
                    (False / 0 on padding); every process yields the same number of batches, so collective eval
                    steps stay in lockstep (evaluate.py).
    device_finish(config) -> function or None
                    the jnp function that finishes batches read with `raw` on the device (feed.py); None = the
                    host finishes them.

Optional: `describe()` -> the words the start-up line uses for the data (default "NAME (N training examples)";
an environment names itself instead). Text sources also carry `tokenizer` (sample.py decodes with it) and `target_chars` (role -> characters the
targets stand for: bits per character, lm_metrics.py).

Which reader serves a dataset name is decided in one place, jtrain/data/kinds.py; this module imports nothing
else of jtrain.data, so every reader can build on it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

import grain
import ml_collections
import numpy as np

from jtrain.errors import ConfigError

ROLES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    builder: Any = None  # the TFDS builder class of a builtin dataset (jtrain/data/registry.py); None otherwise
    splits: dict[str, str] = dataclasses.field(default_factory=dict)  # default TFDS split spec per role
    num_classes: int = 0  # 0 for regression targets
    input_shape: tuple[int, ...] = ()  # one example: (H, W, C) for images, (D,) for tabular features
    input_key: str = "inputs"  # feature holding the model input
    target_key: str = "targets"  # feature holding the label (or regression target)
    scale: float = 1.0  # raw value -> [0, 1]
    # After scaling, over the training images; None = per feature, from the training split when the data is
    # loaded (tabular features have different units, and the statistics must not see the val/test rows).
    mean: float | None = None
    std: float | None = None
    class_names: tuple[str, ...] = ()
    target_dtype: str = "int32"  # int32 class labels, or float32 regression targets
    tokenizer: str = ""  # text datasets: "char" or "bpe" (jtrain/data/tokenize.py); "" = not text
    examples: str = ""  # post-training text: "sft" (prompt, response) or "preference" (prompt, chosen, rejected); "" = a token stream

    @property
    def is_text(self) -> bool:
        return bool(self.tokenizer)

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


@dataclasses.dataclass(frozen=True)
class Stats:
    """Standardisation constants. `mean` / `std` are named as in DatasetSpec, so transforms.normalize takes either."""

    mean: float | np.ndarray  # inputs: a scalar (images) or (D,) per feature
    std: float | np.ndarray
    target_mean: np.ndarray | None = None  # () regression target; None = targets left as they are
    target_std: np.ndarray | None = None


class Source:
    """The parts every source shares; subclasses set `spec`, `splits`, `stats` and define `num_examples`,
    `train_dataset` and `eval_batches`."""

    spec: DatasetSpec
    splits: dict[str, str]
    stats: Stats

    def num_examples(self, role: str) -> int:
        raise NotImplementedError

    @property
    def num_train(self) -> int:
        return self.num_examples("train")

    @property
    def target_std(self) -> np.ndarray | None:
        """The regression targets' scale in the pipeline (None = unscaled): reports multiply errors back by it."""
        return self.stats.target_std

    def train_dataset(self, config: ml_collections.ConfigDict, seed: int, process_index: int = 0,
                      process_count: int = 1, stack: int = 1, raw: bool = False) -> grain.IterDataset:
        raise NotImplementedError

    def eval_batches(self, role: str, config: ml_collections.ConfigDict, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def device_finish(self, config: ml_collections.ConfigDict) -> Callable | None:
        return None


class SpecOnly(Source):
    """Shapes without data: `jtrain plan` builds a run from it and reads no example (jtrain/plan.py)."""

    def __init__(self, spec: DatasetSpec):
        self.spec, self.splits, self.stats = spec, {}, Stats(spec.mean, spec.std)

    def num_examples(self, role: str) -> int:
        return 0


# ---------------------------------------------------------------------------------------------- shared pieces


def resolve_splits(config: ml_collections.ConfigDict, spec: DatasetSpec) -> dict[str, str]:
    """role (train / val / test) -> TFDS split spec: the config's, else the dataset's default; "none" drops it."""
    splits = {}
    for role in ROLES:
        chosen = config.splits[role] or spec.splits.get(role, "")
        if chosen and chosen != "none":
            splits[role] = chosen
    if "train" not in splits:
        raise ConfigError("config key 'data.splits.train': a training split is required")
    return splits


def local_batch_size(global_batch: int, process_count: int, key: str) -> int:
    if global_batch % process_count:
        raise ConfigError(f"config key {key!r}: global batch {global_batch} is not divisible by "
                          f"{process_count} processes")
    return global_batch // process_count


def own_rows(indices: np.ndarray, global_batch: int, process_index: int, local_batch: int) -> np.ndarray:
    """This process's rows of each global batch in `indices` (k * global_batch,) -> (k * local_batch,)."""
    per_step = indices.reshape(-1, global_batch)  # (k, global_batch)
    return per_step[:, process_index * local_batch : (process_index + 1) * local_batch].reshape(-1)


def stack_steps(batch: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
    """(k * B, ...) arrays -> (k, B, ...): one batch per step."""
    return {key: value.reshape(steps, -1, *value.shape[1:]) for key, value in batch.items()}


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


def eval_indices(num_examples: int, config: ml_collections.ConfigDict, process_index: int,
                 process_count: int) -> tuple[int, Iterator[np.ndarray]]:
    """(local eval batch, this process's example indices of each eval batch): its shard of the split in order,
    in the same number of batches on every process (shards differ by at most one example); the last ones may
    hold fewer indices, or none, and are padded by the caller."""
    global_batch = config.eval_batch_size or config.batch_size
    batch = local_batch_size(global_batch, process_count, "data.eval_batch_size")
    shard = np.arange(process_index, num_examples, process_count)
    num_batches = math.ceil(math.ceil(num_examples / process_count) / batch)
    return batch, (shard[i * batch : (i + 1) * batch] for i in range(num_batches))
