"""data.name=tfds:NAME: a dataset of the TensorFlow Datasets catalog (mnist, cifar10, ...), prepared once in the
data dir as array_record files and read through the indexed pipeline as the builtin datasets are.

Preparing downloads the data. Offline that cannot work, so before downloading, one connection to TFDS's storage
host is tried with a short timeout, and without it the run stops at once with one line saying how to bring the
prepared files here. A dataset already prepared in the data dir needs no network.
"""

from __future__ import annotations

import socket

import ml_collections
import numpy as np

from jtrain.data import decoded, folds, registry
from jtrain.data.indexed import IndexedSource
from jtrain.data.source import DatasetSpec, Stats, resolve_splits
from jtrain.errors import DataError

PROBE = ("storage.googleapis.com", 443)  # where TFDS keeps most downloads and its dataset metadata
PROBE_TIMEOUT_S = 3.0
STATS_EXAMPLES = 10_000  # training images the standardisation constants are measured on
SPLIT_ROLES = {"train": "train", "validation": "val", "test": "test"}


def online() -> bool:
    """Whether TFDS's storage host answers within PROBE_TIMEOUT_S."""
    try:
        with socket.create_connection(PROBE, timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def builder(name: str, data_dir: str):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"data.name=tfds:{name}: no dataset {name!r} in the TFDS catalog "
                        f"(https://www.tensorflow.org/datasets/catalog)") from None


def load(config: ml_collections.ConfigDict) -> IndexedSource:
    name = config.name.partition(":")[2]
    data_dir = registry.data_dir(config.dir)
    b = builder(name, data_dir)
    if not b.is_prepared():
        if not online():
            raise DataError(f"data.name=tfds:{name}: not prepared in {data_dir} and TFDS's servers are out of reach "
                            f"(offline?); on a machine with internet run tfds.builder({name!r}, data_dir=DIR, "
                            f"file_format='array_record').download_and_prepare(), then copy DIR here as data.dir")
        b.download_and_prepare()
        b = builder(name, data_dir)  # its split info is read when it is constructed
    spec = _spec(config.name, b, config.split_ratios)
    splits = resolve_splits(config, spec)
    if folds.active(config):  # the held-out fold is val; the configured val split is not read
        splits.pop("val", None)
    sources = {}
    for role, split in splits.items():
        source = registry.split_source(b, config.name, split, role)
        small = 0 < decoded.estimated_mb(source, spec.input_key) <= config.in_memory_mb
        sources[role] = decoded.load(source, split, b.data_dir, spec.input_key, spec.target_key) if small else source
    if folds.active(config):
        sources, splits = folds.fold_sources(sources, splits, config, spec.num_classes > 0, spec.target_key)
    return IndexedSource(spec=spec, sources=sources, splits=splits, stats=_stats(spec, sources["train"]))


def _spec(label: str, b, ratios=(0.7, 0.15, 0.15)) -> DatasetSpec:
    """Input and target from the dataset's supervised keys (an image or a feature vector, and a class label)."""
    keys = b.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise DataError(f"data.name={label}: the dataset has no (input, label) supervised keys jtrain can train on")
    input_key, target_key = keys
    features = b.info.features
    shape = tuple(features[input_key].shape)
    if any(d is None for d in shape):
        raise DataError(f"data.name={label}: its inputs {input_key!r} vary in shape {shape}; jtrain needs one shape")
    target = features[target_key]
    num_classes = getattr(target, "num_classes", 0)
    image = len(shape) == 3 and np.dtype(features[input_key].np_dtype) == np.uint8
    splits = {SPLIT_ROLES[s]: s for s in b.info.splits if s in SPLIT_ROLES}
    if set(splits) == {"train"}:  # one split: cut by data.split_ratios (TFDS slices, in the stored order)
        edges = np.round(np.cumsum([0, *ratios]) * 100).astype(int)
        splits = {role: f"train[{lo}%:{hi}%]" for role, lo, hi in zip(("train", "val", "test"), edges, edges[1:])
                  if hi > lo}
    return DatasetSpec(name=label, splits=splits, num_classes=num_classes, input_shape=shape, input_key=input_key,
                       target_key=target_key, scale=1 / 255 if image else 1.0,
                       class_names=tuple(getattr(target, "names", ()) or ()),
                       target_dtype="int32" if num_classes else "float32")


def _stats(spec: DatasetSpec, train) -> Stats:
    """Images: one mean and std over the first training images' pixels; features: per column."""
    from jtrain.data.indexed import read_batch

    batch = read_batch(train, np.arange(min(len(train), STATS_EXAMPLES)), spec)["inputs"].astype(np.float64)
    if spec.is_image:
        return Stats(float(batch.mean()), float(batch.std()) or 1.0)
    std = batch.std(0)
    return Stats(batch.mean(0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))

