"""Text datasets for language models: token streams packed into fixed-length rows, read through grain.

A split's documents become one token stream (each document ends with the end-of-document token, id 0; see
jtrain/data/tokenize.py). The stream is cut into rows of `data.seq_len + 1` tokens that overlap by one, so
`inputs = row[:-1]`, `targets = row[1:]`, and every token of the stream is a target exactly once:

    stream   t0 t1 t2 t3 t4 t5 t6 t7 t8 ...        seq_len = 4
    row 0    t0 t1 t2 t3 t4                         inputs t0..t3, targets t1..t4
    row 1                t4 t5 t6 t7 t8             inputs t4..t7, targets t5..t8

Training uses the full rows only (no padding at all; the last partial row of the split is left out) in an
order reshuffled every epoch, through the same checkpointable grain iterator as the image pipeline. Evaluation
reads every row once, the last one padded with `mask` 0, so sums over a split are exact.

Batches: {'inputs': (B, T) int32, 'targets': (B, T) int32, 'mask': (B, T) float32 (1 = a real target token)}.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator

import grain
import ml_collections
import numpy as np

from jtrain.data import registry, tokenize
from jtrain.data.source import (DatasetSpec, Source, Stats, eval_indices, local_batch_size, own_rows, resolve_splits,
                                to_iterator)
from jtrain.errors import ConfigError


class PackedTokens:
    """Random access to the rows of one split's token stream. `len()` counts full rows (training); `padded`
    also counts the last partial row (evaluation)."""

    def __init__(self, stream: np.ndarray, seq_len: int, padded: bool = False):
        self.stream = np.asarray(stream, np.int32)  # (N,)
        self.seq_len = seq_len
        targets = max(len(self.stream) - 1, 0)
        self.num_targets = targets  # tokens that are predicted over the split
        self._rows = math.ceil(targets / seq_len) if padded else targets // seq_len

    def __len__(self) -> int:
        return self._rows

    def rows(self, indices) -> dict[str, np.ndarray]:
        """Rows at `indices` -> inputs / targets / mask, each (n, T)."""
        t = self.seq_len
        n = len(indices)
        inputs = np.zeros((n, t), np.int32)
        targets = np.zeros((n, t), np.int32)
        mask = np.zeros((n, t), np.float32)
        for j, i in enumerate(np.asarray(indices, np.int64)):
            start = int(i) * t
            chunk = self.stream[start : start + t + 1]  # (<= T + 1,)
            k = len(chunk) - 1  # real targets in this row
            inputs[j, :k] = chunk[:-1]
            targets[j, :k] = chunk[1:]
            mask[j, :k] = 1.0
        return {"inputs": inputs, "targets": targets, "mask": mask}


@dataclasses.dataclass
class TextSource(Source):
    """Rows of tokens: `sources[role]` are PackedTokens (full rows, training) or, for post-training examples,
    packed rows (jtrain/data/sft.py); `eval_sources[role]` every row of the role once."""

    spec: DatasetSpec
    sources: dict[str, object]
    splits: dict[str, str]  # role -> what it was read from
    tokenizer: tokenize.Tokenizer
    target_chars: dict[str, int]  # role -> characters the role's target tokens stand for (bits per character)
    eval_sources: dict[str, object]
    stats: Stats = Stats(0.0, 1.0)  # token ids are not standardised

    def num_examples(self, role: str) -> int:
        return len(self.sources[role])

    def train_dataset(self, config: ml_collections.ConfigDict, seed: int, process_index: int = 0,
                      process_count: int = 1, stack: int = 1, raw: bool = False) -> grain.IterDataset:
        """Endless batches of shuffled rows; every process reads its own rows of the same global batches
        (stacked k at a time, (k, B, T), for `stack` = k > 1). Token ids have nothing to finish: `raw` is moot."""
        batch = local_batch_size(config.batch_size, process_count, "data.batch_size")
        source = self.sources["train"]
        if len(source) < config.batch_size:
            raise ConfigError(f"config key 'data.batch_size': {config.batch_size} exceeds the {len(source)} "
                              f"training sequences of {config.seq_len} tokens")
        ds = grain.MapDataset.range(len(source)).seed(seed)
        if config.shuffle:
            ds = ds.shuffle()  # a fresh permutation of the rows every epoch
        ds = ds.repeat(None).batch(config.batch_size * stack, drop_remainder=True)  # (k * global_batch,) rows
        ds = ds.map(lambda indices: source.rows(own_rows(indices, config.batch_size, process_index, batch)))
        if config.seq_len_warmup:  # token streams only (checked by jtrain/data/kinds.py)
            ds = ds.map_with_index(lambda e, rows: warmup_segments(rows, e, stack, config))
        return to_iterator(ds, config, stack)

    def eval_batches(self, role: str, config: ml_collections.ConfigDict, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Every row of the split once (the last partial one masked), padded to full batches with mask 0."""
        source = self.eval_sources[role]
        batch, batches = eval_indices(len(source), config, process_index, process_count)
        for indices in batches:
            out = source.rows(indices)
            pad = batch - len(out["inputs"])
            yield {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in out.items()}


