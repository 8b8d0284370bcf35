"""Your own data: preparing a 1M-row CSV (jtrain against pandas + scikit-learn) and training the MLP from it.

    python scripts/bench/own_data.py [--quick] [--repeats 3] [--json out.json]

The parent writes, once and seeded, a CSV of 1,000,000 rows: 15 numeric columns with ~5% missing values, 4
string categorical columns (3 to 50 categories, ~5% missing) and a 3-class target. Each measurement is a fresh
worker; the contenders alternate and the medians are reported.

Preparing (rows/s; imports are done before the clock starts in every worker):
  jtrain         `jtrain.data.own.load(config.data)` with data.name=csv:PATH into a fresh, empty data dir: read,
                 fingerprint, stratified 70/15/15 split, fit on train, transform the three splits, report, cache
                 write (the worker also prints the time of each of those parts)
  sklearn        `pd.read_csv`, `train_test_split` stratified 70/15/15, a ColumnTransformer (mean imputer +
                 StandardScaler on the numeric columns, most-frequent imputer + OneHotEncoder on the categorical
                 ones) fitted on train, the three splits transformed to float32, the target label-encoded
  jtrain cached  the same `own.load` again, its cache already written: the user's second run
Reported: jtrain / pandas+sklearn (target >= 0.5), and the cached load's rows/s.

Training (steps/s, as input_pipeline.py): the loop's jitted step `run.train_call(1)` fed by its real feed
(`jtrain.feed.for_run`) over a run built with data.name=csv:<the first 100k rows>, against the feed's first 32
batches kept on the device and cycled; the MLP (512, 512) at batch 128 and 1024. That CSV is prepared once
before the timing. Reported: real / staged (target >= 0.97).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import harness

ROWS, TRAIN_ROWS = 1_000_000, 100_000
QUICK_ROWS, QUICK_TRAIN_ROWS = 50_000, 20_000
NUMERIC, MISSING = 15, 0.05
CATEGORIES = {"region": 4, "channel": 8, "product": 20, "store": 50}  # column -> distinct values
TARGET = "label"
PREP_TARGET, TRAIN_TARGET = 0.5, 0.97
CASES = {128: 400, 1024: 75}  # batch size -> steps timed, as input_pipeline.py's MLP rows
HIDDEN = "(512, 512)"  # workloads.py's MLP


# ------------------------------------------------------------------------------------------ workers


def write_tables(path: str, train_path: str, rows: int, train_rows: int) -> None:
    """The CSV of `rows` rows and, beside it, its first `train_rows` rows: the target depends on a few numeric
    columns and two categorical ones, so the classes are learnable and unbalanced."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = {}
    logits = np.zeros((rows, 3))
    for i in range(NUMERIC):
        scale = 10.0 ** rng.integers(-1, 4)
        v = rng.normal(rng.normal(0, 3), 1.0, rows) * scale
        if i % 5 == 4:
            v = np.round(rng.lognormal(2.0, 1.0, rows), 2)  # skewed, like amounts
        logits[:, i % 3] += 0.5 * (v - v.mean()) / v.std() if i < 6 else 0.0
        v[rng.random(rows) < MISSING] = np.nan
        frame[f"x{i:02d}"] = v
    for col, n in CATEGORIES.items():
        names = np.array([f"{col}_{k:02d}" for k in range(n)], dtype=object)
        p = rng.dirichlet(np.ones(n))
        codes = rng.choice(n, rows, p=p)
        if col in ("region", "product"):
            logits[np.arange(rows), codes % 3] += 0.8
        values = names[codes]
        values[rng.random(rows) < MISSING] = None
        frame[col] = values
    logits += rng.gumbel(size=logits.shape)
    frame[TARGET] = np.array(["bronze", "gold", "silver"], dtype=object)[np.argmax(logits + [0.6, -0.4, 0.0], axis=1)]
    df = pd.DataFrame(frame)
    df.to_csv(path, index=False)
    df.iloc[:train_rows].to_csv(train_path, index=False)
    harness.emit({"bytes": os.path.getsize(path), "columns": df.shape[1]})


def table_config(csv: str, data_dir: str, extra: list[str] = ()):
    import jtrain

    config = jtrain.default_config()
    jtrain.apply_overrides(config, [f"data.name=csv:{csv}", f"data.target={TARGET}", f"data.dir={data_dir}", *extra])
    return config


