"""Peers: jtrain's real loop against Keras 3 `model.fit` (JAX backend) and PyTorch eager (CPU), same models and data.

    python scripts/bench/peers.py [--quick] [--repeats 3] [--json out.json]

jtrain: jtrain_loop.py as in overhead.py (input pipeline, logging, a mid-run async checkpoint). Keras:
keras_peer.py, `fit` on NumPy arrays, steady-state steps/s from epoch boundaries. PyTorch: torch_peer.py, a
plain loop on prepared tensors, the better of all cores and 1 thread. Reported: jtrain's steady-state steps/s
as a multiple of each peer's (targets vs PyTorch: >= 1.7x on the MLP, >= 1.0x on the CNN).
"""

from __future__ import annotations

import harness

STEPS = {"mlp": {"jtrain": 400, "keras": 300, "pytorch": 200}, "cnn": {"jtrain": 1000, "keras": 900, "pytorch": 600}}
QUICK = {"mlp": {"jtrain": 40, "keras": 30, "pytorch": 10}, "cnn": {"jtrain": 60, "keras": 60, "pytorch": 30}}
TARGET_VS_PYTORCH = {"mlp": 1.7, "cnn": 1.0}


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    rows, details = [], {}
    with harness.scratch_dir("peers") as tmp:
        for workload in ("mlp", "cnn"):
            npz = harness.export(workload, tmp)
            steps = (QUICK if args.quick else STEPS)[workload]
            print(f"peers {workload}:")
            results = harness.alternate({
                "jtrain": ["scripts/bench/jtrain_loop.py", "--workload", workload, "--steps", str(steps["jtrain"]),
                           "--log-every", "10" if args.quick else "50", "--checkpoint-every",
                           str(steps["jtrain"] // 2), "--workdir-parent", tmp],
                "keras": ["scripts/bench/keras_peer.py", "speed", "--workload", workload, "--data", npz,
                          "--steps", str(steps["keras"])],
                "pytorch": ["scripts/bench/torch_peer.py", "speed", "--workload", workload, "--data", npz,
                            "--steps", str(steps["pytorch"])],
            }, repeats)
            speed = {name: harness.median(rs, "steps_per_sec") for name, rs in results.items()}
            torch_cores = harness.median(results["pytorch"], "steps_per_sec_all_cores")
            torch_one = harness.median(results["pytorch"], "steps_per_sec_1_thread")
            vs_torch = speed["jtrain"] / speed["pytorch"]
            target = TARGET_VS_PYTORCH[workload]
            rows.append(harness.row(f"peers {workload}: jtrain / PyTorch eager", vs_torch, target=f">= {target}",
                                    met=vs_torch >= target,
                                    note=f"{speed['jtrain']:.0f} vs {speed['pytorch']:.0f} steps/s (PyTorch "
                                         f"{torch_cores:.0f} on all cores, {torch_one:.0f} on 1 thread)"))
            rows.append(harness.row(f"peers {workload}: jtrain / Keras-JAX fit", speed["jtrain"] / speed["keras"],
                                    note=f"{speed['jtrain']:.0f} vs {speed['keras']:.0f} steps/s (no target)"))
            details[workload] = results
    harness.finish(args, "peers", rows, details, load_start)


if __name__ == "__main__":
    main()
