"""The worker command of each contender in the speed comparisons (overhead.py, peers.py), with its run length.

Run lengths give a few seconds of steady state on 2 CPU cores. The decoder's steps take ~0.4 s, so its jtrain
run is short and logs every 5 steps (windows after the first, which holds compilation, must remain): jtrain
pays for twenty times more log steps than the experiment's 100. It measures 20 steps (8 s): with 10, one full
run on a busy machine measured 0.82 and the next 1.0.
"""

from __future__ import annotations

# workload -> (jtrain steps, jtrain log interval, hand-written steps, hand-written warm-up, Keras, PyTorch)
FULL = {"tiny": (1000, 50, 20000, 20, None, None), "tiny_multi": (6400, 640, 20000, 20, None, None),
        "mlp": (600, 50, 300, 20, 240, 150),
        "cnn": (1000, 50, 1000, 20, 900, 600), "decoder": (25, 5, 16, 2, None, None)}
QUICK = {"tiny": (120, 10, 200, 5, None, None), "tiny_multi": (256, 64, 200, 5, None, None),
         "mlp": (40, 10, 20, 5, 30, 10),
         "cnn": (60, 10, 20, 5, 60, 30), "decoder": (6, 2, 2, 1, None, None)}
PEER_WORKLOADS = ("mlp", "cnn")
DEFAULT_SAVE_EVERY = 500  # jtrain's checkpoint.every_steps


def jtrain(workload: str, workdir_parent: str, quick: bool, saves: bool = True) -> list[str]:
    """jtrain's real loop (see jtrain_loop.py) saving an async checkpoint at jtrain's default interval, every 500
    steps, so one save falls inside the measured windows of the tiny, MLP and CNN runs. The decoder's measured
    window is 10 steps (4 s): a save inside it would stand for one every 7 steps where its experiment saves
    every 600, so it saves once, at the end, outside the window; tiny_multi saves only at the end too (its
    intervals must be multiples of its 32 steps per call). `saves=False`: the same run saving only at the end,
    to tell the loop's own cost from Orbax's."""
    steps, log_every, *_ = (QUICK if quick else FULL)[workload]
    at_end = workload in ("decoder", "tiny_multi") or not saves
    every = steps if at_end else min(DEFAULT_SAVE_EVERY, steps // 2)
    return ["scripts/bench/jtrain_loop.py", "--workload", workload, "--steps", str(steps), "--log-every",
            str(log_every), "--checkpoint-every", str(every), "--workdir-parent", workdir_parent]


def handwritten(workload: str, npz: str, quick: bool) -> list[str]:
    _, _, steps, warmup, *_ = (QUICK if quick else FULL)[workload]
    return ["scripts/bench/handwritten.py", "--workload", workload, "--data", npz, "--steps", str(steps),
            "--warmup", str(warmup)]


def peers(workload: str, npz: str, quick: bool) -> dict[str, list[str]]:
    *_, keras_steps, torch_steps = (QUICK if quick else FULL)[workload]
    return {
        "keras": ["scripts/bench/keras_peer.py", "speed", "--workload", workload, "--data", npz,
                  "--steps", str(keras_steps)],
        "pytorch": ["scripts/bench/torch_peer.py", "speed", "--workload", workload, "--data", npz,
                    "--steps", str(torch_steps)],
    }
