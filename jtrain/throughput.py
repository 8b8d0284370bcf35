"""Throughput and model FLOPs utilisation (MFU) of a decoder run, for the training logs.

Model FLOPs per token come from the architecture, not from the compiled program (PaLM appendix B):

    6 N + 12 L T E     N = weights in matrix multiplies (attention q/k/v/out, MLP, output head; not the
                       embedding lookup, position table, norms or biases), L layers, T sequence length, E width

6 N is a multiply-add (2) per weight per token, forward (1x) plus backward (2x); 12 L T E is the attention
scores and weighted values, 2 matmuls of T x E per token per layer, times the same 2 x 3. The causal mask does
not halve it (PaLM's convention: the einsum form computes every score, though cuDNN's flash attention,
model.attention=fused, skips the masked half). tests/test_throughput.py checks it against XLA's cost
analysis of the real train step. Rematerialisation recomputes more, but MFU counts model FLOPs only.

MFU = tokens/s x FLOPs per token / (train.peak_flops x devices). `train.peak_flops = 0` takes the device's
published dense bfloat16 peak where jtrain knows it (PUBLISHED_PEAKS, by jax's `device_kind`), as MaxText and
scripts/bench/mfu.py do; on any other device (every CPU) it measures the best rate of a large float32 matmul once.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp


# Dense bfloat16 peaks of one device, FLOP/s, from the vendors' data sheets (without sparsity). Whole names: a
# prefix would take an H100 PCIe (756 TFLOP/s) for an SXM one (989).
PUBLISHED_PEAKS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5": 459e12,  # v5p
    "TPU v6 lite": 918e12,  # v6e (Trillium)
}


def device_peak_flops(device: jax.Device | None = None) -> float:
    """One device's peak FLOP/s for MFU: its published bfloat16 peak if known, else a measured float32 matmul."""
    device = device or jax.devices()[0]
    return PUBLISHED_PEAKS.get(device.device_kind) or measured_peak_flops()


@functools.lru_cache(maxsize=None)
def measured_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` (n x n) @ (n x n) float32 matmuls on the default device."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


@dataclasses.dataclass(frozen=True)
class Throughput:
    tokens_per_step: int  # global batch x sequence length
    flops_per_token: float
    peak_flops: float  # all devices together

    def rates(self, steps_per_sec: float) -> dict[str, float]:
        tokens = steps_per_sec * self.tokens_per_step
        return {"tokens_per_sec": tokens, "model_flops_per_sec": tokens * self.flops_per_token,
                "mfu": tokens * self.flops_per_token / self.peak_flops}


def for_run(run) -> Throughput | None:
    """A jtrain.components.Run's throughput arithmetic; None unless its model family counts FLOPs per token
    (the decoder's: jtrain/models/decoder.py flops_per_token) and it trains on sequences."""
    from jtrain import models

    config = run.config
    count = models.family(config.model.name).flops_per_token
    if count is None or run.task != "sequence":
        return None
    seq_len = run.data.spec.input_shape[-1]
    peak = config.train.peak_flops or device_peak_flops()
    return Throughput(tokens_per_step=config.data.batch_size * seq_len,
                      flops_per_token=count(config.model, run.model, seq_len), peak_flops=peak * run.mesh.size)
