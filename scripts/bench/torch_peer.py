"""PyTorch eager (CPU) on a workload: the plain loop a PyTorch user writes, on tensors prepared before timing.

    python scripts/bench/torch_peer.py speed --workload mlp --data DIR/mlp.npz --steps 300
    python scripts/bench/torch_peer.py recipe --data DIR/cnn.npz          # time_to_accuracy.py

Same layers, initialisers (truncated-normal lecun kernels, zero biases, as Flax), AdamW with the same
hyperparameters and no decay on biases; `torch.set_num_threads` = the machine's core count. Images are NCHW,
PyTorch's native layout. The step computes the loss only (what a PyTorch loop does; jtrain's step also
computes accuracy). speed reports the better of all cores and 1 thread (see speed()); recipe first times 10
steps each way and trains on with the faster.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import recipe  # noqa: E402
from harness import emit  # noqa: E402
from workloads import WORKLOADS, learning_rate  # noqa: E402


def build(w: dict, input_shape: tuple) -> nn.Module:
    if w["kind"] == "mlp":
        layers, width = [nn.Flatten()], int(np.prod(input_shape))
        for h in w["hidden"]:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
    else:
        layers, channels, (height, wide) = [], input_shape[-1], input_shape[:2]
        for features in w["conv"]:
            layers += [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            channels, height, wide = features, math.ceil(height / 2), math.ceil(wide / 2)
        width = channels * height * wide
        layers += [nn.Flatten(), nn.Dropout(w["dropout"]), nn.Linear(width, w["dense"]), nn.ReLU(),
                   nn.Dropout(w["dropout"])]
        width = w["dense"]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):  # Flax's lecun_normal: truncated normal, variance 1 / fan_in
            # 0.8796...: the std of a standard normal truncated to [-2, 2], which the scale divides out.
            std = math.sqrt(1.0 / m.weight[0].numel()) / 0.87962566
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(m.bias)
    return model


def optimizer(model: nn.Module, w: dict, total_steps: int):
    kernels = [p for p in model.parameters() if p.ndim > 1]
    biases = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": kernels, "weight_decay": w["weight_decay"]},
                             {"params": biases, "weight_decay": 0.0}], lr=w["lr"], betas=(0.9, 0.999), eps=1e-8)
    # LambdaLR scales the base lr: the same warm-up + cosine formula as optax's schedule.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: learning_rate(w, step, total_steps) / w["lr"])
    return opt, sched


def to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))


def train(model, opt, sched, batches, steps: int, max_seconds: float = float("inf")) -> int:
    """Runs `steps` steps, or fewer if `max_seconds` pass first; returns the steps run."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for i in range(steps):
        if time.perf_counter() - start > max_seconds:
            return i
        inputs, targets = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        opt.step()
        sched.step()
    return steps


def fastest_threads(model, opt, sched, batches) -> int:
    """All cores or 1 thread, whichever runs 10 steps (of the first 20 batches) faster here and now."""
    times = {}
    for i, threads in enumerate((os.cpu_count(), 1)):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        train(model, opt, sched, batches[10 * i:10 * i + 10], 10)
        times[threads] = time.perf_counter() - start
    return min(times, key=times.get)


def speed(a) -> None:
    """Steady-state steps/s with torch.set_num_threads(cores), then again with 1 thread: on a loaded machine
    OpenMP's barriers can make the multi-threaded run many times slower, and the peer deserves its best."""
    w = WORKLOADS[a.workload]
    arrays = np.load(a.data)
    x, y, b = arrays["x_train"], arrays["y_train"], w["batch"]
    count = min(64, len(x) // b)
    batches = [(to_torch(x[i * b:(i + 1) * b]), torch.from_numpy(y[i * b:(i + 1) * b]).long()) for i in range(count)]
    model = build(w, x.shape[1:])
    opt, sched = optimizer(model, w, 2 * a.steps + 40)
    rates = {}
    for threads in (os.cpu_count(), 1):
        torch.set_num_threads(threads)
        train(model, opt, sched, batches, 20, max_seconds=2)  # warm-up: allocator, oneDNN primitive caches
        start = time.perf_counter()
        # Capped in time: on a loaded machine the all-cores run can crawl at a few steps/s.
        done = train(model, opt, sched, batches, a.steps, max_seconds=a.max_seconds)
        rates[threads] = done / (time.perf_counter() - start)
    emit({"steps_per_sec": max(rates.values()), "steps_per_sec_all_cores": rates[os.cpu_count()],
          "steps_per_sec_1_thread": rates[1], "params": sum(p.numel() for p in model.parameters())})


def run_recipe(a) -> None:
    w = WORKLOADS["cnn"]
    torch.manual_seed(a.seed)
    arrays = np.load(a.data)
    xs, ys = recipe.stream(arrays["x_train"], arrays["y_train"], a.seed, a.epochs)
    b = recipe.BATCH
    batches = [(to_torch(xs[i:i + b]), torch.from_numpy(ys[i:i + b]).long()) for i in range(0, len(xs), b)]
    model = build(w, xs.shape[1:])
    opt, sched = optimizer(model, w, len(batches))
    # The probe's 20 steps count as training steps (the schedule runs on); its time counts too.
    torch.set_num_threads(fastest_threads(model, opt, sched, batches[:20]))
    train(model, opt, sched, batches[20:], len(batches) - 20)
    model.eval()
    with torch.no_grad():
        logits = model(to_torch(arrays["x_test"]))
    accuracy = float((logits.argmax(-1).numpy() == arrays["y_test"]).mean())
    emit({"test_accuracy": accuracy, "process_s": time.perf_counter() - T0,
          "params": sum(p.numel() for p in model.parameters())})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["speed", "recipe"])
    p.add_argument("--workload", default="cnn", choices=list(WORKLOADS))
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--max-seconds", type=float, default=5.0, help="speed: cap on each timed run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=recipe.EPOCHS, help="recipe: epochs (the experiment's: 30)")
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count())  # torch's default already; said explicitly
    speed(a) if a.mode == "speed" else run_recipe(a)


if __name__ == "__main__":
    main()
