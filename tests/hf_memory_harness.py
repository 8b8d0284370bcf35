"""Loads a 91 MB Llama-layout checkpoint onto 8 fake CPU devices (FSDP, the largest divisible dim of each array
split 8 ways) and prints, as JSON, the host memory (tracemalloc: NumPy blocks) the loader adds while it reads
each tensor, beside the tensor's size and the model's. tests/test_hf_llm.py runs it in its own process:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/hf_memory_harness.py DIR
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tracemalloc

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from safetensors.numpy import save_file

from jtrain import config as config_lib
from jtrain import models, pretrained

V, E, M, L, H = 16000, 512, 1408, 2, 8  # two 32.8 MB tables (embeddings, head) and 2 small blocks


def write_checkpoint(out: str) -> tuple[int, np.ndarray]:
    hf = dict(model_type="llama", vocab_size=V, hidden_size=E, intermediate_size=M, num_hidden_layers=L,
              num_attention_heads=H, num_key_value_heads=H, max_position_embeddings=128, rms_norm_eps=1e-5,
              tie_word_embeddings=False, hidden_act="silu")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf, f)
    shapes = {"model.embed_tokens.weight": (V, E), "lm_head.weight": (V, E), "model.norm.weight": (E,)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (E,), p + "post_attention_layernorm.weight": (E,),
                       **{p + f"self_attn.{n}_proj.weight": (E, E) for n in "qkvo"},
                       p + "mlp.gate_proj.weight": (M, E), p + "mlp.up_proj.weight": (M, E),
                       p + "mlp.down_proj.weight": (E, M)})
    rng = np.random.default_rng(0)
    tensors = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes.items()}
    save_file(tensors, os.path.join(out, "model.safetensors"))
    return sum(x.nbytes for x in tensors.values()), tensors["lm_head.weight"][:, 5].copy()


def main(out: str) -> None:
    model_bytes, head_column = write_checkpoint(out)
    c = config_lib.default_config()
    c.init.pretrained = out
    c = pretrained.with_pretrained_model(c, log=False)
    net = models.build(c.model, 0)
    shapes = nn.unbox(jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32),
                                                      train=False))["params"])
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))

    def sharded(x):  # the largest dim divisible by 8 split over the devices
        dims = [i for i, n in sorted(enumerate(x.shape), key=lambda d: -d[1]) if n % 8 == 0]
        spec = [None] * len(x.shape)
        spec[dims[0]] = "fsdp"
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P(*spec)))

    targets = jax.tree.map(sharded, shapes)
    source_of = pretrained.open_source
    added = {}

    def measured_source(*args, **kwargs):  # the loader's source, each tensor's read measured on its own
        source = source_of(*args, **kwargs)

        def read(wanted):
            out = {}
            for name, target in wanted.items():
                before = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                out.update(source.read({name: target}))
                added[name] = [tracemalloc.get_traced_memory()[1] - before, int(np.prod(target.shape)) * 4]
            return out
        return dataclasses.replace(source, read=read)

    pretrained.open_source = measured_source
    tracemalloc.start()
    variables, report = pretrained.load(c.init, {"params": targets}, log=False)
    jax.block_until_ready(variables)
    peak = tracemalloc.get_traced_memory()[1]
    head = variables["params"]["head"]["kernel"]  # (E, V): lm_head.weight transposed, columns split 8 ways
    assert report.problems() == [] and head.addressable_shards[0].data.shape == (E, V // 8)
    np.testing.assert_array_equal(np.asarray(head[5]), head_column)
    print(json.dumps({"model_bytes": model_bytes, "peak": peak, "added": added}))


if __name__ == "__main__":
    main(sys.argv[1])
