"""`jtrain active` / `jtrain.active(config, workdir, ...)`: pool-based active learning over the training split.

The training split is the pool; its labels are hidden until queried. Round 0 trains on `initial` rows drawn at
random (the same rows for every strategy of a seed), then each round queries `query` more rows with the strategy,
until `rounds` runs have trained. Every round is an ordinary run (data.train_rows naming its labelled set,
jtrain/data/rows.py) in WORKDIR/STRATEGY/seed-S/round-K, trained from scratch, or with `warm_start` from the
previous round's weights. The strategies score the unlabelled rows with the round's model (jtrain/score.py):

    random            uniformly at random: the baseline
    entropy           the highest entropy of the predicted class distribution
    margin            the smallest gap between the two most probable classes
    least_confidence  the lowest probability of the predicted class
    bald              the highest mutual information between prediction and weights, over `passes` Monte Carlo
                      dropout passes (Houlsby et al. 2011); needs model.dropout > 0 and no batch norm

Written as it goes: labelled-K.npy per round (the rows round K trained on), curves.csv (strategy, seed, round,
labelled, the val and test metrics), curves.json, and learning_curve.png (test accuracy against labelled rows,
mean +- std over seeds per strategy). Running it again continues: finished rounds are read, a killed round
resumes from its checkpoint, saved labelled sets are reused.
"""

from __future__ import annotations

import csv
import json
import os

import ml_collections
import numpy as np

from jtrain import data as data_lib
from jtrain import methods
from jtrain import workdir as workdir_lib
from jtrain.errors import ConfigError, UserError
from jtrain.metrics import scalars
from jtrain.score import informativeness, probabilities
from jtrain.train import train

STRATEGIES = ("random", "entropy", "margin", "least_confidence", "bald")
ACTIVE_STREAM = 0x61637476  # the initial set's and random queries' generators, apart from training's


def active(config: ml_collections.ConfigDict, workdir: str, initial: int, query: int, rounds: int,
           strategies=("entropy",), seeds: int = 1, warm_start: bool = False, passes: int = 10,
           data=None) -> list[dict]:
    """Runs what is missing of every (strategy, seed) loop; returns the rows of curves.csv."""
    strategies = [strategies] if isinstance(strategies, str) else list(strategies)
    _check(config, strategies, initial, query, rounds, seeds, passes)
    source = data_lib.load(config.data) if data is None else data_lib.bind(data, config.data)
    pool = source.num_examples("train")
    if initial + (rounds - 1) * query > pool:
        raise UserError(f"--initial {initial} + {rounds - 1} queries of --query {query} = "
                        f"{initial + (rounds - 1) * query} labels, more than the pool's {pool} training rows")
    os.makedirs(workdir, exist_ok=True)
    _check_same_loop(workdir, {"initial": initial, "query": query, "warm_start": warm_start, "passes": passes,
                               "pool": pool})
    rows = []
    for seed in range(seeds):
        for strategy in strategies:
            rows += _loop(config, os.path.join(workdir, strategy, f"seed-{seed}"), strategy, config.seed + seed,
                          pool, initial, query, rounds, warm_start, passes, data)
            _write(workdir, rows)
    return rows


def _check(config, strategies, initial, query, rounds, seeds, passes) -> None:
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise UserError(f"--strategy {unknown[0]!r}: known strategies are {', '.join(STRATEGIES)}")
    for flag, value, low in (("--initial", initial, 1), ("--query", query, 1), ("--rounds", rounds, 1),
                             ("--seeds", seeds, 1), ("--passes", passes, 1)):
        if value < low:
            raise UserError(f"{flag} {value}: must be >= {low}")
    if initial < config.data.batch_size:
        raise UserError(f"--initial {initial}: round 0 trains on batches of data.batch_size={config.data.batch_size} "
                        f"rows; label at least that many")
    if methods.build(config).probabilities is None:
        raise ConfigError(f"config key 'method.name': active learning queries by class probabilities; "
                          f"{config.method.name} with loss {config.loss.name!r} gives none")
    if config.data.train_rows:
        raise ConfigError("config key 'data.train_rows': active learning sets each round's labelled rows itself")
    if "bald" in strategies and not config.model.dropout:
        raise ConfigError("config key 'model.dropout': BALD's Monte Carlo dropout passes need a model with dropout; "
                          "this config has model.dropout=0")
    if "bald" in strategies and config.model.batch_norm:
        raise ConfigError("config key 'model.batch_norm': BALD's dropout passes run the model in training mode, "
                          "where batch norm would use each batch's statistics; set model.batch_norm=False")


def _check_same_loop(workdir: str, settings: dict) -> None:
    path = os.path.join(workdir, "active.json")
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        changed = [k for k in settings if saved.get(k) != settings[k]]
        if changed:
            raise UserError(f"{workdir}: holds an active-learning loop with other {', '.join(changed)} "
                            f"({', '.join(f'{k}={saved.get(k)}' for k in changed)}); use another workdir")
    with open(path, "w") as f:
        json.dump(settings, f, indent=1)


