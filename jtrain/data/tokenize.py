"""Tokenizers for text datasets, built once from the corpus and saved beside the prepared dataset.

    char   one token per character; the vocabulary is the corpus's character set (as nanoGPT builds it: the set
           says nothing about the held-out text beyond which characters exist, and no <unk> is needed)
    bpe    byte-level BPE trained with the `tokenizers` package on the training split only

Both reserve id 0 for the end-of-document token, which separates documents in a packed token stream.
A pretrained model's own `tokenizer.json` (`data.tokenizer`, `HFTokenizer`) keeps its ids; its end-of-text token
(from tokenizer_config.json or config.json beside it) separates documents instead.
`Tokenizer.token_chars` (V,) is the number of characters each token stands for (the end-of-document token
counts as one, like the newline it replaces), so bits per character come out exact over a split.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from jtrain.errors import DataError

EOS = "<|endoftext|>"
KINDS = ("char", "bpe")
BPE_VOCAB_SIZE = 1024  # small enough for a CPU-sized model, large enough to merge common words


class Tokenizer:
    """encode(str) -> (N,) int32, decode(ids) -> str. Subclasses hold the vocabulary."""

    kind = ""
    vocab_size = 0
    eos_id = 0  # the end-of-document token
    token_chars: np.ndarray  # (V,) characters per token

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """One stream: every document followed by the end-of-document token."""
        parts = []
        for text in texts:
            parts += [self.encode(text), np.full((1,), self.eos_id, np.int32)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.vocab_size = len(chars) + 1
        # Characters live in a code-point lookup table: encoding a whole corpus is one NumPy gather.
        self._lookup = np.full(max(map(ord, chars), default=0) + 1, -1, np.int32)
        self._lookup[[ord(c) for c in chars]] = np.arange(1, len(chars) + 1, dtype=np.int32)
        self.token_chars = np.ones((self.vocab_size,), np.int64)

    def encode(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)  # (N,)
        ids = self._lookup[np.minimum(points, len(self._lookup) - 1)]
        unknown = (points >= len(self._lookup)) | (ids < 0)
        if unknown.any():
            raise DataError(f"character {chr(int(points[unknown][0]))!r} is not in the vocabulary")
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        return "".join("\n" if i == 0 else self.chars[i - 1] for i in np.asarray(ids).tolist())

    def to_json(self) -> str:
        return json.dumps({"kind": "char", "eos": EOS, "chars": self.chars})


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer  # a tokenizers.Tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        lengths = [len(tokenizer.decode([i])) for i in range(self.vocab_size)]
        lengths[0] = 1
        self.token_chars = np.asarray(lengths, np.int64)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, np.int32)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        parts = []
        for enc in self._tok.encode_batch(texts):  # Rust threads; several times faster than one by one
            parts += [np.asarray(enc.ids, np.int32), np.zeros((1,), np.int32)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.int32)

    def decode(self, ids) -> str:
        return "\n".join(self._tok.decode(part) for part in _split_eos(np.asarray(ids).tolist()))

    def to_json(self) -> str:
        return self._tok.to_str()


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json` read with `tokenizers`: the pretrained model's own ids, no special tokens
    added, documents ended by its end-of-text token."""

    kind = "hf"

    def __init__(self, path: str):
        import tokenizers

        self.path = path
        try:
            self._tok = tokenizers.Tokenizer.from_file(path)
        except Exception as e:  # the Rust side raises a bare Exception for a malformed file
            raise DataError(f"{path}: not a tokenizer.json the tokenizers package reads ({e})") from e
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = _hf_eos_id(os.path.dirname(path), self._tok, path)
        # Each token decoded after another: alone, a word-start token would lose its space (sentencepiece); a
        # document's first word then counts the space its mark stands for, one character over.
        anchor = [int(i) for i in self._tok.encode("a", add_special_tokens=False).ids[:1]]
        base = len(self._tok.decode(anchor, skip_special_tokens=False))
        chars = [len(self._tok.decode(anchor + [i], skip_special_tokens=False)) - base for i in range(self.vocab_size)]
        chars[self.eos_id] = 1  # counted like the newline it stands for, as jtrain's own tokenizers do
        self.token_chars = np.maximum(np.asarray(chars, np.int64), 1)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        parts = []
        for enc in self._tok.encode_batch(texts, add_special_tokens=False):
            parts += [np.asarray(enc.ids, np.int32), np.full((1,), self.eos_id, np.int32)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.int32)

    def decode(self, ids) -> str:
        return self._tok.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>")  # when no file names one


def _hf_eos_id(directory: str, tok, path: str) -> int:
    """The end-of-text id: tokenizer_config.json's eos_token, else config.json's eos_token_id, else a known name."""
    tc = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(tc):
        with open(tc) as f:
            eos = json.load(f).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if eos and tok.token_to_id(eos) is not None:
            return int(tok.token_to_id(eos))
    cj = os.path.join(directory, "config.json")
    if os.path.isfile(cj):
        with open(cj) as f:
            eos = json.load(f).get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) and eos else eos
        if isinstance(eos, int):
            return eos
    for name in EOS_NAMES:
        if tok.token_to_id(name) is not None:
            return int(tok.token_to_id(name))
    raise DataError(f"{path}: no end-of-text token (eos_token in tokenizer_config.json, eos_token_id in "
                    f"config.json, or one of {', '.join(EOS_NAMES)})")


def from_file(path: str) -> HFTokenizer:
    """`path`: a tokenizer.json, or a directory holding one (a Hugging Face checkpoint)."""
    path = os.path.abspath(os.path.expanduser(path))
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise DataError(f"config key 'data.tokenizer': {file} does not exist")
    return HFTokenizer(file)


def _split_eos(ids: list[int]) -> list[list[int]]:
    parts = [[]]
    for i in ids:
        if i == 0:
            parts.append([])
        else:
            parts[-1].append(i)
    return parts


def train_char(texts: list[str]) -> CharTokenizer:
    return CharTokenizer("".join(sorted(set("".join(texts)))))


def train_bpe(texts: list[str], vocab_size: int = BPE_VOCAB_SIZE) -> BPETokenizer:
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok)


def from_json(text: str) -> Tokenizer:
    data = json.loads(text)
    if data.get("kind") == "char":
        return CharTokenizer(data["chars"])
    import tokenizers

    return BPETokenizer(tokenizers.Tokenizer.from_str(text))


def path_for(dataset_dir: str, kind: str) -> str:
    return os.path.join(dataset_dir, f"tokenizer_{kind}.json")


def load_or_train(dataset_dir: str, kind: str, corpus: list[str], train_texts: list[str]) -> Tokenizer:
    """The tokenizer saved beside the dataset; trained (char: on `corpus`, bpe: on `train_texts`) and saved on
    first use. The write is atomic, so processes that race to create it agree on one file."""
    if kind not in KINDS:
        raise DataError(f"unknown tokenizer {kind!r}; known: {', '.join(KINDS)}")
    path = path_for(dataset_dir, kind)
    if os.path.isfile(path):
        with open(path) as f:
            return from_json(f.read())
    tok = train_char(corpus) if kind == "char" else train_bpe(train_texts)
    fd, tmp = tempfile.mkstemp(dir=dataset_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(tok.to_json())
    os.replace(tmp, path)
    return tok


def load(dataset_dir: str, kind: str) -> Tokenizer:
    path = path_for(dataset_dir, kind)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no tokenizer; loading the dataset once creates it")
    with open(path) as f:
        return from_json(f.read())
