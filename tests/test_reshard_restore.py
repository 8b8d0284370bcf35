"""A checkpoint written on one mesh restores onto another with identical values: (2,2,2) -> (4,2,1) -> (8,1,1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from _cli import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import jax
    import jtrain
    from jtrain import checkpoint as ckpt_lib, components

    workdir, data_dir = sys.argv[1], sys.argv[2]
    config = jtrain.load_experiment("experiments/digits_cnn.py")
    jtrain.apply_overrides(config, [f"data.dir={data_dir}", "train.steps=6", "train.epochs=0", "train.progress=False",
                                    "data.batch_size=16", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2",
                                    "mesh.replication_threshold_bytes=1024", "checkpoint.every_steps=0"])
    jtrain.train(config, workdir)
    state_dir = f"{workdir}/checkpoints/6/state"
    saved = ckpt_lib.load_arrays(state_dir)
    for shape in [(4, 2, 1), (8, 1, 1)]:
        other = config.copy_and_resolve_references()
        jtrain.apply_overrides(other, [f"mesh.data={shape[0]}", f"mesh.fsdp={shape[1]}", f"mesh.tensor={shape[2]}"])
        run = components.build(other)
        manager = ckpt_lib.Checkpointer(f"{workdir}/checkpoints", 3)
        state, _ = manager.restore(6, ckpt_lib.abstract_with_shardings(run.abstract_state, run.state_shardings))
        manager.close()
        leaves = jax.tree_util.tree_flatten_with_path(state)[0]
        wanted = jax.tree_util.tree_leaves(run.state_shardings)
        for (path, leaf), sharding in zip(leaves, wanted):
            key = ckpt_lib.path_str(path)
            value = jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
            assert np.array_equal(np.asarray(value), saved[key]), (shape, key)
            assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (shape, key)  # laid out for the new mesh
        print(f"{shape}: {len(leaves)} arrays identical")
""")


def test_restore_onto_other_meshes_is_exact(digits_data_dir, tmp_path):
    env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "PYTHONPATH": REPO_ROOT,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), digits_data_dir], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(4, 2, 1): " in result.stdout and "(8, 1, 1): " in result.stdout
