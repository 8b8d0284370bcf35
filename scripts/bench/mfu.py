"""Model FLOPs utilisation of the decoder on a GPU: FLOPs per token x tokens/s over the device's peak.

    python scripts/bench/mfu.py [--peak 989e12] [--layers 24 --embed 2048 ...]   # on a GPU machine
    python scripts/bench/mfu.py --attention einsum --remat full --head float32 --batch 16   # the plain settings
    python scripts/bench/mfu.py --allow-cpu --quick --peak 1e11                            # checks the arithmetic

Skipped (a row saying so) when JAX sees no GPU, unless --allow-cpu. The step is jtrain's own: `make_train_step`
with the masked sequence loss, AdamW, the decoder in bfloat16 (parameters in float32), jitted with the state
donated; random tokens, since speed does not depend on them. The defaults are the settings that fill an 80 GB
H100 best (BENCHMARKS.md): a 1.3B decoder, batch 32 x 1024 tokens, cuDNN's flash attention (model.attention=
fused), remat keeping the weight products (model.remat_policy=dots) and the output projection in bfloat16
(model.head_float32=False).

FLOPs per token (PaLM's appendix B convention, jtrain/throughput.py): 6 x (weights in matrix products:
attention, MLP and output head; not the token and position tables, norms or biases) + 12 x layers x sequence
length x embed (attention scores and values, forward and backward, counted in full although causal attention
needs half). Recomputation (remat) is not counted: this is model
FLOPs, not hardware FLOPs. The peak defaults to the device's published dense bf16 peak, as for the training
loop's MFU (jtrain/throughput.py; H100 SXM: 989 TFLOP/s), or a measured float32 matmul where none is known.
Target >= 50%. The figure is the median of --windows timed windows of --steps steps each, after compiling and
3 warm-up steps.
"""

from __future__ import annotations

import os
import statistics
import time

import harness

TARGET = 0.5


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--peak", type=float, default=0.0,
                   help="device peak FLOP/s in the model's dtype (0: the published peak, as train.peak_flops=0)")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (checks the arithmetic only)")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--embed", type=int, default=2048)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--mlp", type=int, default=8192)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--steps", type=int, default=20, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3, help="timed windows (the median is reported)")
    p.add_argument("--attention", default="fused", choices=("einsum", "fused"), help="model.attention")
    p.add_argument("--remat", default="dots", choices=("none", "full", "dots"),
                   help="none: model.remat=False; else model.remat=True with this model.remat_policy")
    p.add_argument("--head", default="bfloat16", choices=("float32", "bfloat16"),
                   help="the output projection's dtype (model.head_float32)")
    p.add_argument("--trace", default="", help="also write a JAX profiler trace (Perfetto JSON) of 3 steps here")
    args = p.parse_args()
    load_start = harness.load()
    # JAX takes 75% of the GPU's memory by default; the benchmark is meant to fill the device.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

    import jax

    platform = jax.devices()[0].platform
    if platform != "gpu" and not args.allow_cpu:
        row = harness.row("decoder MFU (bf16, GPU)", None, target=f">= {TARGET:.0%}",
                          note=f"skipped: no GPU here (JAX platform {platform!r})")
        return harness.finish(args, "mfu", [row], {}, load_start)
    if args.quick:
        args.layers, args.embed, args.heads, args.mlp, args.seq, args.batch, args.vocab, args.steps = \
            2, 64, 4, 256, 64, 4, 256, 3

    import jax.numpy as jnp
    import optax

    from jtrain import config as config_lib, losses, models
    from jtrain.state import init_state
    from jtrain.step import make_train_step
    from jtrain.throughput import device_peak_flops

    args.peak = args.peak or device_peak_flops()

    config = config_lib.default_config()
    config_lib.apply_overrides(config, [
        "model.name=decoder", f"model.vocab_size={args.vocab}", f"model.num_layers={args.layers}",
        f"model.num_heads={args.heads}", f"model.embed_dim={args.embed}", f"model.mlp_dim={args.mlp}",
        f"model.max_len={args.seq}", "model.dtype=bfloat16", "model.scan_layers=True",
        f"model.attention={args.attention}", f"model.remat={args.remat != 'none'}",
        f"model.remat_policy={'full' if args.remat == 'none' else args.remat}",
        f"model.head_float32={args.head == 'float32'}", "loss.name=masked_sequence_cross_entropy"])
    model = models.build(config.model, args.vocab)
    loss_fn, task = losses.build(config.loss)
    tx = optax.adamw(3e-4, weight_decay=0.1)
    schedule = optax.constant_schedule(3e-4)
    tokens = jax.random.randint(jax.random.key(0), (args.batch, args.seq + 1), 0, args.vocab)  # (B, T + 1)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "mask": jnp.ones((args.batch, args.seq), jnp.float32)}
    state = jax.jit(lambda: init_state(model, tx, jax.random.key(1), batch["inputs"]))()
    compile_start = time.perf_counter()
    step = jax.jit(make_train_step(model, tx, loss_fn, task, schedule), donate_argnums=0)
    step = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - compile_start
    cudnn_attention = "cudnn$fmha" in step.as_text()  # cuDNN's fused attention kernels are custom calls named so
    temp_gib = getattr(step.memory_analysis(), "temp_size_in_bytes", 0) / 2**30

    flops_per_token = models.family("decoder").flops_per_token(config.model, model, args.seq)  # as the loop's MFU
    matmul_params = round((flops_per_token - 12 * args.layers * args.seq * args.embed) / 6)

    for _ in range(3):  # warm up
        state, metrics = step(state, batch)
    jax.block_until_ready(state)
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(state)
        rates.append(args.steps * args.batch * args.seq / (time.perf_counter() - start))
    tokens_per_sec = statistics.median(rates)
    mfu = flops_per_token * tokens_per_sec / args.peak
    if args.trace:
        with jax.profiler.trace(args.trace, create_perfetto_trace=True):
            for _ in range(3):
                state, metrics = step(state, batch)
            jax.block_until_ready(state)
    settings = (f"batch {args.batch} x {args.seq}, attention {args.attention}"
                f"{' (cuDNN)' if cudnn_attention else ''}, remat {args.remat}, head {args.head}")
    row = harness.row(f"decoder MFU (bf16, {jax.devices()[0].device_kind})", mfu * 100, unit="%",
                      target=f">= {TARGET:.0%}", met=mfu >= TARGET if platform == "gpu" else None,
                      note=f"{tokens_per_sec:,.0f} tokens/s (windows {min(rates):,.0f}-{max(rates):,.0f}) x "
                           f"{flops_per_token:.3g} FLOP/token over {args.peak:.3g} FLOP/s; {matmul_params:,} matmul "
                           f"parameters; {settings}")
    harness.finish(args, "mfu", [row], {"tokens_per_sec": tokens_per_sec, "window_rates": rates,
                                        "flops_per_token": flops_per_token, "compile_s": compile_s,
                                        "cudnn_attention": cudnn_attention, "temp_gib": temp_gib,
                                        "settings": settings}, load_start)


if __name__ == "__main__":
    main()
