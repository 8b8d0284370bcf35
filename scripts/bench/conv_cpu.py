"""Investigation: can the CNN's convolutions run faster on CPU? (Findings in BENCHMARKS.md; not part of `make bench`.)

    python scripts/bench/conv_cpu.py [--quick] [--repeats 3]

XLA's CPU convolutions are several times slower than PyTorch's (oneDNN). Two ways around them, each timed as a
whole jitted, donated training step of the digits_cnn model (forward, backward, AdamW) in a fresh process:
  patches       each 3x3 SAME convolution as im2col (pad, 9 shifted slices concatenated on channels) and one
                matmul; its gradient is slices, pads and matmuls too, so no convolution runs at all
  reshape_pool  2x2 max-pooling as a reshape and a max: its gradient is a compare and a select, where
                nn.max_pool's is XLA's select-and-scatter
  flags         XLA_FLAGS that route convolutions or fusions to other CPU kernels (oneDNN, XNNPACK, fast math)
The rewritten model is first checked against the original: same parameters, same outputs and gradients (to
float32 rounding). Shapes: digits 8x8x1 at batch 32 (the default experiment) and 28x28x1 at batch 128
(Fashion-MNIST's CNN).
"""

from __future__ import annotations

import argparse
import time

import harness

SHAPES = {"digits_b32": (32, 8, 8, 1), "fashion_b128": (128, 28, 28, 1)}
FLAGS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
}


def model(patches: bool, reshape_pool: bool = False):
    import flax.linen as nn
    import jax.numpy as jnp

    class PatchConv(nn.Module):
        """3x3 SAME convolution as im2col + matmul; parameters named and shaped as nn.Conv's."""

        features: int

        @nn.compact
        def __call__(self, x):  # (B, H, W, C)
            c = x.shape[-1]
            kernel = self.param("kernel", nn.linear.default_kernel_init, (3, 3, c, self.features))
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
            h, w = x.shape[1:3]
            padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H+2, W+2, C)
            cols = jnp.concatenate([padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], -1)
            return cols @ kernel.reshape(9 * c, self.features) + bias  # (B, H, W, F); rows (dy, dx, c) as HWIO

    class CNN(nn.Module):  # jtrain's CNN (jtrain/models/cnn.py) as experiments/digits_cnn.py configures it
        @nn.compact
        def __call__(self, x, *, train):
            for i, features in enumerate((32, 64)):
                conv = PatchConv(features, name=f"Conv_{i}") if patches else \
                    nn.Conv(features, (3, 3), padding="SAME", name=f"Conv_{i}")
                x = nn.relu(conv(x))
                if reshape_pool:  # even sizes only (8, 4; 28, 14): a reshape and a max, no select-and-scatter
                    b, h, w, c = x.shape
                    x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
                else:
                    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            x = nn.Dropout(0.1, deterministic=not train)(x.reshape((x.shape[0], -1)))
            x = nn.Dropout(0.1, deterministic=not train)(nn.relu(nn.Dense(128)(x)))
            return nn.Dense(10)(x)

    return CNN()


def check_equivalence() -> dict:
    """Max |difference| of outputs and gradients between nn.Conv + nn.max_pool and the patches convolution +
    reshape pooling, same parameters. (Ties in a pooling window get the gradient split, not given to the first
    element; after ReLU the only ties are zeros, whose gradient ReLU zeroes anyway.)"""
    import jax
    import numpy as np

    x = jax.random.normal(jax.random.key(0), SHAPES["fashion_b128"])
    reference, patched = model(False), model(True, True)
    params = reference.init(jax.random.key(1), x, train=False)["params"]
    loss = lambda m: (lambda p: (m.apply({"params": p}, x, train=False) ** 2).mean())
    out = [m.apply({"params": params}, x, train=False) for m in (reference, patched)]
    grads = [jax.grad(loss(m))(params) for m in (reference, patched)]
    grad_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])))
    grad_scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(grads[0]))
    return {"output_max_abs_diff": float(np.max(np.abs(out[0] - out[1]))), "output_scale": float(np.max(np.abs(out[0]))),
            "grad_max_abs_diff": grad_diff, "grad_scale": grad_scale}


def worker(variant: str, shape_name: str, steps: int) -> None:
    import jax
    import jax.numpy as jnp
    import optax

    shape = SHAPES[shape_name]
    net = model("patches" in variant, "reshape_pool" in variant)
    x = jax.random.normal(jax.random.key(0), shape)
    y = jax.random.randint(jax.random.key(1), shape[:1], 0, 10)
    tx = optax.adamw(2e-3, weight_decay=1e-4)
    params = net.init(jax.random.key(2), x, train=False)["params"]

    def step(state, x, y):
        params, opt_state, i = state
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
            net.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.fold_in(jax.random.key(3), i)}), y).mean()
        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, i + 1

    step = jax.jit(step, donate_argnums=0)
    state = (params, tx.init(params), jnp.zeros((), jnp.int32))
    for _ in range(5):
        state = step(state, x, y)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state = step(state, x, y)
    jax.block_until_ready(state)
    harness.emit({"steps_per_sec": steps / (time.perf_counter() - start)})


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=3, metavar=("VARIANT", "SHAPE", "STEPS"), help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.check:
        return harness.emit(check_equivalence())
    if args.worker:
        return worker(args.worker[0], args.worker[1], int(args.worker[2]))
    load_start = harness.load()
    equivalence = harness.run_worker(["scripts/bench/conv_cpu.py", "--check"])
    print("patches vs nn.Conv:", equivalence)
    repeats = 1 if args.quick else args.repeats
    rows, details = [], {"equivalence": equivalence}
    tmp = harness.scratch_dir("conv")
    for shape_name in SHAPES:
        steps = 5 if args.quick else (400 if shape_name == "digits_b32" else 15)
        variants = {v: (v, "default") for v in ("lax", "patches", "reshape_pool", "patches+reshape_pool")}
        variants.update({f"lax+{flag}": ("lax", flag) for flag in FLAGS if flag != "default"})
        results = {name: [] for name in variants}
        print(f"conv {shape_name}:")
        names = list(variants)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                impl, flag = variants[name]
                env = harness.cached_compile_env(tmp.name)  # XLA flags are part of the cache key
                if FLAGS[flag]:
                    env["XLA_FLAGS"] = FLAGS[flag]
                try:
                    results[name].append(harness.run_worker(["scripts/bench/conv_cpu.py", "--worker", impl, shape_name,
                                                             str(steps)], env=env))
                    print(f"  [{r + 1}/{repeats}] {name}: {results[name][-1]['steps_per_sec']:.1f} steps/s")
                except RuntimeError as e:
                    print(f"  [{r + 1}/{repeats}] {name}: failed: {str(e).splitlines()[-1]}")
        base = harness.median(results["lax"], "steps_per_sec")
        for name in names[1:]:
            if results[name]:
                speed = harness.median(results[name], "steps_per_sec")
                rows.append(harness.row(f"conv {shape_name}: {name} / nn.Conv", speed / base,
                                        note=f"{speed:.1f} vs {base:.1f} steps/s"))
        details[shape_name] = results
    tmp.cleanup()
    harness.finish(args, "conv_cpu", rows, details, load_start)


if __name__ == "__main__":
    main()
