"""The end-of-run summary as a table for the terminal."""

from __future__ import annotations

from jtrain.metrics import SCALAR_KEYS, scalars


def format_table(summary: dict, splits: list[str] | None = None) -> str:
    """One row per split (train / val / test, or the `splits` given), one column per scalar metric they report."""
    splits = [s for s in (splits or ("train", "val", "test")) if summary.get(s)]
    # Evaluated splits also name a training method's own metrics (jtrain/methods).
    method_keys = [k for s in splits if s != "train" for k in scalars(summary[s]) if k not in SCALAR_KEYS]
    keys = [*SCALAR_KEYS, *dict.fromkeys(method_keys), "num_examples"]
    columns = [k for k in keys if any(k in summary[s] for s in splits)]
    header = ["split", *columns]
    rows = [[s, *(_cell(summary[s].get(k)) for k in columns)] for s in splits]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [f"summary at step {summary.get('step')}", line(header), line(["-" * w for w in widths]), *map(line, rows)]
    if summary.get("probe"):
        lines.extend(probe_table(summary["probe"]))
    if summary.get("time"):
        t = summary["time"]
        lines.append(f"goodput {t['goodput']:.1%} of {t['total_s']:.1f} s (compile {t['compile_s']:.1f} s, data "
                     f"{t['data_s']:.1f} s, eval {t['eval_s']:.1f} s, checkpoint {t['checkpoint_s']:.1f} s)")
        if "build_s" in t:
            lines.append("wall time: " + (f"start-up {t['before_train_s']:.1f} s, " if "before_train_s" in t else "")
                         + f"build {t['build_s']:.1f} s, state and feed {t.get('init_s', 0.0):.1f} s, loop "
                           f"{t['total_s']:.1f} s, end (final evaluation, "
                           f"plots) {t['end_s']:.1f} s")
    return "\n".join(lines)


def probe_table(probe: dict) -> list[str]:
    """The encoder's probe scores beside the randomly initialised encoder's (jtrain/probe.py)."""
    keys = ("linear_probe_accuracy", "knn_accuracy", "kmeans_nmi", "kmeans_ari")
    header = ["", *keys]
    rows = [[name, *(_cell(probe[name].get(k)) for k in keys)] for name in ("encoder", "random_encoder")]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [f"probe on {probe['split']} ({probe['train_examples']} training examples; labels unseen in training)",
            line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def data_summary(report: dict) -> str:
    """A few lines from data_report.json (jtrain/data/own.py): rows per split, features, missing values, classes."""
    roles = report.get("roles", {})
    lines = ["data: " + ", ".join(f"{role} {entry['rows']:,} rows" for role, entry in roles.items())
             + (f"; {report['features_in']} features after preparation" if "features_in" in report else "")]
    missing: dict[str, int] = {}
    for entry in roles.values():
        for column, count in entry.get("missing", {}).items():
            missing[column] = missing.get(column, 0) + count
    if missing:
        lines.append("  missing values: " + ", ".join(f"{c} {n}" for c, n in sorted(missing.items())))
    balance = roles.get("train", {}).get("class_balance")
    if balance:
        lines.append("  classes (train): " + ", ".join(f"{c} {n}" for c, n in balance.items()))
    for role, entry in roles.items():
        if entry.get("dropped_missing_target"):
            lines.append(f"  {role}: {entry['dropped_missing_target']} rows without a target left out")
        if entry.get("unseen_categories"):
            lines.append(f"  {role}: categories unseen in training: "
                         + ", ".join(f"{c} {n}" for c, n in entry["unseen_categories"].items()))
    return "\n".join(lines)
