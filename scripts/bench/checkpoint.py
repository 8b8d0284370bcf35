"""Checkpointing: jtrain.checkpoint.Checkpointer on a ~500 MB state against a plain sequential write and read.

    python scripts/bench/checkpoint.py [--quick] [--repeats 3] [--json out.json]

The state is shaped like a TrainState of a 42M-parameter model with Adam: params, mu and nu (12 float32 arrays
of 10.5M random values, 504 MB; random, so no compression can flatter it), plus a step counter.
  jtrain  `Checkpointer(async_save=True).save(...)`: the blocking part is the call (until training could go
          on), the total is until `wait()` returns (written, committed, sha256 checksums recorded). Two saves;
          the second is reported (the first also starts Orbax's threads). Then `restore` (checksums verified).
  plain   the same bytes with np.save into one file, flush + fsync, then np.load back.
Both read back what they just wrote, so both restores come from the page cache alike.
"""

from __future__ import annotations

import argparse
import os
import time

import harness

MB = 1 << 20
TARGET_BLOCKING = 0.10


def make_state(total_mb: int):
    import numpy as np

    rng = np.random.default_rng(0)
    n = total_mb * MB // 4 // 12  # 12 arrays of float32
    layers = {f"layer{i}": rng.standard_normal(n, dtype=np.float32) for i in range(4)}
    return {"step": np.int32(7), "params": layers,
            "opt_state": {"mu": {k: v * 0.1 for k, v in layers.items()}, "nu": {k: v * v for k, v in layers.items()}}}


def jtrain_worker(directory: str, total_mb: int) -> None:
    import jax

    from jtrain.checkpoint import Checkpointer

    state = jax.device_put(make_state(total_mb))
    jax.block_until_ready(state)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    ckpt = Checkpointer(directory, max_to_keep=3, async_save=True)
    timings = []
    for step in (1, 2):
        start = time.perf_counter()
        ckpt.save(step, state, None, {"step": step})
        blocking = time.perf_counter() - start
        ckpt.wait()
        timings.append((blocking, time.perf_counter() - start))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    start = time.perf_counter()
    restored, _ = ckpt.restore(2, abstract)
    jax.block_until_ready(restored)
    restore = time.perf_counter() - start
    ckpt.close()
    (first_blocking, first_total), (blocking, total) = timings
    harness.emit({"bytes": nbytes, "blocking_s": blocking, "save_s": total, "restore_s": restore,
                  "first_blocking_s": first_blocking, "first_save_s": first_total})


def plain_worker(directory: str, total_mb: int) -> None:
    import jax
    import numpy as np

    arrays = jax.tree.leaves(make_state(total_mb))
    path = os.path.join(directory, "state.npy")
    start = time.perf_counter()
    with open(path, "wb") as f:
        for x in arrays:
            np.save(f, x)
        f.flush()
        os.fsync(f.fileno())
    save = time.perf_counter() - start
    start = time.perf_counter()
    with open(path, "rb") as f:
        loaded = [np.load(f) for _ in arrays]
    restore = time.perf_counter() - start
    assert all(np.array_equal(a, b) for a, b in zip(arrays, loaded))
    harness.emit({"bytes": sum(x.nbytes for x in arrays), "save_s": save, "restore_s": restore})


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=3, metavar=("KIND", "DIR", "MB"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, directory, total_mb = args.worker
        return (jtrain_worker if kind == "jtrain" else plain_worker)(directory, int(total_mb))
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    total_mb = 48 if args.quick else 504
    with harness.scratch_dir("checkpoint") as tmp:
        contenders = {}
        for kind in ("jtrain", "plain"):
            os.makedirs(os.path.join(tmp, kind))
            contenders[kind] = ["scripts/bench/checkpoint.py", "--worker", kind, os.path.join(tmp, kind), str(total_mb)]
        results = {k: [] for k in contenders}
        for r in range(repeats):  # alternate() would reuse the directories: empty them between runs
            for kind in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
                directory = contenders[kind][3]
                for name in os.listdir(directory):
                    harness.remove(os.path.join(directory, name))
                results[kind].append(harness.run_worker(contenders[kind]))
                print(f"  [{r + 1}/{repeats}] {kind}: " + ", ".join(
                    f"{k}={v:.3f}" for k, v in results[kind][-1].items() if k.endswith("_s")))
    jt, plain = results["jtrain"], results["plain"]
    mb = jt[0]["bytes"] / MB
    blocking = harness.median(jt, "blocking_s") / harness.median(jt, "save_s")
    save_speed = (mb / harness.median(jt, "save_s"), mb / harness.median(plain, "save_s"))
    restore_speed = (mb / harness.median(jt, "restore_s"), mb / harness.median(plain, "restore_s"))
    rows = [
        harness.row(f"checkpoint {mb:.0f} MB: async blocking / total save", blocking * 100, unit="%",
                    target=f"<= {TARGET_BLOCKING:.0%}",
                    met=blocking <= TARGET_BLOCKING, note=f"{harness.median(jt, 'blocking_s'):.2f} s of "
                                                          f"{harness.median(jt, 'save_s'):.2f} s"),
        harness.row("checkpoint save throughput: jtrain / plain write", save_speed[0] / save_speed[1],
                    note=f"{save_speed[0]:.0f} vs {save_speed[1]:.0f} MB/s"),
        harness.row("checkpoint restore throughput: jtrain / plain read", restore_speed[0] / restore_speed[1],
                    note=f"{restore_speed[0]:.0f} vs {restore_speed[1]:.0f} MB/s"),
    ]
    harness.finish(args, "checkpoint", rows, results, load_start)


if __name__ == "__main__":
    main()
