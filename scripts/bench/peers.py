"""Peers: jtrain's real loop against Keras 3 `model.fit` (JAX backend) and PyTorch eager (CPU), same models and data.

    python scripts/bench/peers.py [--quick] [--repeats 3] [--json out.json]

jtrain: jtrain_loop.py as in overhead.py (input pipeline, logging, a mid-run async checkpoint). Keras:
keras_peer.py, `fit` on NumPy arrays, steady-state steps/s from epoch boundaries. PyTorch: torch_peer.py, a
plain loop on prepared tensors, the better of all cores and 1 thread. Reported: jtrain's steady-state steps/s
as a multiple of each peer's (targets vs PyTorch: >= 1.7x on the MLP, >= 1.0x on the CNN). Under run_all.py
the rounds are run by overhead.py (all four contenders alternating) and read back here.
"""

from __future__ import annotations

import json
import os

import contenders
import harness

TARGET_VS_PYTORCH = {"mlp": 1.7, "cnn": 1.0}


def rows_for(workload: str, results: dict) -> list[dict]:
    speed = {name: harness.median(rs, "steps_per_sec") for name, rs in results.items()}
    torch_cores = harness.median(results["pytorch"], "steps_per_sec_all_cores")
    torch_one = harness.median(results["pytorch"], "steps_per_sec_1_thread")
    vs_torch, target = speed["jtrain"] / speed["pytorch"], TARGET_VS_PYTORCH[workload]
    jt = harness.rate(speed["jtrain"])
    return [
        harness.row(f"peers {workload}: jtrain / PyTorch eager", vs_torch, target=f">= {target}", met=vs_torch >= target,
                    note=f"{jt} vs {harness.rate(speed['pytorch'])} steps/s (PyTorch {harness.rate(torch_cores)} on "
                         f"all cores, {harness.rate(torch_one)} on 1 thread)"),
        harness.row(f"peers {workload}: jtrain / Keras-JAX fit", speed["jtrain"] / speed["keras"],
                    note=f"{jt} vs {harness.rate(speed['keras'])} steps/s (no target)"),
    ] + ([  # the same rounds under run_all.py also timed the hand-written loop: the limit jtrain could reach
        harness.row(f"peers {workload}: hand-written JAX / PyTorch eager", speed["handwritten"] / speed["pytorch"],
                    note=f"{harness.rate(speed['handwritten'])} vs {harness.rate(speed['pytorch'])} steps/s (no target)"),
    ] if "handwritten" in speed else [])


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    rows, details = [], {}
    with harness.scratch_dir("peers") as tmp:
        for workload in contenders.PEER_WORKLOADS:
            shared = os.path.join(args.share, f"speed_{workload}.json") if args.share else ""
            if shared and os.path.exists(shared):
                with open(shared) as f:
                    results = json.load(f)["results"]
                print(f"peers {workload}: measured in overhead.py's rounds of this run")
            else:
                npz = harness.export(workload, tmp)
                print(f"peers {workload}:")
                results = harness.alternate({"jtrain": contenders.jtrain(workload, tmp, args.quick),
                                             **contenders.peers(workload, npz, args.quick)},
                                            repeats, env=harness.cached_compile_env(tmp))
            rows += rows_for(workload, results)
            details[workload] = results
    harness.finish(args, "peers", rows, details, load_start)


if __name__ == "__main__":
    main()
