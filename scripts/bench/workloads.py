"""The models and data every speed benchmark uses, defined once: jtrain config overrides on one side, the plain
hyperparameters the hand-written loop and the peers rebuild the same model from on the other.

    python scripts/bench/workloads.py export --workload mlp --out DIR   # DIR/mlp.npz: standardised arrays
    python scripts/bench/workloads.py available --workload decoder     # '' or what is missing

The export reads the data through jtrain's own TFDS sources and standardisation, so every contender trains on
identical numbers; the hand-written loop and the peers then load only NumPy (no jtrain, no TFDS import).
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

DIGITS_CNN = "experiments/digits_cnn.py"

# name -> what it is. `overrides` go on top of `base` (an experiment file, or jtrain's defaults when "").
WORKLOADS = {
    # Dispatch-bound: a step is a few microseconds of arithmetic, so per-step framework work shows in full.
    "tiny": dict(base="", dataset="digits", batch=8, kind="mlp", hidden=(32,), dropout=0.0,
                 lr=1e-3, weight_decay=0.0, schedule="constant", warmup=0,
                 overrides=["data.name=digits", "data.batch_size=8", "model.name=mlp", "model.hidden_sizes=(32,)"]),
    # The same, 32 steps per dispatch (train.steps_per_call): against the hand-written loop's one step per call.
    "tiny_multi": dict(base="", dataset="digits", batch=8, kind="mlp", hidden=(32,), dropout=0.0,
                       lr=1e-3, weight_decay=0.0, schedule="constant", warmup=0,
                       overrides=["data.name=digits", "data.batch_size=8", "model.name=mlp",
                                  "model.hidden_sizes=(32,)", "train.steps_per_call=32",
                                  "train.log_every_steps=32", "checkpoint.every_steps=0"]),  # multiples of 32
    "mlp": dict(base="", dataset="fashion_mnist", batch=128, kind="mlp", hidden=(512, 512), dropout=0.0,
                lr=1e-3, weight_decay=0.0, schedule="constant", warmup=0,
                overrides=["data.name=fashion_mnist", "data.batch_size=128", "model.name=mlp",
                           "model.hidden_sizes=(512, 512)"]),
    # The default experiment's model and optimizer; augmentation off, since the other contenders get no
    # augmentation either (time_to_accuracy.py runs the experiment exactly as it is).
    "cnn": dict(base=DIGITS_CNN, dataset="digits", batch=32, kind="cnn", conv=(32, 64), dense=128, dropout=0.1,
                lr=2e-3, weight_decay=1e-4, schedule="cosine", warmup=50,
                overrides=["data.augment=", "eval.every_steps=0"]),
    # The Shakespeare character GPT as its experiment configures it (4 layers, 128 wide, 128 tokens, batch 32).
    "decoder": dict(base="experiments/shakespeare_char_gpt.py", dataset="shakespeare_char", batch=32, kind="decoder",
                    lr=2e-3, b2=0.99, weight_decay=0.1, clip=1.0, schedule="cosine", warmup=100, end_factor=0.1,
                    overrides=["eval.every_steps=0"]),
}
DECODER_FIELDS = ("vocab_size", "num_layers", "num_heads", "embed_dim", "mlp_dim", "max_len", "position", "dropout")


def available(workload: str) -> str:
    """'' when the workload can run in this checkout, else why not (the decoder needs its model, text dataset
    and experiment, which arrive separately)."""
    if workload != "decoder":
        return ""
    from jtrain.data import registry
    from jtrain import models

    w = WORKLOADS[workload]
    if "decoder" not in models.families():
        return "no model.name='decoder' registered"
    if not getattr(registry.DATASETS.get(w["dataset"]), "is_text", False):  # a builtin token dataset
        return f"no token dataset {w['dataset']!r} registered"
    if not os.path.isfile(w["base"]):
        return f"no {w['base']}"
    return ""


def jtrain_config(workload: str, steps: int, extra: list[str] = ()):
    """The jtrain ConfigDict of a workload, `steps` long, no val/test evaluation (nothing but training to time)."""
    import jtrain

    w = WORKLOADS[workload]
    config = jtrain.load_experiment(w["base"]) if w["base"] else jtrain.default_config()
    jtrain.apply_overrides(config, [*w["overrides"], f"train.steps={steps}", "train.epochs=0",
                                    "data.splits.val=none", "data.splits.test=none", *extra])
    return config


def learning_rate(w: dict, step: np.ndarray | int, total: int) -> float:
    """The workload's schedule as a plain formula (optax's warmup_cosine_decay_schedule, end value 0)."""
    if w["schedule"] == "constant":
        return w["lr"]
    if step < w["warmup"]:
        return w["lr"] * step / w["warmup"]
    progress = min(1.0, (step - w["warmup"]) / max(1, total - w["warmup"]))
    return w["lr"] * 0.5 * (1 + math.cos(math.pi * progress))


def export(workload: str, out_dir: str, with_test: bool = False) -> str:
    """Writes OUT/<workload>.npz: x_train (N, H, W, C) float32 standardised, y_train (N,) int32 [, x_test, y_test]."""
    from jtrain import data as data_lib
    from jtrain.data import indexed

    if workload == "decoder":
        return export_tokens(out_dir)
    overrides = [] if not with_test else ["data.splits.test="]  # "" = the dataset's default test split
    config = jtrain_config(workload, 1, overrides)
    data = data_lib.load(config.data)  # an IndexedSource: random access to each split's examples
    arrays = {}
    for role in ("train", "test") if with_test else ("train",):
        source = data.sources[role]
        batch = indexed.read_batch(source, np.arange(len(source)), data.spec)
        batch = indexed.standardize(batch, data.stats, config.data.normalize)
        arrays[f"x_{role}"], arrays[f"y_{role}"] = batch["inputs"], batch["targets"]
    path = os.path.join(out_dir, f"{workload}.npz")
    np.savez(path, **arrays)
    return path


def export_tokens(out_dir: str, batches: int = 16) -> str:
    """OUT/decoder.npz: `batches` training batches of jtrain's text pipeline (x_train / y_train / mask_train,
    each (n, T)) and the decoder's hyperparameters, so the hand-written loop builds the same model."""
    from jtrain import data as data_lib

    config = jtrain_config("decoder", 1, ["data.prefetch=0"])
    data = data_lib.load(config.data)
    it = iter(data.train_dataset(config.data, config.seed))
    drawn = [next(it) for _ in range(batches)]
    arrays = {f"{out}_train": np.concatenate([b[key] for b in drawn])
              for out, key in (("x", "inputs"), ("y", "targets"), ("mask", "mask"))}
    model = dict(config.model)
    model["vocab_size"] = model["vocab_size"] or data.spec.num_classes
    arrays.update({f"model_{k}": np.asarray(model[k]) for k in DECODER_FIELDS})
    path = os.path.join(out_dir, "decoder.npz")
    np.savez(path, **arrays)
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["export", "available"])
    p.add_argument("--workload", required=True, choices=list(WORKLOADS))
    p.add_argument("--out", default=".")
    p.add_argument("--with-test", action="store_true")
    a = p.parse_args()
    from harness import emit

    if a.command == "available":
        emit({"missing": available(a.workload)})
    else:
        emit({"path": export(a.workload, a.out, a.with_test)})
