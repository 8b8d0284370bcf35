"""Data sources: the protocol (jtrain/data/source.py), the builtin datasets (TFDS builders over local data, read
through grain pipelines), `ArraySource` for arrays of your own, and `load`, which opens `config.data`."""

from jtrain.data.indexed import ArraySource, IndexedSource
from jtrain.data.kinds import load, python_name, spec_of
from jtrain.data.registry import DATASETS, data_dir, get_spec, prepare
from jtrain.data.source import DatasetSpec, Source, SpecOnly, Stats

__all__ = ["ArraySource", "DATASETS", "DatasetSpec", "IndexedSource", "Source", "SpecOnly", "Stats", "data_dir",
           "get_spec", "load", "prepare", "python_name", "spec_of"]
