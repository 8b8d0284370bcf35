"""TFDS builders for data that lives on this machine, written as array_record without TensorFlow.

Only `tfds.features.Tensor` and `ClassLabel` features are used: those encode and decode with NumPy alone,
so `download_and_prepare()` and `as_data_source()` never import TensorFlow.
"""

from __future__ import annotations

import gzip
import importlib.util
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

    @classmethod
    def input_files(cls) -> list[str]:
        """What the records are made from: scikit-learn's data file (registry.fingerprint)."""
        return sklearn_files("digits.csv.gz")

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



class Digits28(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's digits drawn at Fashion-MNIST's size: each 8x8 image upsampled (bilinear) to 24x24 and padded
    with 2 background pixels to 28x28, grey levels 0..16 stretched to 0..255, 10 classes.

    Same records, same order as `digits`, so the same split specs pick the same examples. The point of the
    size is transfer: a CNN trained on 28x28 Fashion-MNIST has a dense layer over a 7x7 feature map, and only
    inputs of that size reuse it (experiments/fashion_transfer_cnn.py reports how well that transfers).
    """

    VERSION = tfds.core.Version("1.0.0")

    @classmethod
    def input_files(cls) -> list[str]:
        """The same file as `digits`."""
        return Digits.input_files()

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCI ML hand-written digits (scikit-learn) upsampled to 24x24, padded to 28x28, 0..255.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        up = bilinear_matrix(8, 24)  # (24, 8)
        images = np.einsum("ij,njk,lk->nil", up, digits.images, up)  # (N, 24, 24), values 0..16
        images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # (N, 28, 28)
        images = np.round(images * (255 / 16)).clip(0, 255).astype(np.uint8)
        for index, (image, label) in enumerate(zip(images, digits.target)):
            yield index, {"image": image[..., None], "label": int(label)}


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation with pixel centres aligned (as jax.image.resize
    'linear' upsamples): M @ image @ M.T resizes an (n_in, n_in) image to (n_out, n_out)."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5  # output pixel centres in input coordinates
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m

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

    @classmethod
    def input_files(cls) -> list[str]:
        """scikit-learn's data files."""
        return sklearn_files("diabetes_data_raw.csv.gz", "diabetes_target.csv.gz")

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

    @classmethod
    def input_files(cls) -> list[str]:
        """scikit-learn's data file."""
        return sklearn_files("breast_cancer.csv")

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

    @classmethod
    def input_files(cls) -> list[str]:
        """The four IDX files, wherever find_fashion_mnist_dir() finds them."""
        return [os.path.join(find_fashion_mnist_dir(), f"{prefix}-{kind}-idx{dims}-ubyte.gz")
                for prefix in ("train", "t10k") for kind, dims in (("images", 3), ("labels", 1))]

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



class _FashionMnistSubset(FashionMnistLocal):
    """Fashion-MNIST restricted to CLASSES (indices into FASHION_MNIST_CLASSES), relabelled 0..len-1 in that order:
    two disjoint halves make a transfer task, a CNN trained on one and fine-tuned on the other."""

    CLASSES: tuple[int, ...] = ()

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST, classes " + ", ".join(FASHION_MNIST_CLASSES[c] for c in self.CLASSES),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=[FASHION_MNIST_CLASSES[c] for c in self.CLASSES]),
            }),
            supervised_keys=("image", "label"),
        )

    def _generate_examples(self, root: str, prefix: str):
        new_label = {c: i for i, c in enumerate(self.CLASSES)}
        for index, example in super()._generate_examples(root, prefix):
            if example["label"] in new_label:
                yield index, {**example, "label": new_label[example["label"]]}


class FashionMnistClothing(_FashionMnistSubset):
    """The six garment classes: t-shirt/top, trouser, pullover, dress, coat, shirt (36,000 + 6,000 images)."""

    CLASSES = (0, 1, 2, 3, 4, 6)


class FashionMnistAccessories(_FashionMnistSubset):
    """The four others: sandal, sneaker, bag, ankle boot (24,000 + 4,000 images)."""

    CLASSES = (5, 7, 8, 9)

def sklearn_files(*names: str) -> list[str]:
    """Paths of data files that scikit-learn ships in its wheel (sklearn/datasets/data), found without importing
    scikit-learn (seconds of every run's start-up)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-learn is not installed; it ships the digits, diabetes and breast cancer data")
    root = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    return [os.path.join(root, name) for name in names]


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
