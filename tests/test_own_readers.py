"""Readers for your own data: an image folder (real PNG / JPEG files) and Hugging Face datasets (save_to_disk,
parquet, an image dataset, an unknown Hub name without network)."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_wine

from jtrain.data import hf, images
from jtrain.errors import DataError

PER_CLASS = 30


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 0..255, PER_CLASS of each class in their original order."""
    d = load_digits()
    pixels = np.round(d.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    keep = np.concatenate([np.flatnonzero(d.target == c)[:PER_CLASS] for c in range(10)])
    return pixels[keep], d.target[keep]


def _write_digits(root, pixels, targets, suffix=".png") -> None:
    for i, (img, c) in enumerate(zip(pixels, targets)):
        os.makedirs(root / str(c), exist_ok=True)
        Image.fromarray(img, mode="L").save(root / str(c) / f"{i:04d}{suffix}")


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("own") / "digits"
    pixels, targets = _digits()
    _write_digits(root, pixels, targets)
    return root, pixels, targets


def test_png_folder_reads_back_the_pixels_labels_and_sorted_classes(digits_folder):
    root, pixels, targets = digits_folder
    assert images.layout(str(root)) == {"all": str(root)}
    x, y, names = images.read_folder(str(root), None, (8, 8), 1)
    assert names == tuple(str(c) for c in range(10))
    assert x.dtype == np.uint8 and x.shape == (10 * PER_CLASS, 8, 8, 1)
    assert y.dtype == np.int32
    # Written in class order with sorted names, so the order read back is the order written.
    np.testing.assert_array_equal(x[..., 0], pixels)
    np.testing.assert_array_equal(y, targets)
    # channels=0: the PNGs are grayscale, so one channel.
    assert images.read_folder(str(root), None, (8, 8), 0)[0].shape[-1] == 1
    files = images.files(str(root))
    assert len(files) == 10 * PER_CLASS and files == sorted(files)


def test_resizing_and_rgb_conversion(digits_folder):
    root, pixels, _ = digits_folder
    x, _, _ = images.read_folder(str(root), None, (16, 12), 3)
    assert x.shape == (10 * PER_CLASS, 16, 12, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # gray replicated into RGB
    # Bilinear upsampling keeps the image: block means come back close to the 8x8 original.
    up = images.read_folder(str(root), None, (16, 16), 1)[0][..., 0].astype(np.float64)
    assert np.abs(up.reshape(-1, 8, 2, 8, 2).mean((2, 4)) - pixels).mean() < 20
    one = images.read_image(images.files(str(root))[0], (8, 8), 1)
    np.testing.assert_array_equal(one[..., 0], pixels[0])


def test_jpeg_and_hidden_and_other_files(tmp_path):
    pixels, targets = _digits()
    keep = np.concatenate([np.flatnonzero(targets == c)[:3] for c in (0, 1)])
    root = tmp_path / "jpg"
    _write_digits(root, pixels[keep], targets[keep], suffix=".jpg")
    (root / "0" / ".hidden.png").write_bytes(b"not an image")
    (root / "0" / "notes.txt").write_text("skipped")
    os.makedirs(root / ".cache")
    x, y, names = images.read_folder(str(root), None, (8, 8), 1)
    assert names == ("0", "1") and x.shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    assert np.abs(x[..., 0].astype(int) - pixels[keep]).mean() < 12  # lossy, but the same digits
    assert len(images.files(str(root))) == 6


def test_modes_are_converted(tmp_path):
    root = tmp_path / "modes"
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    wide = gray.astype(np.uint16) * 257
    os.makedirs(root / "a")
    Image.fromarray(wide).save(root / "a" / "sixteen.png")  # opens as a 16-bit mode
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:4, :, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(root / "a" / "alpha.png")
    Image.fromarray(gray).convert("F").save(root / "a" / "float.tiff")  # not an image suffix: skipped
    np.testing.assert_array_equal(images.read_image(str(root / "a" / "sixteen.png"), (8, 8), 1)[..., 0], gray)
    assert images.read_image(str(root / "a" / "sixteen.png"), (8, 8), 0).shape == (8, 8, 1)
    rgb = images.read_image(str(root / "a" / "alpha.png"), (8, 8), 0)
    assert rgb.shape == (8, 8, 3)
    assert (rgb[:4] == 200).all() and (rgb[4:] == 0).all()  # transparent pixels are black
    Image.fromarray(gray).convert("F").save(root / "a" / "float.png.tiff")
    os.rename(root / "a" / "float.png.tiff", root / "a" / "float.png")  # a TIFF of floats behind a .png name
    with pytest.raises(DataError, match=r"float\.png: image mode 'F'"):
        images.read_image(str(root / "a" / "float.png"), (8, 8), 1)


def test_train_val_test_layout(tmp_path):
    pixels, targets = _digits()
    root = tmp_path / "split"
    for role, sl in (("train", slice(0, 10)), ("val", slice(10, 20)), ("test", slice(20, 30))):
        keep = np.concatenate([np.flatnonzero(targets == c)[sl] for c in (3, 5, 7)])
        _write_digits(root / role, pixels[keep], targets[keep])
    roles = images.layout(str(root))
    assert roles == {r: str(root / r) for r in ("train", "val", "test")}
    x, y, names = images.read_folder(roles["train"], None, (8, 8), 1)
    assert names == ("3", "5", "7") and x.shape == (30, 8, 8, 1)
    # val without class 5's folder still codes 7 as the train split does.
    import shutil

    shutil.rmtree(root / "val" / "5")
    xv, yv, namesv = images.read_folder(roles["val"], names, (8, 8), 1)
    assert namesv == names and xv.shape == (20, 8, 8, 1)
    np.testing.assert_array_equal(yv, [0] * 10 + [2] * 10)


def test_image_folder_errors_are_one_line(tmp_path, digits_folder):
    root, pixels, targets = digits_folder

    def error(fn, *args) -> str:
        with pytest.raises(DataError) as info:
            fn(*args)
        message = str(info.value)
        assert "\n" not in message
        return message

    assert "no such image folder" in error(images.layout, str(tmp_path / "missing"))
    (tmp_path / "file.png").write_bytes(b"x")
    assert "not a folder" in error(images.layout, str(tmp_path / "file.png"))

    one = tmp_path / "one"
    _write_digits(one, pixels[:2], np.zeros(2, int))
    message = error(images.layout, str(one))
    assert str(one) in message and "only one class" in message and "at least 2" in message
    assert "only one class" in error(images.read_folder, str(one), None, (8, 8), 1)

    empty = tmp_path / "flat"
    os.makedirs(empty)
    (empty / "a.png").write_bytes(b"x")
    assert "no class subfolders" in error(images.layout, str(empty))

    corrupt = tmp_path / "corrupt"
    _write_digits(corrupt, pixels[:4], np.array([0, 0, 1, 1]))
    (corrupt / "1" / "x.png").write_bytes(os.urandom(200))
    message = error(images.read_folder, str(corrupt), None, (8, 8), 1)
    assert str(corrupt / "1" / "x.png") in message and "not a readable image" in message
    (corrupt / "1" / "x.png").write_bytes((corrupt / "1" / "0002.png").read_bytes()[:40])  # truncated PNG
    assert "x.png" in error(images.read_folder, str(corrupt), None, (8, 8), 1)

    split = tmp_path / "split"
    _write_digits(split / "train", pixels[:4], np.array([0, 0, 1, 1]))
    _write_digits(split / "val", pixels[:3], np.array([0, 1, 2]))
    val_classes = images.layout(str(split))["val"]
    message = error(images.read_folder, val_classes, ("0", "1"), (8, 8), 1)
    assert "'2'" in message and "training classes" in message

    no_train = tmp_path / "no_train"
    _write_digits(no_train / "val", pixels[:2], np.array([0, 1]))
    assert "no train folder" in error(images.layout, str(no_train))


@pytest.fixture(scope="module")
def wine_frames():
    data = load_wine(as_frame=True).frame
    train = data.iloc[::2].reset_index(drop=True)
    test = data.iloc[1::2].reset_index(drop=True)
    return train, test


def test_hf_save_to_disk_round_trip(tmp_path, wine_frames):
    import datasets

    train, test = wine_frames
    path = tmp_path / "wine_hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(train, preserve_index=False),
                          "validation": datasets.Dataset.from_pandas(test, preserve_index=False)}).save_to_disk(path)
    dsdict = hf.load(str(path))
    assert hf.splits(dsdict) == {"train": "train", "val": "validation"}
    frames = hf.to_frames(dsdict)
    assert list(frames) == ["train", "val"]
    pd.testing.assert_frame_equal(frames["train"], train)
    pd.testing.assert_frame_equal(frames["val"], test)
    assert set(hf.read(str(path))) == {"train", "val"}

    # A single saved Dataset is the train split.
    single = tmp_path / "single"
    datasets.Dataset.from_pandas(test, preserve_index=False).save_to_disk(single)
    pd.testing.assert_frame_equal(hf.read(str(single))["train"], test)


