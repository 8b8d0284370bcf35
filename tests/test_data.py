"""Tests for jtrain.data: digits splits, the training iterator (determinism, epochs, checkpointable state),
exact eval batches, normalisation, augmentation, and the errors for unknown or missing data."""

from __future__ import annotations

import gzip
import hashlib
import struct
import time

import numpy as np
import pytest

from jtrain.config import default_config
from jtrain import data as data_lib
from jtrain.data import builders, indexed, registry, transforms
from jtrain.errors import ConfigError, DataError, UserError

DIGITS_TOTAL = 1797
DIGITS = registry.DATASETS["digits"]


def data_config(data_dir: str, **fields):
    """The `data` section of the default config over the session's data dir, with `fields` changed."""
    c = default_config().data
    c.dir = data_dir
    for key, value in fields.items():
        if key in ("train", "val", "test"):
            c.splits[key] = value
        else:
            c[key] = value
    return c


def record_key(image: np.ndarray, label) -> bytes:
    """Content hash of one example: raw uint8 pixels and label (all 1797 digits differ)."""
    image = np.asarray(image, np.uint8)
    return hashlib.sha1(image.tobytes() + int(label).to_bytes(1, "little")).digest()


def example_key(inputs: np.ndarray, target) -> bytes:
    """record_key of an un-normalised pipeline example (inputs = pixels / 16)."""
    pixels = np.rint(np.asarray(inputs) / DIGITS.scale)
    assert np.allclose(pixels, np.asarray(inputs) / DIGITS.scale, atol=1e-4)
    return record_key(pixels, target)


def source_records(source) -> list[dict]:
    return list(source.__getitems__(list(range(len(source)))))


def source_keys(source) -> list[bytes]:
    return [record_key(r["image"], r["label"]) for r in source_records(source)]


def batch_keys(batches) -> list[bytes]:
    return [example_key(x, t) for b in batches for x, t in zip(b["inputs"], b["targets"])]


def take(data, config, n: int, seed: int = 0, **kwargs) -> list[dict]:
    it = iter(data.train_dataset(config, seed=seed, **kwargs))
    try:
        return [next(it) for _ in range(n)]
    finally:
        _close(it)


def _close(it) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()  # stops a prefetch thread now rather than at interpreter exit


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def batches_equal(a: list[dict], b: list[dict]) -> bool:
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


@pytest.fixture(scope="module")
def digits(digits_data_dir):
    """Digits with the default splits (train 70% / val 15% / test 15%)."""
    return data_lib.load(data_config(digits_data_dir))


@pytest.fixture(scope="module")
def small(digits_data_dir):
    """The first 64 examples as the training split: quick to iterate for several epochs."""
    return data_lib.load(data_config(digits_data_dir, train="train[:64]"))


# ---------------------------------------------------------------------------------------------
# splits


def test_default_splits_are_disjoint_and_cover_all_digits(digits):
    from sklearn.datasets import load_digits

    assert digits.splits == {"train": "train[:70%]", "val": "train[70%:85%]", "test": "train[85%:]"}
    keys = {role: source_keys(digits.sources[role]) for role in ("train", "val", "test")}
    sizes = {role: len(k) for role, k in keys.items()}
    assert sizes == {"train": 1258, "val": 269, "test": 270}
    assert sum(sizes.values()) == DIGITS_TOTAL
    assert digits.num_train == 1258 and digits.num_examples("val") == 269
    sets = {role: set(k) for role, k in keys.items()}
    assert all(len(sets[r]) == sizes[r] for r in sets)  # no example twice within a split
    assert not sets["train"] & sets["val"]
    assert not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    sk = load_digits()
    everything = {record_key(img, lab) for img, lab in zip(sk.images, sk.target)}
    assert sets["train"] | sets["val"] | sets["test"] == everything


def test_none_disables_a_split(digits_data_dir):
    data = data_lib.load(data_config(digits_data_dir, val="none"))
    assert set(data.sources) == {"train", "test"}


