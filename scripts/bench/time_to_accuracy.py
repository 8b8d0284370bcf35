"""Time to accuracy: the default experiment (experiments/digits_cnn.py) end to end, jtrain vs Keras-JAX vs PyTorch.

    python scripts/bench/time_to_accuracy.py [--quick] [--repeats 3] [--json out.json]

Each contender trains the experiment's full recipe (30 epochs of batch 32 with shift augmentation, AdamW 2e-3,
weight decay 1e-4, cosine with 50 warm-up steps; see recipe.py) on the same standardised scikit-learn digits
split (70/15/15, jtrain's TFDS split) and reports test accuracy. Time = the whole process, from launch to exit:
`python -m jtrain train` (jtrain_cli.py: with its periodic validation, checkpoints, plots) against keras_peer.py /
torch_peer.py `recipe`. jtrain runs twice a round: with a cold compilation cache (a new empty JTRAIN_CACHE_DIR
each time, a user's first run) and a warm one (one directory for all its repeats, filled by an untimed run
first: a re-run); Keras and PyTorch keep their own compile state (none persists between their processes). A run
counts only if it ends at >= 97% test accuracy; reported is each peer's time over jtrain's (above 1 = jtrain
got there first).
"""

from __future__ import annotations

import os

import harness

TARGET_ACCURACY = 0.97


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    with harness.scratch_dir("tta") as tmp:
        npz = harness.export("cnn", tmp, with_test=True)
        epochs = 1 if args.quick else 30  # 30: experiments/digits_cnn.py
        train_args = ["--", "--config", "experiments/digits_cnn.py", f"--config.train.epochs={epochs}"]
        warm_cache = os.path.join(tmp, "warm_cache")
        contenders = {
            "jtrain (cold)": ["scripts/bench/jtrain_cli.py", "--workdir-parent", tmp, "--fresh-cache", *train_args],
            "jtrain (warm)": ["scripts/bench/jtrain_cli.py", "--workdir-parent", tmp, "--cache-dir", warm_cache,
                              *train_args],
            "keras": ["scripts/bench/keras_peer.py", "recipe", "--data", npz, "--epochs", str(epochs)],
            "pytorch": ["scripts/bench/torch_peer.py", "recipe", "--data", npz, "--epochs", str(epochs)],
        }
        warmed = harness.run_worker(contenders["jtrain (warm)"])  # untimed: fills the warm cache
        print(f"  warm-up run (untimed, fills the warm cache): {warmed['process_s']:.2f} s, "
              f"compile {warmed['compile_s']:.2f} s")
        results = harness.alternate(contenders, repeats)
    rows = []
    accuracy = {name: min(r["test_accuracy"] for r in rs) for name, rs in results.items()}
    for cache in ("cold", "warm"):
        name = f"jtrain ({cache})"
        jt = harness.median(results[name], "process_s")
        for peer in ("keras", "pytorch"):
            t = harness.median(results[peer], "process_s")
            reached = accuracy[name] >= TARGET_ACCURACY and accuracy[peer] >= TARGET_ACCURACY
            rows.append(harness.row(f"time to 97%: {peer} / jtrain ({cache})", t / jt, target="> 1 (jtrain first)",
                                    met=reached and t > jt,
                                    note=f"jtrain {jt:.1f} s (compile {harness.median(results[name], 'compile_s'):.2f}"
                                         f" s, end {harness.median(results[name], 'end_s'):.2f} s) vs {peer} "
                                         f"{t:.1f} s; lowest test acc jtrain {accuracy[name]:.3f}, {peer} "
                                         f"{accuracy[peer]:.3f}" + ("" if reached else "; 97% NOT REACHED")))
    harness.finish(args, "time_to_accuracy", rows, {**results, "warm-up": warmed}, load_start)


if __name__ == "__main__":
    main()