def test_hf_parquet_file_and_folder(tmp_path, wine_frames):
    train, test = wine_frames
    train.to_parquet(tmp_path / "wine.parquet")
    pd.testing.assert_frame_equal(hf.read(str(tmp_path / "wine.parquet"))["train"], train)
    folder = tmp_path / "wine_parquet"
    os.makedirs(folder)
    train.to_parquet(folder / "train.parquet")
    test.to_parquet(folder / "test.parquet")
    frames = hf.read(str(folder))
    assert list(frames) == ["train", "test"]
    pd.testing.assert_frame_equal(frames["test"], test)


def test_hf_image_dataset(tmp_path):
    import datasets

    pixels, targets = _digits()
    names = [f"digit{c}" for c in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})

    def part(sl):
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(p, mode="L") for p in pixels[sl]], "label": targets[sl].tolist()},
            features=features)

    path = tmp_path / "digits_hf"
    datasets.DatasetDict({"train": part(slice(0, 200)), "test": part(slice(200, None))}).save_to_disk(path)
    dsdict = hf.load(str(path))
    train = dsdict["train"]
    assert hf.image_column(train) == "image" and hf.label_column(train) == "label"
    assert hf.label_names(train, "label") == tuple(names)
    x, y = hf.to_images(train, "image", "label", (8, 8), 1)
    assert x.dtype == np.uint8 and x.shape == (200, 8, 8, 1) and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], pixels[:200])
    np.testing.assert_array_equal(y, targets[:200])
    assert hf.to_images(train, "image", "label", (16, 16), 3)[0].shape == (200, 16, 16, 3)

    out = hf.read(str(path))  # image size from the first image, channels inferred
    assert list(out) == ["train", "test"]
    xt, yt, class_names = out["test"]
    assert class_names == tuple(names) and xt.shape == (len(pixels) - 200, 8, 8, 1)
    np.testing.assert_array_equal(xt[..., 0], pixels[200:])
    np.testing.assert_array_equal(yt, targets[200:])

    with pytest.raises(DataError, match="no column 'lbl'"):
        hf.to_images(train, "image", "lbl", (8, 8), 1)


def test_hf_errors_are_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test is of the Hub request, not of the cache
    # Tests reach nothing but loopback: a closed local port stands in for a Hub out of reach.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    name = "jtrain-nobody/no-such-dataset-4f1c"
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        hf.load(name)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 10, elapsed
    assert "\n" not in message and name in message and "neither a local folder or file" in message
    assert "save_to_disk" in message  # how to bring the dataset here

    with pytest.raises(DataError, match="no such file or folder"):
        hf.load(str(tmp_path / "nowhere" / "data.parquet"))
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"not a \.parquet or \.arrow file"):
        hf.load(str(tmp_path / "data.csv"))