def timed_phases(phases: dict) -> None:
    """Wraps the parts of own.load so that each adds its seconds to `phases`: the worker's per-part profile."""
    from jtrain.data import own, registry, tabular

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    registry.fingerprint = timed("fingerprint", registry.fingerprint)
    own._read_cache = timed("cache_read", own._read_cache)
    own.read_table = timed("read_csv", own.read_table)
    own.split_rows = timed("split", own.split_rows)
    own.table_report = timed("report", own.table_report)
    own._write_cache = timed("cache_write", own._write_cache)
    tabular.infer_types = timed("fit", tabular.infer_types)
    tabular.Preparation.fit = staticmethod(timed("fit", tabular.Preparation.fit))
    tabular.Preparation.transform = timed("transform", tabular.Preparation.transform)
    tabular.Preparation.encode_target = timed("transform", tabular.Preparation.encode_target)


def prepare_jtrain(csv: str, data_root: str, cached: bool) -> None:
    """own.load into a fresh data dir (removed after), or into `data_root` itself whose cache is warm."""
    import pandas  # noqa: F401  (imports outside the clock, as for the pandas+sklearn worker)
    import sklearn.model_selection  # noqa: F401

    from jtrain.data import own

    data_dir = data_root if cached else tempfile.mkdtemp(prefix="data_", dir=data_root)
    config = table_config(csv, data_dir)
    phases: dict[str, float] = {}
    timed_phases(phases)
    start = time.perf_counter()
    source = own.load(config.data)
    seconds = time.perf_counter() - start
    rows = sum(int(v) for v in source.fitted["rows"].values())
    phases["other"] = seconds - sum(phases.values())
    if not cached:
        assert os.listdir(os.path.join(data_dir, "own")), "no cache written"
        shutil.rmtree(data_dir)
    harness.emit({"per_sec": rows / seconds, "seconds": seconds, "rows": rows,
                  "features": int(source.spec.input_shape[0]), **{f"s_{k}": v for k, v in phases.items()}})


def prepare_sklearn(csv: str) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

    phases = {}
    start = time.perf_counter()
    frame = pd.read_csv(csv)
    phases["s_read_csv"] = time.perf_counter() - start
    y_all = frame[TARGET].to_numpy()
    rows = np.arange(len(frame))
    train, rest = train_test_split(rows, train_size=0.7, random_state=0, stratify=y_all)
    val, test = train_test_split(rest, train_size=0.5, random_state=0, stratify=y_all[rest])
    splits = {role: frame.iloc[np.sort(idx)].reset_index(drop=True) for role, idx in
              (("train", train), ("val", val), ("test", test))}
    phases["s_split"] = time.perf_counter() - start - sum(phases.values())
    numeric = [c for c in frame.columns if c.startswith("x")]
    categorical = list(CATEGORIES)
    prep = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), numeric),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical)])
    prep.fit(splits["train"])
    labels = LabelEncoder().fit(splits["train"][TARGET])
    phases["s_fit"] = time.perf_counter() - start - sum(phases.values())
    out = {role: (prep.transform(df).astype(np.float32), labels.transform(df[TARGET]).astype(np.int32))
           for role, df in splits.items()}
    seconds = time.perf_counter() - start
    phases["s_transform"] = seconds - sum(phases.values())
    harness.emit({"per_sec": len(frame) / seconds, "seconds": seconds, "rows": len(frame),
                  "features": int(out["train"][0].shape[1]), **phases})


def train(mode: str, csv: str, data_dir: str, batch: int, steps: int) -> None:
    """input_pipeline.py's worker over a run of the prepared CSV (its cache warm in `data_dir`)."""
    import jax

    from jtrain import components, feed

    config = table_config(csv, data_dir, ["model.name=mlp", f"model.hidden_sizes={HIDDEN}", f"data.batch_size={batch}",
                                          f"train.steps={steps}", "train.epochs=0"])
    run = components.build(config)
    batches = feed.for_run(run, config.seed)
    leaves = run.state_codec.flatten(run.init())  # the calls take and return the state as flat arrays
    if mode == "staged":
        # The feed's first 32 batches as its calls receive them (an echo in place of the step), then cycled.
        echo = batches.calls(lambda n: jax.jit(lambda arrays, batch: (arrays, batch)))
        staged = [echo([], 1)[1] for _ in range(min(steps, 32))]
        jax.block_until_ready(staged)
        step = run.train_call(1)  # (arrays, batch) -> (arrays, metrics)
        call = lambda leaves, i: step(leaves, staged[i % len(staged)])
    else:
        loop_call = batches.calls(run.train_call)  # the loop's: the step and the next batch's take in one call
        call = lambda leaves, i: loop_call(leaves, 1)
    for i in range(5):  # the first compiles
        leaves, metrics = call(leaves, i)
    jax.block_until_ready(leaves)
    start = time.perf_counter()
    for i in range(steps):
        leaves, metrics = call(leaves, i)
    jax.block_until_ready(leaves)
    harness.emit({"per_sec": steps / (time.perf_counter() - start), "features": int(run.data.spec.input_shape[0]),
                  "train_rows": int(run.data.num_train)})


