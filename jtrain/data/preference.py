"""Preference pairs for DPO: (prompt, chosen, rejected) -> the two responses side by side, one row each.

A pair becomes two sequences, `prompt + chosen + <end>` and `prompt + rejected + <end>` (jtrain/data/sft.py
`example_tokens`), stored as (2, T) arrays [chosen, rejected]: inputs predict the next token and the mask is 1 on
response targets only, so one forward pass gives both summed response log-probabilities (jtrain/methods/dpo.py). Pairs are
not packed (each sequence starts its own row, padding after it with mask 0): a pair's two rows must stay
together, and causal attention keeps padding from changing what comes before it.

The builtin `shakespeare_pref` takes every line pair of a play (sft.line_pairs): chosen = the true next line,
rejected = a line from another play of the same split - of 8 drawn at random, the closest in length to the true
one, so summed log-probabilities cannot prefer either by length alone. The draw has a fixed seed: the same pairs
on every machine and in every run. Held-out pairs come from held-out plays, rejected lines included.

Batches: {'inputs', 'targets': (B, 2, T) int32, 'mask': (B, 2, T) float32}; index 0 = chosen, 1 = rejected.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from jtrain.data import sft, text
from jtrain.data.source import DatasetSpec
from jtrain.errors import DataError

KEYS = ("prompt", "chosen", "rejected")
CANDIDATES = 8  # rejected lines drawn per pair; the closest in length is kept
SEED = 0  # fixed: the pairs are data, not a function of the run's seed


def builtin_pairs(spec: DatasetSpec, split: str, configured_dir: str) -> list[tuple[str, dict]]:
    """[(where, {"prompt", "chosen", "rejected"})] for every line pair of the split's plays."""
    plays = [play for play in sft.builtin_records(spec, split, configured_dir) if play]
    if len(plays) < 2:
        raise DataError(f"{spec.name}: split {split!r} has {len(plays)} work with line pairs; rejected lines come "
                        f"from another work, so it needs at least two")
    responses = [record["response"] for play in plays for _, record in play]
    lengths = np.array([len(r) for r in responses])  # (N,)
    starts = np.cumsum([0] + [len(play) for play in plays])  # play w holds lines starts[w]:starts[w + 1]
    rng = np.random.default_rng(SEED)
    out = []
    for w, play in enumerate(plays):
        n, start = len(play), starts[w]
        draw = rng.integers(0, len(responses) - n, size=(n, CANDIDATES))  # (n, K) over the other plays' lines
        draw = np.where(draw >= start, draw + n, draw)  # skip this play's own lines
        gap = np.abs(lengths[draw] - lengths[start : start + n, None])  # (n, K)
        chosen = draw[np.arange(n), np.argmin(gap, axis=1)]  # (n,)
        out += [(where, {"prompt": record["prompt"], "chosen": record["response"], "rejected": responses[j]})
                for (where, record), j in zip(play, chosen)]
    return out


def pair_rows(pairs: list[tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]],
              seq_len: int) -> dict[str, np.ndarray]:
    """[((tokens, learn) chosen, (tokens, learn) rejected)] -> inputs / targets / mask, each (N, 2, seq_len)."""
    n = len(pairs)
    out = {"inputs": np.zeros((n, 2, seq_len), np.int32), "targets": np.zeros((n, 2, seq_len), np.int32),
           "mask": np.zeros((n, 2, seq_len), np.float32)}
    for i, pair in enumerate(pairs):
        for j, (tokens, learn) in enumerate(pair):
            k = len(tokens) - 1
            out["inputs"][i, j, :k] = tokens[:-1]
            out["targets"][i, j, :k] = tokens[1:]
            out["mask"][i, j, :k] = learn[1:]
    return out


def load(config: ml_collections.ConfigDict, spec: DatasetSpec) -> text.TextSource:
    """Every role's pairs (the builtin's, or data.jsonl files of prompt / chosen / rejected) as (N, 2, T) rows."""
    sft.check_post_training(config, spec)
    records, splits = sft.role_records(config, spec, KEYS, lambda split: builtin_pairs(spec, split, config.dir))
    tokenizer = text.load_tokenizer(spec, config)
    strict = bool(config.jsonl.train)
    sources = {}
    for role, items in records.items():
        pairs = []
        for where, r in items:
            chosen = sft.encode_example(tokenizer, where, r["prompt"], r["chosen"], config.seq_len, strict)
            rejected = sft.encode_example(tokenizer, where, r["prompt"], r["rejected"], config.seq_len, strict)
            if chosen is not None and rejected is not None:
                pairs.append((chosen, rejected))
        sources[role] = sft.PackedRows(pair_rows(pairs, config.seq_len))
    return sft.dataset(spec, config, tokenizer, splits, sources, chars={})
