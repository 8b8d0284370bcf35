"""Datasets as TFDS builders over local data, read through grain pipelines."""

from jtrain.data.pipeline import Data, device_finish, eval_batches, load, train_dataset
from jtrain.data.registry import DATASETS, DatasetSpec, data_dir, get_spec, prepare

__all__ = ["DATASETS", "Data", "DatasetSpec", "data_dir", "device_finish", "eval_batches", "get_spec", "load", "prepare", "train_dataset"]