def prepare_once(csv: str, data_dir: str) -> None:
    from jtrain.data import own

    source = own.load(table_config(csv, data_dir).data)
    harness.emit({"rows": {k: int(v) for k, v in source.fitted["rows"].items()}})


# ------------------------------------------------------------------------------------------ parent


def phase_note(results: list[dict]) -> str:
    keys = [k for k in results[0] if k.startswith("s_")]
    return ", ".join(f"{k[2:]} {harness.median(results, k):.2f}" for k in keys)


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        mode, rest = args.worker[0], args.worker[1:]
        if mode == "write":
            return write_tables(rest[0], rest[1], int(rest[2]), int(rest[3]))
        if mode in ("jtrain", "cached"):
            return prepare_jtrain(rest[0], rest[1], mode == "cached")
        if mode == "sklearn":
            return prepare_sklearn(rest[0])
        if mode == "prepare":
            return prepare_once(rest[0], rest[1])
        return train(mode, rest[0], rest[1], int(rest[2]), int(rest[3]))
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    n_rows, n_train = (QUICK_ROWS, QUICK_TRAIN_ROWS) if args.quick else (ROWS, TRAIN_ROWS)
    script = "scripts/bench/own_data.py"
    rows, details = [], {}
    with harness.scratch_dir("own") as tmp:
        csv, train_csv = os.path.join(tmp, "table.csv"), os.path.join(tmp, "table_train.csv")
        t = time.perf_counter()
        made = harness.run_worker([script, "--worker", "write", csv, train_csv, str(n_rows), str(n_train)])
        print(f"wrote {csv}: {n_rows} rows, {made['columns']} columns, {made['bytes'] / 1e6:.0f} MB "
              f"({time.perf_counter() - t:.0f} s)", flush=True)

        fresh, warm = os.path.join(tmp, "fresh"), os.path.join(tmp, "warm")
        os.makedirs(fresh)
        harness.run_worker([script, "--worker", "cached", csv, warm])  # writes the cache the cached runs read
        print(f"own data, preparing {n_rows} rows:", flush=True)
        results = harness.alternate({"jtrain": [script, "--worker", "jtrain", csv, fresh],
                                     "pandas+sklearn": [script, "--worker", "sklearn", csv],
                                     "jtrain cached": [script, "--worker", "cached", csv, warm]}, repeats)
        ours, theirs, cached = (harness.median(results[m], "per_sec") for m in ("jtrain", "pandas+sklearn",
                                                                               "jtrain cached"))
        ratio = ours / theirs
        size = f"{n_rows // 10**6}M" if n_rows % 10**6 == 0 else f"{n_rows // 1000}k"
        rows.append(harness.row(f"own data: prepare {size}-row CSV, jtrain / pandas+sklearn", ratio,
                                target=f">= {PREP_TARGET}", met=ratio >= PREP_TARGET,
                                note=f"{harness.rate(ours)} vs {harness.rate(theirs)} rows/s"))
        rows.append(harness.row("own data: second load (cache hit) / first", cached / ours,
                                note=f"{harness.rate(cached)} rows/s (no target)"))
        for name in results:
            print(f"  {name} median seconds per part: {phase_note(results[name])}")
        details["prepare"] = results

        data_dir = os.path.join(tmp, "train_data")
        harness.run_worker([script, "--worker", "prepare", train_csv, data_dir])
        for batch, steps in CASES.items():
            steps = max(5, steps // 10) if args.quick else steps
            print(f"own data, MLP b{batch} from {n_train // 1000}k prepared rows:", flush=True)
            argv = lambda mode: [script, "--worker", mode, train_csv, data_dir, str(batch), str(steps)]
            results = harness.alternate({m: argv(m) for m in ("pipeline", "staged")}, repeats,
                                        env=harness.cached_compile_env(tmp))
            pipe, staged = (harness.median(results[m], "per_sec") for m in ("pipeline", "staged"))
            rows.append(harness.row(f"own data: MLP b{batch} from a prepared CSV, real / staged", pipe / staged,
                                    target=f">= {TRAIN_TARGET}", met=pipe / staged >= TRAIN_TARGET,
                                    note=f"{harness.rate(pipe)} vs {harness.rate(staged)} steps/s"))
            details[f"mlp_b{batch}"] = results
    harness.finish(args, "own_data", rows, details, load_start)


if __name__ == "__main__":
    main()