def warmup_length(config: ml_collections.ConfigDict, b: int) -> int:
    """Tokens per sequence of global batch `b` under data.seq_len_warmup: linear from the start to data.seq_len."""
    start, end = config.seq_len_warmup_start, config.seq_len
    return min(end, start + (end - start) * b // config.seq_len_warmup)


def warmup_segments(rows: dict[str, np.ndarray], e: int, stack: int, config: ml_collections.ConfigDict) -> dict:
    """Element e's rows (stack batches of equal size) with `segment_ids` cutting each row into sequences of the
    warm-up length of its batch: attention and positions restart at every cut (jtrain/models/decoder.py)."""
    t = rows["inputs"].shape[1]
    per_batch = len(rows["inputs"]) // stack
    lengths = np.repeat([warmup_length(config, e * stack + j) for j in range(stack)], per_batch)  # (rows,)
    segment_ids = (np.arange(t)[None, :] // lengths[:, None]).astype(np.int32)  # (rows, T)
    return {**rows, "segment_ids": segment_ids}


def read_texts(name: str, split: str, configured_dir: str, role: str = "") -> list[str]:
    source = registry.data_source(name, split, configured_dir, role)
    return [bytes(r["text"]).decode("utf-8") for r in source.__getitems__(list(range(len(source))))]


def load_tokenizer(spec: DatasetSpec, config: ml_collections.ConfigDict) -> tokenize.Tokenizer:
    """`data.tokenizer` (a pretrained model's tokenizer.json), else the dataset's tokenizer, saved beside its
    array_record files (created on first use)."""
    if config.tokenizer:
        return tokenize.from_file(config.tokenizer)
    configured_dir = config.dir
    dataset_dir = registry.prepare(spec.name, configured_dir)
    if os.path.isfile(tokenize.path_for(dataset_dir, spec.tokenizer)):
        return tokenize.load(dataset_dir, spec.tokenizer)
    train = read_texts(spec.name, "train", configured_dir)  # always the whole train split: one vocabulary
    corpus = train + read_texts(spec.name, "val", configured_dir) + read_texts(spec.name, "test", configured_dir)
    return tokenize.load_or_train(dataset_dir, spec.tokenizer, corpus, train)


def load(config: ml_collections.ConfigDict, spec: DatasetSpec) -> TextSource:
    """Tokenises the configured splits and packs them into rows of data.seq_len tokens."""
    if config.seq_len <= 0:
        raise ConfigError(f"config key 'data.seq_len': must be > 0, got {config.seq_len}")
    tokenizer = load_tokenizer(spec, config)
    splits = resolve_splits(config, spec)
    sources, eval_sources, chars = {}, {}, {}
    for role, split in splits.items():
        stream = tokenizer.encode_documents(read_texts(spec.name, split, config.dir, role))  # (N,)
        sources[role] = PackedTokens(stream, config.seq_len)
        eval_sources[role] = PackedTokens(stream, config.seq_len, padded=True)
        chars[role] = int(tokenizer.token_chars[stream[1:]].sum())
    if len(sources["train"]) == 0:
        raise ConfigError(f"config key 'data.seq_len': {config.seq_len} is longer than the training split")
    spec = dataclasses.replace(spec, input_shape=(config.seq_len,), num_classes=tokenizer.vocab_size)
    return TextSource(spec=spec, sources=sources, splits=splits, tokenizer=tokenizer, target_chars=chars,
                      eval_sources=eval_sources)
