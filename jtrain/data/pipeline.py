"""The builtin image and tabular datasets: TFDS records (jtrain/data/registry.py) opened as an indexed source
(jtrain/data/indexed.py), each split read record by record or decoded once into memory (jtrain/data/decoded.py)."""

from __future__ import annotations

import ml_collections

from jtrain.data import decoded, folds, registry
from jtrain.data.indexed import IndexedSource, training_stats
from jtrain.data.source import DatasetSpec, resolve_splits


def load(config: ml_collections.ConfigDict, spec: DatasetSpec) -> IndexedSource:
    """Opens the splits of `config.data` (preparing the dataset on first use); with data.cv.folds > 0, train and
    val are a fold of the training split (jtrain/data/folds.py), and the statistics are the fold's."""
    splits = resolve_splits(config, spec)
    builder = registry.prepared_builder(spec.name, config.dir)  # its folder is keyed by the inputs' content
    if folds.active(config):  # the held-out fold is val; the configured val split is not read
        splits.pop("val", None)
    sources = {role: open_split(builder, spec, split, config, role) for role, split in splits.items()}
    if folds.active(config):
        sources, splits = folds.fold_sources(sources, splits, config, spec.num_classes > 0, spec.target_key)
    stats = training_stats(spec, sources["train"], config)
    return IndexedSource(spec=spec, sources=sources, splits=splits, stats=stats)


def open_split(builder, spec: DatasetSpec, split: str, config: ml_collections.ConfigDict, role: str = ""):
    """The split's TFDS source, or its decoded arrays when they fit in data.in_memory_mb (jtrain/data/decoded.py)."""
    source = registry.split_source(builder, spec.name, split, role)
    if config.in_memory_mb <= 0 or decoded.estimated_mb(source, spec.input_key) > config.in_memory_mb:
        return source
    return decoded.load(source, split, builder.data_dir, spec.input_key, spec.target_key)