def test_a_training_split_is_required(digits_data_dir):
    with pytest.raises(ConfigError, match="data.splits.train"):
        data_lib.load(data_config(digits_data_dir, train="none"))


def test_bad_split_spec_raises_data_error(digits_data_dir):
    with pytest.raises(DataError, match="validation"):
        data_lib.load(data_config(digits_data_dir, val="validation"))


def test_unknown_dataset_suggests_the_closest(digits_data_dir):
    with pytest.raises(DataError) as e:
        registry.get_spec("digit")
    assert "'digit'" in str(e.value) and "did you mean 'digits'" in str(e.value)
    with pytest.raises(DataError, match="did you mean 'fashion_mnist'"):
        data_lib.load(data_config(digits_data_dir, name="fashion-mnist"))
    assert issubclass(DataError, UserError)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("JTRAIN_DATA_DIR", str(tmp_path / "from_env"))
    assert registry.data_dir("") == str(tmp_path / "from_env")
    assert registry.data_dir(str(tmp_path / "configured")) == str(tmp_path / "configured")
    monkeypatch.delenv("JTRAIN_DATA_DIR")
    assert registry.data_dir("").endswith("/.cache/jtrain/tensorflow_datasets")


def test_prepare_is_idempotent(digits_data_dir):
    start = time.perf_counter()
    path = registry.prepare("digits", digits_data_dir)
    assert time.perf_counter() - start < 2.0
    assert path.startswith(digits_data_dir)


# ---------------------------------------------------------------------------------------------
# training iterator


def test_batches_have_the_documented_shapes(small, digits_data_dir):
    (b,) = take(small, data_config(digits_data_dir, batch_size=8, prefetch=0), 1)
    assert set(b) == {"inputs", "targets"}
    assert b["inputs"].shape == (8, 8, 8, 1) and b["inputs"].dtype == np.float32
    assert b["targets"].shape == (8,) and b["targets"].dtype == np.int32


def test_same_seed_same_batches_other_seed_other_batches(small, digits_data_dir):
    c = data_config(digits_data_dir, batch_size=8, prefetch=0)
    first = take(small, c, 12, seed=3)  # 1.5 epochs
    assert_batches_equal(first, take(small, c, 12, seed=3))
    other = take(small, c, 12, seed=4)
    assert not batches_equal(first, other)


