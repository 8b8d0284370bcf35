"""Supervised fine-tuning examples: JSONL (prompt, response) pairs -> packed rows with a response-only loss mask.

Each example becomes `prompt + response + <end of document>` tokens; its inputs predict the next token, and the
mask is 1 only where the target is a response token (or the final end-of-document token), so prompts are read but
never learned. Examples are packed greedily into rows of `seq_len`; `segment_ids` (1, 2, ... within a row;
0 = padding) keep the decoder's attention inside each example and restart its positions
(jtrain/models/decoder.py), so a packed row computes exactly what the examples would one by one.

Batches: inputs, targets, mask, segment_ids, each (B, T).

As a dataset (`load`, reached through jtrain/data/kinds.py for a spec with `examples="sft"`): the builtin
`shakespeare_sft` makes its pairs from the plays of each split (`line_pairs`: a line of a speech and the next
one), so held-out pairs come from plays training never saw; `data.jsonl.train` / `.val` / `.test` name your own
JSONL files instead, tokenised with the dataset's tokenizer (the pretrained model's). The packed rows are fixed
when the data loads; training reads them in a reshuffled order every epoch through the same checkpointable
grain iterator as the token streams (jtrain/data/text.py), and evaluation reads every row once, so the val
loss is the exact mean over response tokens. Preference pairs for DPO build on the same pieces
(jtrain/data/preference.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Callable

import ml_collections
import numpy as np

from jtrain.data import text, tokenize
from jtrain.data.source import DatasetSpec, resolve_splits
from jtrain.errors import ConfigError, DataError

ROLES = ("train", "val", "test")


def read_jsonl(path: str, keys: tuple[str, ...] = ("prompt", "response")) -> list[dict]:
    """One JSON object per line with string values under `keys`; errors name the file and line."""
    return [record for _, record in read_jsonl_lines(path, keys)]


def read_jsonl_lines(path: str, keys: tuple[str, ...]) -> list[tuple[str, dict]]:
    """[("file:line", record)] of a JSONL file, so later errors (an unknown character, too long) can say where."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{number}: not JSON: {e.msg}") from e
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object with {', '.join(keys)}")
                missing = [k for k in keys if not isinstance(record.get(k), str)]
                if missing:
                    raise DataError(f"{path}:{number}: needs string field(s) {', '.join(missing)}")
                out.append((f"{path}:{number}", record))
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if not out:
        raise DataError(f"{path}: no examples (one JSON object per line, with {', '.join(keys)})")
    return out


