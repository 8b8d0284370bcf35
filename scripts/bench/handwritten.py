"""The hand-written limit: the smallest jitted JAX training loop a user would write for a workload.

    python scripts/bench/handwritten.py --workload mlp --data DIR/mlp.npz --steps 500

Same Flax layers, initialisers, optimizer and schedule as jtrain's run of the workload; batches are device
arrays prepared before timing; the state is donated; the step returns only the loss. Nothing but jax, flax,
optax and NumPy is imported (the decoder excepted: its Linen module is jtrain's), so its start-up time is the
floor jtrain's is compared with (startup.py).
Prints `FIRST_STEP_DONE` when the first step has finished, then one RESULT line.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from harness import emit  # noqa: E402
from workloads import WORKLOADS  # noqa: E402


class MLP(nn.Module):
    hidden: tuple
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, *, train):
        x = x.reshape((x.shape[0], -1))  # (B, D)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(10)(x)  # (B, 10)


class CNN(nn.Module):
    conv: tuple
    dense: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, *, train):
        for features in self.conv:  # (B, H, W, C)
            x = nn.relu(nn.Conv(features, (3, 3), padding="SAME")(x))
            # 2x2 max-pool as jtrain's CNN computes it (a reshape and a max); the sizes here are even.
            b, h, w, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))  # (B, H/2, W/2, C)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.relu(nn.Dense(self.dense)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(10)(x)  # (B, 10)


def build(w: dict, arrays) -> nn.Module:
    if w["kind"] == "decoder":  # the model itself is jtrain's Linen module; nothing else of jtrain is used
        from jtrain.models.decoder import Decoder
        from workloads import DECODER_FIELDS

        return Decoder(**{k: arrays[f"model_{k}"].item() for k in DECODER_FIELDS})
    return MLP(w["hidden"]) if w["kind"] == "mlp" else CNN(w["conv"], w["dense"], w["dropout"])


def loss_of(logits, targets, mask):
    """Mean cross-entropy over examples, or over real tokens when there is a token mask."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (B,) or (B, T)
    return losses.mean() if mask is None else (losses * mask).sum() / mask.sum()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True, choices=list(WORKLOADS))
    p.add_argument("--data", required=True, help="npz written by workloads.py export")
    p.add_argument("--steps", type=int, default=500, help="timed steps after the warm-up")
    p.add_argument("--warmup", type=int, default=20, help="steps run (and compiled) before timing")
    p.add_argument("--staged", type=int, default=64, help="distinct batches kept on the device")
    a = p.parse_args()
    w = WORKLOADS[a.workload]
    total = a.warmup + a.steps

    arrays = np.load(a.data)
    x, y, b = arrays["x_train"], arrays["y_train"], w["batch"]
    mask = arrays["mask_train"] if "mask_train" in arrays else None
    count = min(a.staged, len(x) // b)
    rows = lambda z, i: None if z is None else jax.device_put(z[i * b:(i + 1) * b])
    batches = [(rows(x, i), rows(y, i), rows(mask, i)) for i in range(count)]

    model = build(w, arrays)
    schedule = w["lr"] if w["schedule"] == "constant" else optax.warmup_cosine_decay_schedule(  # as jtrain's
        0.0, w["lr"], w["warmup"], max(total, w["warmup"] + 1), end_value=w["lr"] * w.get("end_factor", 0.0))
    kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # no decay on biases, as jtrain
    tx = optax.adamw(schedule, b2=w.get("b2", 0.999), weight_decay=w["weight_decay"], mask=kernels_only)
    if w.get("clip"):
        tx = optax.chain(optax.clip_by_global_norm(w["clip"]), tx)
    params = nn.meta.unbox(model.init(jax.random.key(0), batches[0][0], train=False)["params"])
    state = (params, tx.init(params), jnp.zeros((), jnp.int32))
    base_rng = jax.random.key(1)

    def step(state, inputs, targets, mask):
        params, opt_state, i = state

        def loss_fn(params):
            logits = model.apply({"params": params}, inputs, train=True,
                                 rngs={"dropout": jax.random.fold_in(base_rng, i)})  # (B, 10) or (B, T, V)
            return loss_of(logits, targets, mask)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, i + 1), loss

    step = jax.jit(step, donate_argnums=0)

    state, loss = step(state, *batches[0])
    loss.block_until_ready()
    first_step_s = time.perf_counter() - T0
    print("FIRST_STEP_DONE", flush=True)
    for i in range(1, a.warmup):
        state, loss = step(state, *batches[i % count])
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(a.steps):
        state, loss = step(state, *batches[i % count])
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start
    emit({"steps_per_sec": a.steps / elapsed, "first_step_s": first_step_s, "loss": float(loss),
          "params": sum(int(p.size) for p in jax.tree.leaves(params))})


if __name__ == "__main__":
    main()
