"""Datasets jtrain knows by name: which builder, default splits, and what a model needs to know about them."""

from __future__ import annotations

import dataclasses
import difflib
import os

import tensorflow_datasets as tfds

from jtrain.data import builders, shakespeare, shakespeare_genre
from jtrain.errors import DataError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    builder: type[tfds.core.GeneratorBasedBuilder]
    splits: dict[str, str]  # default TFDS split spec per role: train / val / test
    num_classes: int  # 0 for regression targets
    input_shape: tuple[int, ...]  # one example: (H, W, C) for images, (D,) for tabular features
    input_key: str  # feature holding the model input
    target_key: str  # feature holding the label (or regression target)
    scale: float  # raw value -> [0, 1]
    # After scaling, over the training images; None = per feature, from the training split when the data is
    # loaded (tabular features have different units, and the statistics must not see the val/test rows).
    mean: float | None
    std: float | None
    class_names: tuple[str, ...] = ()
    target_dtype: str = "int32"  # int32 class labels, or float32 regression targets
    tokenizer: str = ""  # text datasets: "char" or "bpe" (jtrain/data/tokenize.py); "" = not text
    examples: str = ""  # post-training text: "sft" (prompt, response) or "preference" (prompt, chosen, rejected); "" = a token stream

    @property
    def is_text(self) -> bool:
        return bool(self.tokenizer)

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


def _shakespeare_text(name: str, tokenizer: str, examples: str = "") -> DatasetSpec:
    """A view of the Shakespeare TFDS dataset (split by play). num_classes (the vocabulary) and input_shape
    (data.seq_len) are filled in when the data is loaded (jtrain/data/text.py)."""
    return DatasetSpec(name=name, builder=shakespeare.Shakespeare, splits={"train": "train", "val": "val", "test": "test"},
                       num_classes=0, input_shape=(0,), input_key="text", target_key="text", scale=1.0, mean=None,
                       std=None, tokenizer=tokenizer, examples=examples)


def _fashion_mnist_half(name: str, builder, mean: float, std: float) -> DatasetSpec:
    """Fashion-MNIST restricted to `builder.CLASSES` (jtrain/data/builders.py), with its own pixel statistics."""
    return DatasetSpec(name=name, builder=builder, splits={"train": "train[:90%]", "val": "train[90%:]", "test": "test"},
                       num_classes=len(builder.CLASSES), input_shape=(28, 28, 1), input_key="image", target_key="label",
                       scale=1 / 255, mean=mean, std=std,
                       class_names=tuple(builders.FASHION_MNIST_CLASSES[c] for c in builder.CLASSES))