def _loop(config, loop_dir, strategy, seed, pool, initial, query, rounds, warm_start, passes, data) -> list[dict]:
    os.makedirs(loop_dir, exist_ok=True)
    labelled = _saved(loop_dir, 0)
    if labelled is None:
        labelled = np.sort(np.random.default_rng([seed, ACTIVE_STREAM]).choice(pool, initial, replace=False))
        _save(loop_dir, 0, labelled)
    out = []
    for k in range(rounds):
        run_dir = os.path.join(loop_dir, f"round-{k}")
        cfg = config.copy_and_resolve_references()
        with cfg.unlocked():
            cfg.seed = seed
            cfg.data.train_rows = os.path.abspath(os.path.join(loop_dir, f"labelled-{k}.npy"))
            if warm_start and k > 0:
                cfg.init.pretrained = os.path.abspath(os.path.join(loop_dir, f"round-{k - 1}"))
        summary = _summary(run_dir) or train(cfg, run_dir, data=data)
        out.append({"strategy": strategy, "seed": seed, "round": k, "labelled": len(labelled),
                    **{f"val_{m}": v for m, v in scalars(summary.get("val") or {}).items()},
                    **{f"test_{m}": v for m, v in scalars(summary.get("test") or {}).items()}})
        if k == rounds - 1:
            break
        following = _saved(loop_dir, k + 1)
        if following is None:
            chosen = _query(cfg, run_dir, strategy, labelled, pool, query, seed, k, passes, data)
            following = np.sort(np.concatenate([labelled, chosen]))
            _save(loop_dir, k + 1, following)
        labelled = following
    return out


def _query(cfg, run_dir, strategy, labelled, pool, query, seed, k, passes, data) -> np.ndarray:
    """The `query` unlabelled rows the strategy asks labels for, most informative first."""
    unlabelled = np.setdiff1d(np.arange(pool), labelled)
    if query > len(unlabelled):
        raise UserError(f"--query {query}: the pool has only {len(unlabelled)} unlabelled rows left")
    if strategy == "random":
        return np.random.default_rng([seed, ACTIVE_STREAM, k + 1]).choice(unlabelled, query, replace=False)
    with cfg.unlocked():
        cfg.data.train_rows = ""  # the whole pool, to score the rows not labelled yet
    run, state, _ = workdir_lib.restore(run_dir, cfg, data=data)
    probs, _ = probabilities(run, state, "train", passes if strategy == "bald" else 0)
    probs = probs[..., unlabelled, :]
    score = informativeness(strategy, probs)
    return unlabelled[np.argsort(-score, kind="stable")[:query]]


def _saved(loop_dir: str, k: int) -> np.ndarray | None:
    path = os.path.join(loop_dir, f"labelled-{k}.npy")
    return np.load(path) if os.path.isfile(path) else None


def _save(loop_dir: str, k: int, rows: np.ndarray) -> None:
    path = os.path.join(loop_dir, f"labelled-{k}.npy")
    np.save(path + ".tmp.npy", rows.astype(np.int64))
    os.replace(path + ".tmp.npy", path)  # a kill never leaves half a labelled set


def _summary(run_dir: str) -> dict | None:
    """A finished round's summary: summary.json written after its config.json."""
    config_path, summary_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "summary.json")
    if os.path.isfile(summary_path) and os.path.getmtime(summary_path) >= os.path.getmtime(config_path):
        with open(summary_path) as f:
            return json.load(f)
    return None


def _write(workdir: str, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(os.path.join(workdir, "curves.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(workdir, "curves.json"), "w") as f:
        json.dump(rows, f, indent=1)
    metric = next((m for m in ("test_accuracy", "val_accuracy") if any(m in r for r in rows)), None)
    if metric:
        from jtrain.plots import plot_learning_curves

        curves = {s: curve(rows, s, metric) for s in dict.fromkeys(r["strategy"] for r in rows)}
        plot_learning_curves(curves, metric, os.path.join(workdir, "learning_curve.png"))


def format_curves(rows: list[dict]) -> str:
    """Mean (std over seeds) of the test accuracy per strategy and labelled count, one line per strategy."""
    metric = next((m for m in ("test_accuracy", "val_accuracy") if any(m in r for r in rows)), None)
    if metric is None:
        return ""
    lines = [f"{metric} by labelled rows, mean (std over seeds):"]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    for strategy in strategies:
        points = curve(rows, strategy, metric)
        lines.append(f"  {strategy:<17}" + "  ".join(f"{n}: {m:.4f} ({s:.4f})" for n, m, s, _ in points))
    if "random" in strategies:
        budget, target, _, _ = curve(rows, "random", metric)[-1]
        lines.append(f"labels to reach random's {target:.4f} with all its {budget} (mean curve):")
        for strategy in strategies:
            need = labels_to_reach(curve(rows, strategy, metric), target)
            lines.append(f"  {strategy:<17}" + (f"{need} ({need / budget:.0%})" if need else "not reached"))
    return "\n".join(lines)


def labels_to_reach(points: list[tuple[int, float, float, int]], target: float) -> int | None:
    """The fewest labelled rows whose mean metric reaches `target`, or None."""
    return next((n for n, mean, _, _ in points if mean >= target), None)


def curve(rows: list[dict], strategy: str, metric: str) -> list[tuple[int, float, float, int]]:
    """(labelled, mean, population std, seeds) per labelled count of one strategy."""
    by = {}
    for r in rows:
        if r["strategy"] == strategy and metric in r:
            by.setdefault(r["labelled"], []).append(r[metric])
    return [(n, float(np.mean(v)), float(np.std(v)), len(v)) for n, v in sorted(by.items())]
