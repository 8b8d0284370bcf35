"""Finished runs side by side: one split's metrics from each workdir's summary.json, and each run's difference
from the first (e.g. a fine-tuned model against the same architecture trained from scratch)."""

from __future__ import annotations

import json
import os

from jtrain.errors import UserError
from jtrain.metrics import SCALAR_KEYS, scalars


def compare(workdirs: list[str], split: str = "test") -> dict:
    """{"split", "runs": [{"workdir", "step", metric: value}], "minus_first": [{metric: value - first's}]}."""
    if len(workdirs) < 2:
        raise UserError("compare: give at least two workdirs")
    runs = [_metrics(w, split) for w in workdirs]
    # Training speed is no metric of a split, but the train split's summary holds it beside the method's own.
    keys = SCALAR_KEYS if split == "train" else scalars(runs[0])
    shared = [k for k in keys if all(k in r for r in runs)]
    if not shared:
        raise UserError(f"compare: the runs share no {split} metric")
    runs = [{"workdir": w, "step": r["step"], **{k: r[k] for k in shared}} for w, r in zip(workdirs, runs)]
    first = runs[0]
    return {"split": split, "runs": runs, "minus_first": [{k: r[k] - first[k] for k in shared} for r in runs[1:]]}


def _metrics(workdir: str, split: str) -> dict:
    path = os.path.join(workdir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no summary (has the run finished?)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from e
    if split not in summary or not isinstance(summary[split], dict):
        raise UserError(f"{path}: no {split!r} metrics (it has {', '.join(k for k in summary if k != 'step')})")
    return {"step": summary.get("step"), **summary[split]}


def format_comparison(result: dict) -> str:
    metrics = [k for k in result["runs"][0] if k not in ("workdir", "step")]
    header = ["run", "step", *metrics]
    rows = [[r["workdir"], str(r["step"]), *(f"{r[k]:.4f}" for k in metrics)] for r in result["runs"]]
    rows += [[f"{r['workdir']} - first", "", *(f"{d[k]:+.4f}" for k in metrics)]
             for r, d in zip(result["runs"][1:], result["minus_first"])]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([f"{result['split']} metrics", line(header), line(["-" * w for w in widths]), *map(line, rows)])