DATASETS = {
    "digits": DatasetSpec(
        name="digits",
        builder=builders.Digits,
        splits={"train": "train[:70%]", "val": "train[70%:85%]", "test": "train[85%:]"},
        num_classes=10,
        input_shape=(8, 8, 1),
        input_key="image",
        target_key="label",
        scale=1 / 16,
        mean=0.3053,
        std=0.3760,
        class_names=tuple(str(i) for i in range(10)),
    ),
    # The same digits at Fashion-MNIST's 28x28 (upsampled, padded), for transfer from a Fashion-MNIST CNN.
    "digits28": DatasetSpec(
        name="digits28",
        builder=builders.Digits28,
        splits={"train": "train[:70%]", "val": "train[70%:85%]", "test": "train[85%:]"},
        num_classes=10,
        input_shape=(28, 28, 1),
        input_key="image",
        target_key="label",
        scale=1 / 255,
        mean=0.2249,
        std=0.3138,
        class_names=tuple(str(i) for i in range(10)),
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        builder=builders.FashionMnistLocal,
        splits={"train": "train[:90%]", "val": "train[90%:]", "test": "test"},
        num_classes=10,
        input_shape=(28, 28, 1),
        input_key="image",
        target_key="label",
        scale=1 / 255,
        mean=0.2860,
        std=0.3530,
        class_names=builders.FASHION_MNIST_CLASSES,
    ),
    # Fashion-MNIST in two disjoint halves, for transfer: garments (6 classes) and footwear + bags (4 classes).
    "fashion_mnist_clothing": _fashion_mnist_half("fashion_mnist_clothing", builders.FashionMnistClothing, 0.3169, 0.3588),
    "fashion_mnist_accessories": _fashion_mnist_half("fashion_mnist_accessories", builders.FashionMnistAccessories,
                                                     0.2398, 0.3389),
    # Tabular data from scikit-learn: per-feature standardisation from the training split.
    "diabetes": DatasetSpec(
        name="diabetes",
        builder=builders.Diabetes,
        splits={"train": "train[:70%]", "val": "train[70%:85%]", "test": "train[85%:]"},
        num_classes=0,
        input_shape=(10,),
        input_key="features",
        target_key="target",
        scale=1.0,
        mean=None,
        std=None,
        target_dtype="float32",
    ),
    "breast_cancer": DatasetSpec(
        name="breast_cancer",
        builder=builders.BreastCancer,
        splits={"train": "train[:70%]", "val": "train[70%:85%]", "test": "train[85%:]"},
        num_classes=2,
        input_shape=(30,),
        input_key="features",
        target_key="label",
        scale=1.0,
        mean=None,
        std=None,
        class_names=builders.BREAST_CANCER_CLASSES,
    ),
    # Text for language models (jtrain/data/text.py): one TFDS dataset, split by play, two tokenizations.
    "shakespeare_char": _shakespeare_text("shakespeare_char", "char"),
    "shakespeare_bpe": _shakespeare_text("shakespeare_bpe", "bpe"),
    # Post-training pairs from the same plays and the same character tokenizer as shakespeare_char, so a
    # shakespeare_char checkpoint fits (jtrain/data/sft.py): prompt = a line, response = the next line of the
    # speech; preference pairs reject a line of about the same length from another play of the same split.
    "shakespeare_sft": _shakespeare_text("shakespeare_sft", "char", examples="sft"),
    "shakespeare_pref": _shakespeare_text("shakespeare_pref", "char", examples="preference"),
    # Labelled passages (jtrain/data/shakespeare_genre.py): MiniLM WordPiece ids, held out by passage.
    "shakespeare_genre": DatasetSpec(
        name="shakespeare_genre",
        builder=shakespeare_genre.ShakespeareGenre,
        splits={"train": "train[:80%]", "val": "train[80%:90%]", "test": "train[90%:]"},
        num_classes=len(shakespeare_genre.GENRES),
        input_shape=(shakespeare_genre.SEQ_LEN,),
        input_key="tokens",
        target_key="genre",
        scale=1.0,
        mean=0.0,  # token ids are not standardised: mean 0, std 1 leaves them as they are
        std=1.0,
        class_names=shakespeare_genre.GENRES,
    ),
}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown dataset data.name={name!r}{hint}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def data_dir(configured: str) -> str:
    """data.dir, else $JTRAIN_DATA_DIR, else ~/.cache/jtrain/tensorflow_datasets."""
    path = configured or os.environ.get("JTRAIN_DATA_DIR") or "~/.cache/jtrain/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(path))


def builder(name: str, configured_dir: str = "") -> tfds.core.GeneratorBasedBuilder:
    spec = get_spec(name)
    return spec.builder(data_dir=data_dir(configured_dir), file_format="array_record")


def prepare(name: str, configured_dir: str = "") -> str:
    """Builds the dataset's array_record files once; later calls find them and return at once."""
    b = builder(name, configured_dir)
    if not b.is_prepared():
        b.download_and_prepare()
    return b.data_dir


def data_source(name: str, split: str, configured_dir: str = ""):
    """Random-access source of one split (TFDS slicing such as `train[:70%]` allowed)."""
    b = builder(name, configured_dir)
    if not b.is_prepared():
        # Preparing is quick for the local datasets, so do it rather than fail; then reopen, since a
        # builder's split info is read when it is constructed.
        prepare(name, configured_dir)
        b = builder(name, configured_dir)
    try:
        return b.as_data_source(split=split)
    except (ValueError, KeyError) as e:
        raise DataError(f"data split {split!r} of {name}: {str(e).splitlines()[0]}") from e
