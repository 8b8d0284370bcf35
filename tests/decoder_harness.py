"""Trains the decoder on synthetic token batches, on each mesh given, and prints one JSON line of results.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/decoder_harness.py 8,1,1 2,4,1 1,8,1:init 1,2,4:fused

Run by tests/test_scaleout.py in subprocesses (the device count is fixed when JAX starts). The data, loss and
step live here, not in jtrain.train: the language-model task wiring is separate; this drives the model, the
rules and the shardings directly. Per mesh it reports the loss of every step and, from the state's
`addressable_shards`, the bytes each device holds (":init": only create the state and measure it).
"""

from __future__ import annotations

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jtrain import config as config_lib, mesh as mesh_lib, models, sharding  # noqa: E402
from jtrain.state import init_state  # noqa: E402

VOCAB, LENGTH, BATCH, STEPS = 64, 16, 16, 6
MODEL = ["model.name=decoder", f"model.vocab_size={VOCAB}", "model.num_layers=2", "model.num_heads=4",
         "model.embed_dim=32", "model.mlp_dim=128", f"model.max_len={LENGTH}", "model.position=rotary",
         "model.scan_layers=True", "model.dropout=0.1",  # remat: tests/test_decoder.py (same numbers, slower compile)
         "mesh.replication_threshold_bytes=1024"]


def batches(seed: int = 0) -> list[dict]:
    """Counting sequences (next token = previous + 1 mod V) from random starts, with a padded tail on some rows."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        start = rng.integers(0, VOCAB, (BATCH, 1))
        tokens = (start + np.arange(LENGTH + 1)) % VOCAB  # (B, T + 1)
        lengths = rng.integers(LENGTH // 2, LENGTH + 1, (BATCH, 1))
        mask = (np.arange(LENGTH) < lengths).astype(np.float32)  # (B, T): 0 = padding
        out.append({"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32), "mask": mask})
    return out


def masked_cross_entropy(logits, targets, mask):
    # logits (B, T, V) float32; targets (B, T) int; mask (B, T): the mean over real tokens only
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (B, T)
    return (losses * mask).sum() / mask.sum()


def train(mesh_shape: tuple[int, int, int], steps: int = STEPS, attention: str = "einsum") -> dict:
    config = config_lib.default_config()
    config_lib.apply_overrides(config, [*MODEL, f"model.attention={attention}",
                                        *(f"mesh.{a}={n}" for a, n in zip(mesh_lib.AXES, mesh_shape))])
    mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:math.prod(mesh_shape)])
    model = models.build(config.model, VOCAB)
    tx = optax.adamw(3e-3, weight_decay=0.01)
    sample = jnp.zeros((1, LENGTH), jnp.int32)

    def init():
        return init_state(model, tx, jax.random.key(0), sample)

    # Shapes first, then the state is created directly sharded.
    abstract = jax.eval_shape(init)
    shardings = mesh_lib.state_shardings(abstract, mesh, config.mesh, sharding.logical_axes(model, sample))
    state = jax.jit(init, out_shardings=shardings)()

    def step(state, batch):
        dropout_rng = jax.random.fold_in(state.rng, state.step)

        def loss_of(params):
            logits = model.apply({"params": params}, batch["inputs"], train=True, rngs={"dropout": dropout_rng})
            return masked_cross_entropy(logits, batch["targets"], batch["mask"])

        loss, grads = jax.value_and_grad(loss_of)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state), loss

    rules = sharding.parse_rules(config.mesh.rules)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    step = jax.jit(sharding.pinned(step, mesh, rules), in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
    per_device = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            per_device[shard.device.id] = per_device.get(shard.device.id, 0) + shard.data.nbytes
    replicated = [leaf for leaf in jax.tree.leaves(state) if leaf.sharding.is_fully_replicated]
    losses = []
    for batch in batches()[:steps]:
        state, loss = step(state, {k: jax.device_put(v, batch_sharding) for k, v in batch.items()})
        losses.append(float(loss))
    return {
        "losses": losses,
        "state_bytes": sum(leaf.nbytes for leaf in jax.tree.leaves(state)),  # the whole (unsharded) state
        "max_device_bytes": max(per_device.values()),
        "replicated_bytes": sum(leaf.nbytes for leaf in replicated),
        "largest_replicated": max((leaf.nbytes for leaf in replicated), default=0),
        "threshold": config.mesh.replication_threshold_bytes,
        "specs": {"/".join(sharding.path_names(p)): str(leaf.sharding.spec)
                  for p, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]},
    }


if __name__ == "__main__":
    results = {}
    for arg in sys.argv[1:]:  # "d,f,t" trains; "d,f,t:init" only creates the state; "d,f,t:fused" trains with
        mesh, _, mode = arg.partition(":")  # model.attention=fused
        results[arg] = train(tuple(int(n) for n in mesh.split(",")), steps=0 if mode == "init" else STEPS,
                             attention="fused" if mode == "fused" else "einsum")
    print(json.dumps(results))
