"""TFDS builders for data that lives on this machine, written as array_record without TensorFlow.

Only `tfds.features.Tensor` and `ClassLabel` features are used: those encode and decode with NumPy alone,
so `download_and_prepare()` and `as_data_source()` never import TensorFlow.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import tensorflow_datasets as tfds

from jtrain.errors import DataError

# Where Debian's `dataset-fashion-mnist` package puts the IDX files; JTRAIN_FASHION_MNIST_DIR overrides it.
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's bundled handwritten digits: 1,797 8x8 images, pixel values 0..16, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCI ML hand-written digits (8x8, 16 grey levels) as shipped by scikit-learn.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data is inside the scikit-learn wheel
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        for index, (image, label) in enumerate(zip(digits.images, digits.target)):
            yield index, {"image": image.astype(np.uint8)[..., None], "label": int(label)}


class Diabetes(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's diabetes regression data: 442 patients, 10 baseline features (age, sex, BMI, blood pressure,
    six serum measurements), target a measure of disease progression one year later (25..346).

    The features are scikit-learn's scaled copy (each column centred, unit L2 norm); the pipeline standardises
    them again from the training split anyway. Records keep scikit-learn's row order (no TFDS shuffling), so a
    split such as train[85%:] is the same rows as slicing scikit-learn's arrays: with only 442 rows the split
    matters (ordinary least squares scores test R^2 0.32 to 0.59 over random 70/15/15 splits), and this makes
    jtrain's numbers comparable with a scikit-learn baseline on the same rows.
    """

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Diabetes (Efron et al. 2004) as shipped by scikit-learn.",
            features=tfds.features.FeaturesDict({
                "features": tfds.features.Tensor(shape=(10,), dtype=np.float32),
                "target": tfds.features.Tensor(shape=(), dtype=np.float32),
            }),
            supervised_keys=("features", "target"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # inside the scikit-learn wheel
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from sklearn.datasets import load_diabetes

        data = load_diabetes()
        for index, (x, y) in enumerate(zip(data.data, data.target)):
            yield index, {"features": x.astype(np.float32), "target": np.float32(y)}


BREAST_CANCER_CLASSES = ("malignant", "benign")  # scikit-learn's encoding: label 1 = benign


class BreastCancer(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's Wisconsin diagnostic breast cancer data: 569 tumours, 30 float features computed from cell
    nuclei images, label malignant (0) or benign (1)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Breast Cancer Wisconsin (Diagnostic) as shipped by scikit-learn.",
            features=tfds.features.FeaturesDict({
                "features": tfds.features.Tensor(shape=(30,), dtype=np.float32),
                "label": tfds.features.ClassLabel(names=BREAST_CANCER_CLASSES),
            }),
            supervised_keys=("features", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        for index, (x, y) in enumerate(zip(data.data, data.target)):
            yield index, {"features": x.astype(np.float32), "label": int(y)}


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Zalando, MIT) from local IDX files: 60,000 train + 10,000 test 28x28 grey images.

    The same files TFDS's own `fashion_mnist` builder downloads, read from disk so nothing is fetched.
    """

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST built from local IDX files.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=FASHION_MNIST_CLASSES),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        root = find_fashion_mnist_dir()
        return {
            "train": self._generate_examples(root, "train"),
            "test": self._generate_examples(root, "t10k"),
        }

    def _generate_examples(self, root: str, prefix: str):
        images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))  # (N, 28, 28) uint8
        labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))  # (N,) uint8
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image[..., None], "label": int(label)}


def find_fashion_mnist_dir() -> str:
    candidates = [os.environ["JTRAIN_FASHION_MNIST_DIR"]] if os.environ.get("JTRAIN_FASHION_MNIST_DIR") else []
    candidates += FASHION_MNIST_DIRS
    for root in candidates:
        if os.path.isfile(os.path.join(root, "train-images-idx3-ubyte.gz")):
            return root
    raise DataError(
        "Fashion-MNIST IDX files not found in " + ", ".join(candidates)
        + ": run `make data` (installs Debian's dataset-fashion-mnist) or set JTRAIN_FASHION_MNIST_DIR"
    )


def read_idx(path: str) -> np.ndarray:
    """Reads a (gzipped) IDX file: a big-endian header of dimension sizes, then unsigned bytes."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise DataError(f"{path}: not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated, expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)
