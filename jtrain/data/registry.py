"""Datasets jtrain knows by name: which builder, default splits, and what a model needs to know about them.

A builder's prepared files live in a folder named by a fingerprint of its input files' bytes (each builder's
`input_files()`), so changed inputs under the same names are prepared again instead of served stale; the
decoded arrays (jtrain/data/decoded.py) and tokenizers (jtrain/data/tokenize.py) saved beside them follow.
Other names reach other readers through jtrain/data/kinds.py (`package.module:factory` for your own source).
"""

from __future__ import annotations

import difflib
import hashlib
import os

from jtrain.data import builders, shakespeare, shakespeare_genre
from jtrain.data.source import DatasetSpec
from jtrain.errors import DataError


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
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        where = "config key 'data.dir'" if configured else ("JTRAIN_DATA_DIR" if os.environ.get("JTRAIN_DATA_DIR")
                                                            else "the default data directory")
        raise DataError(f"{path}: {where} names a file, not a directory")
    return path


def fingerprint(paths: list[str]) -> str:
    """sha256 over the files' names, sizes and bytes: what the prepared data was built from."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(f"{os.path.basename(path)}\0{os.path.getsize(path)}\0".encode())
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as e:
            raise DataError(f"{path}: cannot read a dataset input: {e.strerror or e}") from e
    return digest.hexdigest()


def builder(name: str, configured_dir: str = ""):
    """The dataset's TFDS builder, in the data dir's folder for the current content of its input files."""
    cls = get_spec(name).builder
    return cls(data_dir=os.path.join(data_dir(configured_dir), f"inputs-{fingerprint(cls.input_files())[:16]}"),
               file_format="array_record")


def prepared_builder(name: str, configured_dir: str = ""):
    """builder(), its array_record files built first if they are not yet (quick for the local datasets)."""
    b = builder(name, configured_dir)
    if not b.is_prepared():
        import contextlib
        import io

        # TFDS speaks of downloads of unknown size; nothing is downloaded here, so jtrain says what happens.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            b.download_and_prepare()
        # A builder's split info is read when it is constructed: reopen it over the files just written.
        b = type(b)(data_dir=b.data_dir_root, file_format="array_record")
        examples = sum(split.num_examples for split in b.info.splits.values())
        print(f"preparing {name}: {examples:,} examples -> {b.data_dir}")
    return b


def prepare(name: str, configured_dir: str = "") -> str:
    """Builds the dataset's array_record files once; later calls find them and return at once."""
    return prepared_builder(name, configured_dir).data_dir


def split_source(b, name: str, split: str, role: str = ""):
    """Random-access source of one split of a prepared builder (TFDS slicing such as `train[:70%]` allowed);
    `role` (train / val / test) names the config key a bad split came from."""
    try:
        return b.as_data_source(split=split)
    except (ValueError, KeyError) as e:
        have = ", ".join(f"{k} ({v.num_examples:,} examples)" for k, v in b.info.splits.items())
        where = f"config key 'data.splits.{role}': " if role else ""
        raise DataError(f"{where}{split!r} is no split of {name}, which has {have}; a slice such as "
                        f"'{next(iter(b.info.splits), 'train')}[:80%]' takes part of one "
                        f"({str(e).splitlines()[0]})") from e


def data_source(name: str, split: str, configured_dir: str = "", role: str = ""):
    """Random-access source of one split, the dataset prepared first if need be."""
    return split_source(prepared_builder(name, configured_dir), name, split, role)