def test_each_epoch_is_a_fresh_permutation_of_the_train_split(small, digits_data_dir):
    c = data_config(digits_data_dir, batch_size=8, prefetch=0, normalize=False)
    split = source_keys(small.sources["train"])
    assert len(split) == 64
    stream = batch_keys(take(small, c, 3 * 8))  # three epochs of 8 batches of 8
    epochs = [stream[i * 64 : (i + 1) * 64] for i in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(split)  # every example exactly once per epoch
        assert epoch != split  # shuffled
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_epochs_run_on_across_batches_when_the_batch_does_not_divide_the_split(digits_data_dir):
    data = data_lib.load(data_config(digits_data_dir, train="train[:60]"))
    c = data_config(digits_data_dir, batch_size=8, prefetch=0, normalize=False)
    split = sorted(source_keys(data.sources["train"]))
    stream = batch_keys(take(data, c, 15))  # 120 examples = exactly two epochs of 60
    assert sorted(stream[:60]) == split
    assert sorted(stream[60:]) == split


def test_without_shuffle_batches_follow_the_split_order(small, digits_data_dir):
    c = data_config(digits_data_dir, batch_size=16, prefetch=0, normalize=False, shuffle=False)
    split = source_keys(small.sources["train"])
    assert batch_keys(take(small, c, 8)) == split + split


@pytest.mark.parametrize(
    "prefetch, augment, consumed, more",
    [(0, "", 3, 4), (2, "", 6, 5), (2, "shift,noise", 7, 6)],
)
def test_iterator_state_resumes_exactly(small, digits_data_dir, prefetch, augment, consumed, more):
    c = data_config(digits_data_dir, batch_size=8, prefetch=prefetch, augment=augment)
    it = iter(small.train_dataset(c, seed=11))
    try:
        for _ in range(consumed):
            next(it)
        state = it.get_state()
        expected = [next(it) for _ in range(more)]  # crosses an epoch boundary for consumed + more > 8
    finally:
        _close(it)
    resumed = iter(small.train_dataset(c, seed=11))
    try:
        resumed.set_state(state)
        got = [next(resumed) for _ in range(more)]
    finally:
        _close(resumed)
    assert_batches_equal(got, expected)


class CountingSource:
    """Wraps a data source and counts the records read through it."""

    def __init__(self, source):
        self.source, self.reads = source, 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads += 1
        return self.source[i]

    def __getitems__(self, indices):
        self.reads += len(indices)
        return self.source.__getitems__(indices)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_prefetch_reads_at_most_that_many_batches_ahead(small, prefetch, digits_data_dir):
    counting = CountingSource(small.sources["train"])
    data = indexed.IndexedSource(spec=small.spec, sources={"train": counting}, splits=small.splits)
    it = iter(data.train_dataset(data_config(digits_data_dir, batch_size=4, prefetch=prefetch), seed=0))
    try:
        for _ in range(2):
            next(it)
        time.sleep(0.2)  # let a background reader run ahead as far as it will
        reads = counting.reads
    finally:
        _close(it)
    if prefetch == 0:
        assert reads == 2 * 4  # "0 = none": nothing read before it is asked for
    else:
        assert 2 * 4 <= reads <= (2 + prefetch + 1) * 4


def test_batch_larger_than_the_split_is_a_config_error(small, digits_data_dir):
    with pytest.raises(ConfigError, match="data.batch_size"):
        small.train_dataset(data_config(digits_data_dir, batch_size=128), seed=0)


def test_processes_read_disjoint_shards(small, digits_data_dir):
    c = data_config(digits_data_dir, batch_size=16, prefetch=0, normalize=False, shuffle=False)
    # 64 examples, 2 processes: each reads 32 with a per-process batch of 8, so 4 batches are one epoch.
    shards = [batch_keys(take(small, c, 4, process_index=i, process_count=2)) for i in range(2)]
    assert all(len(s) == 32 for s in shards)
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(source_keys(small.sources["train"]))


# ---------------------------------------------------------------------------------------------
# normalisation and augmentation


def test_normalised_train_inputs_have_zero_mean_unit_std(digits, digits_data_dir):
    # 1258 = 2 * 629: two unshuffled batches are exactly the train split.
    c = data_config(digits_data_dir, batch_size=629, prefetch=0, shuffle=False)
    inputs = np.concatenate([b["inputs"] for b in take(digits, c, 2)])
    assert inputs.shape == (1258, 8, 8, 1)
    assert abs(inputs.mean()) < 0.1
    assert abs(inputs.std() - 1.0) < 0.1
    raw = np.stack([r["image"] for r in source_records(digits.sources["train"])]).astype(np.float64) / 16
    np.testing.assert_allclose(inputs, (raw - DIGITS.mean) / DIGITS.std, rtol=1e-5, atol=1e-5)


def test_unnormalised_inputs_are_scaled_to_unit_range(small, digits_data_dir):
    (b,) = take(small, data_config(digits_data_dir, batch_size=64, prefetch=0, normalize=False), 1)
    assert b["inputs"].min() == 0.0 and b["inputs"].max() == 1.0


@pytest.mark.parametrize("augment", ["shift", "flip", "noise", "shift,flip,noise"])
def test_augmentation_is_deterministic_and_keeps_shapes(small, digits_data_dir, augment):
    c = data_config(digits_data_dir, batch_size=32, prefetch=0, normalize=False, shuffle=False, augment=augment)
    plain = take(small, data_config(digits_data_dir, batch_size=32, prefetch=0, normalize=False, shuffle=False), 2)
    first = take(small, c, 2, seed=5)
    assert_batches_equal(first, take(small, c, 2, seed=5))
    for a, p in zip(first, plain):
        assert a["inputs"].shape == p["inputs"].shape and a["inputs"].dtype == np.float32
        np.testing.assert_array_equal(a["targets"], p["targets"])  # labels untouched
        assert a["inputs"].min() >= 0.0 and a["inputs"].max() <= 1.0
    # It does change images, and a different seed changes them differently.
    assert not batches_equal(first, plain)
    assert not batches_equal(first, take(small, c, 2, seed=6))


def test_augment_functions_directly():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(8, 8, 1)).astype(np.float32)
    example = {"inputs": image, "targets": np.int32(3)}
    for names in [("shift",), ("flip",), ("noise",)]:
        out = transforms.augment(example, names, np.random.default_rng(1))
        again = transforms.augment(example, names, np.random.default_rng(1))
        np.testing.assert_array_equal(out["inputs"], again["inputs"])
        assert out["inputs"].shape == image.shape and out["inputs"].dtype == np.float32
        assert out["targets"] == 3
    # flip either mirrors the image left-right or leaves it as it is
    flips = [transforms.augment(example, ("flip",), np.random.default_rng(s))["inputs"] for s in range(20)]
    assert all(np.array_equal(f, image) or np.array_equal(f, image[:, ::-1]) for f in flips)
    assert any(np.array_equal(f, image[:, ::-1]) for f in flips) and any(np.array_equal(f, image) for f in flips)
    # shift moves the image by at most one pixel (8 // 8) on each axis, filling with zeros
    shifted = transforms.augment(example, ("shift",), np.random.default_rng(2))["inputs"]
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    assert any(np.array_equal(shifted, padded[dy : dy + 8, dx : dx + 8]) for dy in range(3) for dx in range(3))


