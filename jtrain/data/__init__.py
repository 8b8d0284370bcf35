"""Data sources: the protocol (jtrain/data/source.py), the builtin datasets (TFDS builders over local data, read
through grain pipelines), `ArraySource` for arrays of your own, and `load`, which opens `config.data`."""

from jtrain.data.indexed import ArraySource, IndexedSource
from jtrain.data.kinds import bind, load, python_name, spec_of
from jtrain.data.own import from_arrays
from jtrain.data.registry import DATASETS, data_dir, get_spec, prepare
from jtrain.data.source import DatasetSpec, Source, SpecOnly, Stats

__all__ = ["ArraySource", "bind", "DATASETS", "DatasetSpec", "IndexedSource", "Source", "SpecOnly", "Stats", "data_dir",
           "from_arrays", "get_spec", "load", "prepare", "python_name", "spec_of"]
