"""Language-model metrics from a split's exact sums: loss in nats per token, bits per token and per character,
perplexity.

Evaluation adds up token losses and token counts over every target token of the split (jtrain/metrics.py
`sequence_sums`), so `loss` is the mean over tokens, not a mean of per-batch means. Bits per character divide
the summed loss by the number of characters the split's target tokens stand for (the text source's `target_chars`): one
per token for the character tokenizer, the token's length for BPE, which makes the two comparable.
"""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def report(sums: dict, target_chars: int | None = None) -> dict:
    """sums: 'loss_sum' (nats) and 'count' (tokens), as accumulated on the host."""
    loss_sum, tokens = float(sums["loss_sum"]), float(sums["count"])
    nats = loss_sum / max(tokens, 1.0)
    out = {"num_tokens": int(round(tokens)), "bits_per_token": nats / LN2,
           "perplexity": math.exp(min(nats, 700.0))}  # exp overflows a float past ~709
    if target_chars:
        out["bits_per_char"] = loss_sum / LN2 / target_chars
    return out


def split_report(data, totals: dict, role: str) -> dict:
    """The language-model metrics of an evaluated split of a run's `data` (characters known for text datasets)."""
    chars = getattr(data, "target_chars", {}).get(role)
    return report(totals, chars)