@pytest.mark.parametrize("augment", ["rotate", "shift,zoom", "Shift"])
def test_unknown_augmentation_is_a_config_error(small, digits_data_dir, augment):
    with pytest.raises(ConfigError, match="data.augment"):
        small.train_dataset(data_config(digits_data_dir, batch_size=8, augment=augment), seed=0)


def test_parse_augmentations_allows_spaces_and_empty():
    assert transforms.parse_augmentations("") == ()
    assert transforms.parse_augmentations(" shift , noise ") == ("shift", "noise")


# ---------------------------------------------------------------------------------------------
# eval batches


def _eval(data, data_dir, role: str, eval_batch: int, process_index: int = 0, process_count: int = 1, **fields):
    c = data_config(data_dir, eval_batch_size=eval_batch, **fields)
    return list(data.eval_batches(role, c, process_index, process_count))


def _masked_keys(batches) -> list[bytes]:
    return [example_key(x, t) for b in batches for x, t, m in zip(b["inputs"], b["targets"], b["mask"]) if m]


@pytest.mark.parametrize("eval_batch", [269, 50, 1000, 1])
def test_eval_batches_yield_every_example_once(digits, digits_data_dir, eval_batch):
    n = 269
    batches = _eval(digits, digits_data_dir, "val", eval_batch, normalize=False)
    assert len(batches) == -(-n // eval_batch)
    for b in batches:
        assert b["inputs"].shape == (eval_batch, 8, 8, 1) and b["inputs"].dtype == np.float32
        assert b["targets"].shape == (eval_batch,) and b["mask"].shape == (eval_batch,) and b["mask"].dtype == bool
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == n
    assert mask[:n].all() and not mask[n:].any()  # padding only at the end
    assert _masked_keys(batches) == source_keys(digits.sources["val"])  # all, once, in order
    inputs = np.concatenate([b["inputs"] for b in batches])
    targets = np.concatenate([b["targets"] for b in batches])
    assert not inputs[n:].any() and not targets[n:].any()  # padded rows are zeros


@pytest.mark.parametrize("eval_batch", [50, 1000])
def test_eval_padding_is_zero_with_normalisation(digits, digits_data_dir, eval_batch):
    batches = _eval(digits, digits_data_dir, "val", eval_batch, normalize=True)
    inputs = np.concatenate([b["inputs"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert not inputs[~mask].any()
    # ... and the real rows are normalised like training inputs.
    raw = np.stack([r["image"] for r in source_records(digits.sources["val"])]).astype(np.float64) / 16
    np.testing.assert_allclose(inputs[mask], (raw - DIGITS.mean) / DIGITS.std, rtol=1e-5, atol=1e-5)


def test_eval_batch_size_defaults_to_the_training_batch(digits, digits_data_dir):
    batches = _eval(digits, digits_data_dir, "test", 0, batch_size=64)
    assert [len(b["mask"]) for b in batches] == [64] * 5  # 270 examples
    assert sum(int(b["mask"].sum()) for b in batches) == 270


@pytest.mark.parametrize("eval_batch", [50, 1000, 2])
def test_eval_batches_over_two_processes(digits, digits_data_dir, eval_batch):
    per_process = [_eval(digits, digits_data_dir, "val", eval_batch, i, 2, normalize=False) for i in range(2)]
    assert len(per_process[0]) == len(per_process[1])  # collectives stay in lockstep
    for batches in per_process:
        assert all(b["mask"].shape == (eval_batch // 2,) for b in batches)
    keys = _masked_keys(per_process[0]) + _masked_keys(per_process[1])
    assert len(keys) == 269
    assert sorted(keys) == sorted(source_keys(digits.sources["val"]))  # the whole split, each once


def test_eval_batch_not_divisible_by_processes_is_a_config_error(digits, digits_data_dir):
    with pytest.raises(ConfigError, match="data.eval_batch_size"):
        _eval(digits, digits_data_dir, "val", 269, 0, 2)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST files


def test_missing_fashion_mnist_says_make_data(monkeypatch, tmp_path):
    monkeypatch.setenv("JTRAIN_FASHION_MNIST_DIR", str(tmp_path))
    monkeypatch.setattr(builders, "FASHION_MNIST_DIRS", ())
    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        builders.find_fashion_mnist_dir()
    assert time.perf_counter() - start < 1.0
    assert "make data" in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_fashion_mnist_dir_from_env(monkeypatch, tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv("JTRAIN_FASHION_MNIST_DIR", str(tmp_path))
    monkeypatch.setattr(builders, "FASHION_MNIST_DIRS", ())
    assert builders.find_fashion_mnist_dir() == str(tmp_path)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("shape", [(5, 3, 4), (7,)])
def test_read_idx_round_trips(tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    path = tmp_path / "x-idx-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx_bytes(array))
    back = builders.read_idx(str(path))
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    plain = tmp_path / "x-idx-ubyte"
    plain.write_bytes(_idx_bytes(array))
    np.testing.assert_array_equal(builders.read_idx(str(plain)), array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    truncated = tmp_path / "t.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(_idx_bytes(array)[:-7])
    with pytest.raises(DataError, match="truncated"):
        builders.read_idx(str(truncated))
    foreign = tmp_path / "f.gz"
    with gzip.open(foreign, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 2) + b"\0" * 8)  # float32 IDX
    with pytest.raises(DataError, match="IDX"):
        builders.read_idx(str(foreign))


def test_preparing_a_local_dataset_says_what_happens_in_one_line(tmp_path, capfd):
    from jtrain.data import registry

    registry.prepare("digits", str(tmp_path))
    out, err = capfd.readouterr()
    assert "Downloading" not in out + err and "Unknown size" not in out + err
    assert out.strip().splitlines()[-1].startswith("preparing digits: 1,797 examples -> ")
