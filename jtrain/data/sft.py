"""Supervised fine-tuning examples: JSONL (prompt, response) pairs -> packed rows with a response-only loss mask.

Each example becomes `prompt + response + <end of document>` tokens; its inputs predict the next token, and the
mask is 1 only where the target is a response token (or the final end-of-document token), so prompts are read but
never learned. Examples are packed greedily into rows of `seq_len`; `segment_ids` (1, 2, ... within a row;
0 = padding) keep the decoder's attention inside each example and restart its positions
(jtrain/models/decoder.py), so a packed row computes exactly what the examples would one by one.

Batches: inputs, targets, mask, segment_ids, each (B, T).

Not wired yet: a dataset name / config key that feeds these rows to `jtrain train`, and DPO.
"""

from __future__ import annotations

import json

import numpy as np

from jtrain.errors import DataError


def read_jsonl(path: str, keys: tuple[str, ...] = ("prompt", "response")) -> list[dict]:
    """One JSON object per line with string values under `keys`; errors name the file and line."""
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
                missing = [k for k in keys if not isinstance(record.get(k), str)]
                if missing:
                    raise DataError(f"{path}:{number}: needs string field(s) {', '.join(missing)}")
                out.append(record)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    return out


def example_tokens(tokenizer, prompt: str, response: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (L,), learn (L,) bool): learn[i] = token i is part of the response or the final end token."""
    p, r = tokenizer.encode(prompt), tokenizer.encode(response)
    tokens = np.concatenate([p, r, np.zeros((1,), np.int32)]).astype(np.int32)
    learn = np.concatenate([np.zeros(len(p), bool), np.ones(len(r) + 1, bool)])
    return tokens, learn


def pack(examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int) -> dict[str, np.ndarray]:
    """Greedy packing of (tokens, learn) examples into rows: (N, seq_len) inputs / targets / mask / segment_ids.
    An example of L tokens takes L - 1 positions (its inputs); one longer than a row is an error."""
    rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[]]
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
