"""Per-example scores of a trained classifier: `jtrain score --workdir W --split train --output scores.csv` and
`jtrain.score(workdir, split)`.

For every example of a split: its label, the predicted class, the probability of the label, the margin (that
probability minus the highest other one), the entropy of the prediction and the loss (-log p(label)). Rows come
out most-likely-mislabelled first: highest loss (the lowest self-confidence) or lowest margin. The file is also a
difficulty table for a curriculum (data.curriculum.difficulty, jtrain/data/curriculum.py): `index` is the row of
the split, the same row `data.train_rows` names.

With `passes` > 0 the probabilities are the mean of that many dropout passes (Monte Carlo dropout) and a `bald`
column holds the mutual information between the prediction and the weights: what active learning's BALD ranks by.
"""

from __future__ import annotations

import jax
import numpy as np

from jtrain import workdir as workdir_lib
from jtrain.errors import ConfigError, UserError

RANKS = ("loss", "margin")  # mislabelled first: highest loss, lowest margin
SCORE_STREAM = 0x73636F72  # mixed into the Monte Carlo passes' numbers: their dropout keys differ from training's


def score(workdir: str, split: str = "train", step: int | None = None, data=None, rank: str = "loss",
          passes: int = 0):
    """A pandas DataFrame, a row per example of `split` (train / val / test), sorted by `rank` (see the module).
    `data` is the source the run was trained on when it was given in Python. Every row of the training split is
    scored, labelled for training or not (data.train_rows)."""
    if rank not in RANKS:
        raise UserError(f"--rank {rank!r}: rank by {' or '.join(RANKS)}")
    config = workdir_lib.read_config(workdir)
    if split not in ("train", "val", "test"):
        raise UserError(f"--split {split!r}: score a role of the run, train, val or test")
    if config.data.splits[split] == "none":
        raise UserError(f"split {split!r} is disabled in this run's config (data.splits.{split}='none')")
    with config.unlocked():
        config.data.train_rows = ""  # the whole pool, labelled or not
    run, state, step = workdir_lib.restore(workdir, config, step, data)
    probs, labels = probabilities(run, state, split, passes)
    frame = table(probs, labels, run.data.spec.class_names, rank)
    noisy = getattr(run.data, "noisy_rows", None)
    if split == "train" and noisy is not None:  # data.label_noise: which labels were replaced on purpose
        frame["flipped"] = np.isin(frame["index"].to_numpy(), noisy)
    frame.attrs["step"] = step
    return frame


def probabilities(run, state, role: str, passes: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C) or with `passes` (passes, N, C), labels (N,)) of every example of `role`, in order."""
    method = run.method
    if method.probabilities is None:
        raise ConfigError(f"config key 'method.name': per-example scores need a classifier; this run trains "
                          f"{method.name} with task {method.task or 'none'!r}")
    if passes and not run.config.model.dropout:
        raise ConfigError("config key 'model.dropout': Monte Carlo dropout passes (BALD) need a model with dropout; "
                          "this run has model.dropout=0")
    if passes and run.abstract_state.model_state:
        raise ConfigError("config key 'model.batch_norm': Monte Carlo dropout passes (BALD) need a model without "
                          "batch norm, whose training mode would use each eval batch's statistics")
    if jax.process_count() > 1:
        raise UserError("per-example scores run in one process; run `jtrain score` without --num_processes")
    fn = jax.jit(lambda state, batch, rng: method.probabilities(run.model, state, batch, rng))
    deterministic = jax.jit(lambda state, batch: method.probabilities(run.model, state, batch, None))
    key = jax.random.key(run.config.seed)
    out, labels = [], []
    for b, local in enumerate(run.data.eval_batches(role, run.config.data)):
        keep = np.asarray(local["mask"], bool)
        batch = run.put_batch(local)
        if passes:
            keys = [jax.random.fold_in(key, (b * passes + k) ^ SCORE_STREAM) for k in range(passes)]
            p = np.stack([np.asarray(jax.device_get(fn(state, batch, k))) for k in keys])[:, keep]
        else:
            p = np.asarray(jax.device_get(deterministic(state, batch)))[keep]
        out.append(p)
        labels.append(np.asarray(local["targets"])[keep])
    probs = np.concatenate(out, axis=-2).astype(np.float64)
    return probs, np.concatenate(labels).astype(np.int64)


def table(probs: np.ndarray, labels: np.ndarray, class_names=(), rank: str = "loss"):
    """The scores of module's docstring from probabilities (N, C), or Monte Carlo passes (passes, N, C)."""
    import pandas as pd

    bald = None
    if probs.ndim == 3:
        bald = informativeness("bald", probs)
        probs = probs.mean(0)
    n = len(labels)
    p_label = probs[np.arange(n), labels]
    others = probs.copy()
    others[np.arange(n), labels] = -np.inf
    names = list(class_names) or [str(i) for i in range(probs.shape[1])]
    predicted = probs.argmax(1)
    frame = pd.DataFrame({
        "index": np.arange(n),
        "label": [names[i] for i in labels],
        "predicted": [names[i] for i in predicted],
        "p_label": p_label,
        "margin": p_label - others.max(1),
        "entropy": entropy(probs),
        "loss": -np.log(np.maximum(p_label, 1e-12)),
    })
    if bald is not None:
        frame["bald"] = bald
    frame = frame.sort_values(rank, ascending=rank == "margin", kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, n + 1))
    return frame


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.maximum(p, 1e-12))).sum(-1)


def informativeness(strategy: str, probs: np.ndarray) -> np.ndarray:
    """(N,) how much a label would tell, higher first (active learning's queries, jtrain/active.py); `probs`
    (N, C), or (passes, N, C) for bald."""
    if strategy == "bald":  # mutual information between prediction and weights (Houlsby et al. 2011)
        return entropy(probs.mean(0)) - entropy(probs).mean(0)
    if strategy == "entropy":
        return entropy(probs)
    if strategy == "least_confidence":
        return 1 - probs.max(-1)
    top2 = np.sort(probs, axis=-1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])  # margin: the smallest gap first
