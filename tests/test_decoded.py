"""Splits decoded into memory (jtrain/data/decoded.py): the same batches as reading records, a cache that is
reused when it matches the source and rebuilt when it does not, and whole-batch augmentation."""

from __future__ import annotations

import os

import numpy as np

from jtrain.config import default_config
from jtrain import data as data_lib
from jtrain.data import decoded, registry, transforms


def _data_config(data_dir: str, in_memory_mb: int, **fields):
    c = default_config().data
    c.dir, c.in_memory_mb, c.prefetch, c.batch_size = data_dir, in_memory_mb, 0, 32
    for key, value in fields.items():
        c[key] = value
    return c


def _batches(data, config, n=5):
    it = iter(data.train_dataset(config, seed=7))
    return [next(it) for _ in range(n)]


def test_in_memory_batches_equal_record_batches(digits_data_dir):
    from_records = data_lib.load(_data_config(digits_data_dir, 0))
    in_memory = data_lib.load(_data_config(digits_data_dir, 64))
    assert not isinstance(from_records.sources["train"], decoded.DecodedSplit)
    assert all(isinstance(s, decoded.DecodedSplit) for s in in_memory.sources.values())
    for config in (_data_config(digits_data_dir, 0), _data_config(digits_data_dir, 0, augment="shift,flip")):
        for a, b in zip(_batches(from_records, config), _batches(in_memory, config)):
            for key in ("inputs", "targets"):
                np.testing.assert_array_equal(a[key], b[key])
    eval_config = _data_config(digits_data_dir, 0, eval_batch_size=100)
    for a, b in zip(from_records.eval_batches("val", eval_config),
                    in_memory.eval_batches("val", eval_config)):
        for key in ("inputs", "targets", "mask"):
            np.testing.assert_array_equal(a[key], b[key])


def test_size_estimate_is_the_stored_bytes(digits_data_dir):
    source = registry.data_source("digits", "train", digits_data_dir)
    assert decoded.estimated_mb(source, "image") == 1797 * 8 * 8 / 2**20  # uint8 pixels


def test_cache_is_reused_and_a_stale_one_rebuilt(digits_data_dir):
    split = "train[:100]"
    source = registry.data_source("digits", split, digits_data_dir)
    directory = registry.builder("digits", digits_data_dir).data_dir
    inputs_path, targets_path = decoded.cache_paths(directory, split)
    for path in (inputs_path, targets_path):
        if os.path.exists(path):
            os.remove(path)
    first = decoded.load(source, split, directory, "image", "label")
    assert os.path.exists(inputs_path) and os.path.exists(targets_path)
    again = decoded.load(source, split, directory, "image", "label")
    assert isinstance(again.inputs, np.memmap)  # read from the cache, not decoded again
    np.testing.assert_array_equal(again.inputs, first.inputs)
    np.testing.assert_array_equal(again.targets, [r["label"] for r in source.__getitems__(range(100))])
    # A cache whose contents disagree with the source (here: its last label changed) is not trusted.
    stale = np.array(first.targets)
    stale[-1] = (stale[-1] + 1) % 10
    np.save(targets_path, stale)
    rebuilt = decoded.load(source, split, directory, "image", "label")
    assert not isinstance(rebuilt.targets, np.memmap)
    np.testing.assert_array_equal(rebuilt.targets, first.targets)
    np.testing.assert_array_equal(np.load(targets_path), first.targets)  # and the cache is rewritten


def test_a_torn_cache_is_decoded_again(digits_data_dir):
    split = "train[100:150]"
    source = registry.data_source("digits", split, digits_data_dir)
    directory = registry.builder("digits", digits_data_dir).data_dir
    first = decoded.load(source, split, directory, "image", "label")
    inputs_path, _ = decoded.cache_paths(directory, split)
    with open(inputs_path, "r+b") as f:
        f.truncate(100)  # a crash mid-write by some other tool
    np.testing.assert_array_equal(decoded.load(source, split, directory, "image", "label").inputs, first.inputs)


def test_batch_augmentation_draws_per_example():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(16, 16, 1)).astype(np.float32)
    batch = {"inputs": np.repeat(image[None], 64, axis=0), "targets": np.zeros(64, np.int32)}
    shifted = transforms.augment_batch(batch, ("shift",), np.random.default_rng(1))["inputs"]  # (64, 16, 16, 1)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    offsets = set()
    for out in shifted:
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(out, padded[dy : dy + 16, dx : dx + 16])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # each example its own offset, not one for the batch
    flipped = transforms.augment_batch(batch, ("flip",), np.random.default_rng(1))["inputs"]
    mirrored = [np.array_equal(out, image[:, ::-1]) for out in flipped]
    assert all(m or np.array_equal(out, image) for m, out in zip(mirrored, flipped))
    assert 10 < sum(mirrored) < 54