def example_tokens(tokenizer, prompt: str, response: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (L,), learn (L,) bool): learn[i] = token i is part of the response or the final end token."""
    p, r = tokenizer.encode(prompt), tokenizer.encode(response)
    tokens = np.concatenate([p, r, np.full((1,), tokenizer.eos_id, np.int32)]).astype(np.int32)
    learn = np.concatenate([np.zeros(len(p), bool), np.ones(len(r) + 1, bool)])
    return tokens, learn


def pack(examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int) -> dict[str, np.ndarray]:
    """Greedy packing of (tokens, learn) examples into rows: (N, seq_len) inputs / targets / mask / segment_ids.
    An example of L tokens takes L - 1 positions (its inputs); one longer than a row is an error."""
    rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[]] if examples else []
    used = 0
    for tokens, learn in examples:
        need = len(tokens) - 1
        if need > seq_len:
            raise DataError(f"an example of {len(tokens)} tokens does not fit data.seq_len={seq_len}")
        if used + need > seq_len:
            rows.append([])
            used = 0
        rows[-1].append((tokens, learn))
        used += need
    n = len(rows)
    out = {"inputs": np.zeros((n, seq_len), np.int32), "targets": np.zeros((n, seq_len), np.int32),
           "mask": np.zeros((n, seq_len), np.float32), "segment_ids": np.zeros((n, seq_len), np.int32)}
    for i, row in enumerate(rows):
        at = 0
        for segment, (tokens, learn) in enumerate(row, 1):
            k = len(tokens) - 1
            out["inputs"][i, at : at + k] = tokens[:-1]
            out["targets"][i, at : at + k] = tokens[1:]
            out["mask"][i, at : at + k] = learn[1:]  # the loss counts a target only if it is a response token
            out["segment_ids"][i, at : at + k] = segment
            at += k
    return out


# ---------------------------------------------------------------------------------------------- pairs from plays

# A speech starts with its speaker's name on a line of its own ("Laer.", "First Witch."), which is no verse line.
_SPEAKER = re.compile(r"[A-Z][A-Za-z'\- ]{0,24}\.")


def line_pairs(play: str) -> list[tuple[str, str]]:
    """(line, next line) for consecutive verse lines of the same speech; stage directions and speaker names
    are left out, and no pair crosses from one speech (a block between blank lines) to the next."""
    pairs = []
    for block in play.split("\n\n"):
        lines = [line.strip() for line in block.split("\n")]
        if lines and _SPEAKER.fullmatch(lines[0]):
            lines = lines[1:]
        lines = [line for line in lines if line and not line.startswith("[")]
        pairs += list(zip(lines[:-1], lines[1:]))
    return pairs


def builtin_records(spec: DatasetSpec, split: str, configured_dir: str) -> list[list[tuple[str, dict]]]:
    """Per play (or poem) of the split: [(where, {"prompt": a line + newline, "response": the next line})]."""
    return [[(f"{spec.name} {split}, work {w}, pair {i}", {"prompt": a + "\n", "response": b})
             for i, (a, b) in enumerate(line_pairs(play))]
            for w, play in enumerate(text.read_texts(spec.name, split, configured_dir))]


def role_records(config: ml_collections.ConfigDict, spec: DatasetSpec, keys: tuple[str, ...],
                 builtin: Callable[[str], list[tuple[str, dict]]]) -> tuple[dict[str, list], dict[str, str]]:
    """role -> [(where, record)] and role -> what it was read from: the data.jsonl files when data.jsonl.train is
    set (roles without a file are left out), else `builtin(split)` for the dataset's configured splits. Held-out
    roles keep at most data.eval_examples records, evenly spaced."""
    if config.jsonl.train:
        files = {role: config.jsonl[role] for role in ROLES if config.jsonl[role]}
        records = {role: read_jsonl_lines(path, keys) for role, path in files.items()}
    else:
        files = resolve_splits(config, spec)
        records = {role: builtin(split) for role, split in files.items()}
    for role in records:
        n = len(records[role])
        if role != "train" and config.eval_examples and n > config.eval_examples:
            keep = np.unique(np.linspace(0, n - 1, config.eval_examples).round().astype(np.int64))
            records[role] = [records[role][i] for i in keep]
    return records, files


def encode_example(tokenizer: tokenize.Tokenizer, where: str, prompt: str, response: str, seq_len: int,
                   strict: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """example_tokens, checked: an unknown character or an example longer than a row (seq_len + 1 tokens) is an
    error naming `where` when `strict` (the user's files), and skips the example otherwise (builtin pairs)."""
    try:
        tokens, learn = example_tokens(tokenizer, prompt, response)
    except DataError as e:
        raise DataError(f"{where}: {e}") from e
    if len(tokens) - 1 > seq_len:
        if strict:
            raise DataError(f"{where}: prompt + response take {len(tokens)} tokens with the end token, more than "
                            f"data.seq_len + 1 = {seq_len + 1}")
        return None
    return tokens, learn


# ---------------------------------------------------------------------------------------------- the dataset


class PackedRows:
    """Rows built once (packed SFT examples, or preference pairs), read by index like text.PackedTokens."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays  # name -> (N, T) or (N, 2, T)

    def __len__(self) -> int:
        return len(self.arrays["inputs"])

    def rows(self, indices) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, np.int64)
        return {k: v[indices] for k, v in self.arrays.items()}


def check_post_training(config: ml_collections.ConfigDict, spec: DatasetSpec) -> None:
    if config.seq_len <= 0:
        raise ConfigError(f"config key 'data.seq_len': must be > 0, got {config.seq_len}")
    if not spec.examples:
        key = "data.jsonl.train" if config.jsonl.train else "data.jsonl.val" if config.jsonl.val else "data.jsonl.test"
        raise ConfigError(f"config key {key!r}: JSONL examples need a post-training dataset for their format and "
                          f"tokenizer: data.name=shakespeare_sft (prompt, response) or shakespeare_pref "
                          f"(prompt, chosen, rejected), not {spec.name}")


def dataset(spec: DatasetSpec, config: ml_collections.ConfigDict, tokenizer: tokenize.Tokenizer,
            splits: dict[str, str], sources: dict[str, PackedRows], chars: dict[str, int]) -> text.TextSource:
    if len(sources.get("train", ())) == 0:
        raise ConfigError(f"config key 'data.seq_len': no training example fits in {config.seq_len} tokens")
    spec = dataclasses.replace(spec, input_shape=(config.seq_len,), num_classes=tokenizer.vocab_size)
    return text.TextSource(spec=spec, sources=sources, splits=splits, tokenizer=tokenizer, target_chars=chars,
                           eval_sources=sources)


def load(config: ml_collections.ConfigDict, spec: DatasetSpec) -> text.TextSource:
    """The SFT dataset of `config.data`: every role's examples packed into rows."""
    check_post_training(config, spec)

    def builtin(split: str) -> list[tuple[str, dict]]:
        return [r for play in builtin_records(spec, split, config.dir) for r in play]

    records, splits = role_records(config, spec, ("prompt", "response"), builtin)  # the user's files checked first
    tokenizer = text.load_tokenizer(spec, config)
    strict = bool(config.jsonl.train)
    sources, chars = {}, {}
    for role, items in records.items():
        examples = [encode_example(tokenizer, where, r["prompt"], r["response"], config.seq_len, strict)
                    for where, r in items]
        packed = pack([e for e in examples if e is not None], config.seq_len)
        sources[role] = PackedRows(packed)
        # Bits per character count the characters of the learned (response) tokens only.
        chars[role] = int(tokenizer.token_chars[packed["targets"]][packed["mask"] > 0].sum())
    return dataset(spec, config, tokenizer, splits, sources, chars)
