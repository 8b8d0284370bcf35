"""Your own data against scikit-learn: the penguins and cars experiments beside a linear model and
HistGradientBoosting fitted on the same training rows and scored on the same test rows.

    python scripts/own_data_baselines.py [--seeds 3] [--markdown FILE]

jtrain runs once per seed (the split is data.split_seed's, the same for every seed); scikit-learn's models get
the usual preparation (SimpleImputer, OneHotEncoder, StandardScaler in a ColumnTransformer) fitted on the
training rows. Prints a Markdown table: mean +- std over seeds where the model is seeded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jtrain  # noqa: E402
from jtrain.data import own, tabular  # noqa: E402


def same_split(config):
    """The experiment's table split into train / test rows exactly as jtrain splits it."""
    kind, _, path = config.data.name.partition(":")
    frame = own.read_table(kind, path)
    frame = frame[frame[config.data.target].notna()].reset_index(drop=True)
    task = own.infer_task(config.data, frame[config.data.target])
    rows = own.split_rows(frame[config.data.target].to_numpy(), task, config.data)
    types = tabular.infer_types(frame.iloc[rows["train"]], config.data.target, own.columns(config.data.features),
                                own.columns(config.data.categorical), own.columns(config.data.numeric),
                                own.columns(config.data.drop))
    return frame.iloc[rows["train"]], frame.iloc[rows["test"]], types, task


def sklearn_scores(config, seeds: int) -> dict[str, list[float]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, test, types, task = same_split(config)
    numeric = [c for c, t in types.items() if t == "numeric"]
    categorical = [c for c, t in types.items() if t == "categorical"]
    target = config.data.target

    def prepared():
        return ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
             categorical)])

    def as_text(frame):  # categories as strings (Cylinders is a number), missing ones left missing
        frame = frame.copy()
        for c in categorical:
            frame[c] = frame[c].map(lambda v: v if v is None or v != v else str(v)).astype(object)
        return frame

    x_train, x_test = as_text(train), as_text(test)
    y_train, y_test = train[target].to_numpy(), test[target].to_numpy()
    out: dict[str, list[float]] = {}
    if task == "classification":
        models = {"LogisticRegression": lambda s: LogisticRegression(max_iter=2000),
                  "HistGradientBoosting": lambda s: HistGradientBoostingClassifier(random_state=s)}
    else:
        models = {"Ridge": lambda s: Ridge(alpha=1.0),
                  "HistGradientBoosting": lambda s: HistGradientBoostingRegressor(random_state=s)}
    for name, make in models.items():
        for seed in range(seeds):
            model = make_pipeline(prepared(), make(seed)).fit(x_train, y_train)
            pred = model.predict(x_test)
            if task == "classification":
                out.setdefault(f"{name} accuracy", []).append(accuracy_score(y_test, pred))
            else:
                out.setdefault(f"{name} MAE", []).append(mean_absolute_error(y_test, pred))
                out.setdefault(f"{name} R^2", []).append(r2_score(y_test, pred))
    return out


def jtrain_scores(config, seeds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for seed in range(seeds):
        config.seed = seed
        config.train.progress = False
        with tempfile.TemporaryDirectory() as workdir:
            test = jtrain.train(config, workdir)["test"]
        if "accuracy" in test:
            out.setdefault("jtrain MLP accuracy", []).append(test["accuracy"])
        else:
            out.setdefault("jtrain MLP MAE", []).append(test["mae"])
            out.setdefault("jtrain MLP R^2", []).append(test["r2"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--markdown", default="")
    args = p.parse_args()
    lines = ["| experiment | model | test metric | mean +- std over seeds |", "|---|---|---|---|"]
    for experiment in ("experiments/penguins_mlp.py", "experiments/cars_mlp.py"):
        config = jtrain.load_experiment(os.path.join(ROOT, experiment))
        scores = {**jtrain_scores(config, args.seeds), **sklearn_scores(config, args.seeds)}
        for key, values in scores.items():
            model, metric = key.rsplit(" ", 1)
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            lines.append(f"| {os.path.basename(experiment)} | {model} | {metric} | "
                         f"{statistics.mean(values):.4f} +- {spread:.4f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
