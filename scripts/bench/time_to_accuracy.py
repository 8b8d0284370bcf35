"""Time to accuracy: the default experiment (experiments/digits_cnn.py) end to end, jtrain vs Keras-JAX vs PyTorch.

    python scripts/bench/time_to_accuracy.py [--quick] [--repeats 3] [--json out.json]

Each contender trains the experiment's full recipe (30 epochs of batch 32 with shift augmentation, AdamW 2e-3,
weight decay 1e-4, cosine with 50 warm-up steps; see recipe.py) on the same standardised scikit-learn digits
split (70/15/15, jtrain's TFDS split) and reports test accuracy. Time = the whole process, from launch to exit:
`python -m jtrain train` (jtrain_cli.py: with its periodic validation, checkpoints, plots) against keras_peer.py /
torch_peer.py `recipe`. A run counts only if it ends at >= 97% test accuracy; reported is each peer's time over
jtrain's (above 1 = jtrain is faster).
"""

from __future__ import annotations

import harness

TARGET_ACCURACY = 0.97


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    load_start = harness.load()
    repeats = 1 if args.quick else args.repeats
    with harness.scratch_dir("tta") as tmp:
        npz = harness.export("cnn", tmp, with_test=True)
        epochs = 1 if args.quick else 30  # 30: experiments/digits_cnn.py
        results = harness.alternate({
            "jtrain": ["scripts/bench/jtrain_cli.py", "--workdir-parent", tmp, "--", "--config",
                       "experiments/digits_cnn.py", f"--config.train.epochs={epochs}"],
            "keras": ["scripts/bench/keras_peer.py", "recipe", "--data", npz, "--epochs", str(epochs)],
            "pytorch": ["scripts/bench/torch_peer.py", "recipe", "--data", npz, "--epochs", str(epochs)],
        }, repeats)
    rows = []
    jt = harness.median(results["jtrain"], "process_s")
    accuracy = {name: min(r["test_accuracy"] for r in rs) for name, rs in results.items()}
    for peer in ("keras", "pytorch"):
        t = harness.median(results[peer], "process_s")
        reached = accuracy["jtrain"] >= TARGET_ACCURACY and accuracy[peer] >= TARGET_ACCURACY
        rows.append(harness.row(f"time to 97% digits_cnn: {peer} time / jtrain time", t / jt, target="(no target)",
                                note=f"{jt:.1f} s vs {t:.1f} s; lowest test acc jtrain {accuracy['jtrain']:.3f}, "
                                     f"{peer} {accuracy[peer]:.3f}" + ("" if reached else "; 97% NOT REACHED")))
    harness.finish(args, "time_to_accuracy", rows, results, load_start)


if __name__ == "__main__":
    main()
