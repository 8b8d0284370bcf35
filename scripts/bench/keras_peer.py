"""Keras 3 (JAX backend) on a workload, the way a Keras user trains: `model.compile(...)`, `model.fit(arrays)`.

    KERAS_BACKEND=jax python scripts/bench/keras_peer.py speed --workload mlp --data DIR/mlp.npz --steps 300
    KERAS_BACKEND=jax python scripts/bench/keras_peer.py recipe --data DIR/cnn.npz     # time_to_accuracy.py

Same layers, initialisers (lecun normal kernels, zero biases, as Flax), AdamW with the same hyperparameters and
no decay on biases, accuracy computed every step (as jtrain's step does).

speed: steady-state steps/s from epoch boundaries (Keras turns the logs into Python floats there, so the device
has caught up): epochs of `--steps` // 3 steps, the first (compilation) not counted.
recipe: the digits_cnn experiment's schedule and augmentation (see recipe.py), then test accuracy.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import recipe  # noqa: E402
from harness import emit  # noqa: E402
from workloads import WORKLOADS  # noqa: E402


def build(w: dict, input_shape: tuple) -> keras.Model:
    dense = lambda n, act=None: keras.layers.Dense(n, activation=act, kernel_initializer="lecun_normal")
    layers = [keras.Input(input_shape)]
    if w["kind"] == "mlp":
        layers += [keras.layers.Flatten()] + [dense(h, "relu") for h in w["hidden"]]
    else:
        for features in w["conv"]:
            layers += [keras.layers.Conv2D(features, 3, padding="same", activation="relu",
                                           kernel_initializer="lecun_normal"),
                       keras.layers.MaxPooling2D(2, padding="same")]
        layers += [keras.layers.Flatten(), keras.layers.Dropout(w["dropout"]), dense(w["dense"], "relu"),
                   keras.layers.Dropout(w["dropout"])]
    return keras.Sequential(layers + [dense(10)])


def compile_model(model: keras.Model, w: dict, total_steps: int) -> None:
    lr = w["lr"]
    if w["schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(0.0, max(1, total_steps - w["warmup"]), alpha=0.0,
                                                    warmup_target=w["lr"], warmup_steps=w["warmup"])
    optimizer = keras.optimizers.AdamW(lr, weight_decay=w["weight_decay"], beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_end(self, epoch, logs=None):
        float(logs["loss"])  # a host value: the device has finished the epoch
        self.times.append(time.perf_counter())


def speed(a) -> None:
    w = WORKLOADS[a.workload]
    arrays = np.load(a.data)
    x, y, b = arrays["x_train"], arrays["y_train"], w["batch"]
    per_epoch = max(1, a.steps // 3)
    need = per_epoch * b  # whole batches only: a partial one would compile a second step function
    reps = -(-need // len(x))
    x, y = np.concatenate([x] * reps)[:need], np.concatenate([y] * reps)[:need]
    model = build(w, x.shape[1:])
    compile_model(model, w, per_epoch * 4)
    timer = EpochTimes()
    model.fit(x, y, batch_size=b, epochs=4, shuffle=True, verbose=0, callbacks=[timer])
    steps = per_epoch * 3
    emit({"steps_per_sec": steps / (timer.times[-1] - timer.times[0]), "params": model.count_params()})


def run_recipe(a) -> None:
    w = WORKLOADS["cnn"]
    arrays = np.load(a.data)
    xs, ys = recipe.stream(arrays["x_train"], arrays["y_train"], a.seed, a.epochs)  # all steps' batches, in order
    keras.utils.set_random_seed(a.seed)
    model = build(w, xs.shape[1:])
    compile_model(model, w, len(xs) // recipe.BATCH)
    model.fit(xs, ys, batch_size=recipe.BATCH, epochs=1, shuffle=False, verbose=0)
    logits = model.predict(arrays["x_test"], batch_size=256, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, -1) == arrays["y_test"]))
    emit({"test_accuracy": accuracy, "process_s": time.perf_counter() - T0, "params": model.count_params()})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["speed", "recipe"])
    p.add_argument("--workload", default="cnn", choices=list(WORKLOADS))
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=300, help="speed: steps timed (3 epochs of steps // 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=recipe.EPOCHS, help="recipe: epochs (the experiment's: 30)")
    a = p.parse_args()
    speed(a) if a.mode == "speed" else run_recipe(a)


if __name__ == "__main__":
    main()
