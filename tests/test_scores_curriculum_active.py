"""Per-example scores (jtrain score), curriculum orders (data.curriculum.*) and active learning (jtrain active)."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pandas as pd
import pytest

from _cli import run_jtrain
from jtrain.config import default_config
from jtrain.data import curriculum

MLP = ["--config", "experiments/digits_active.py", "--config.train.log_every_steps=50"]


@pytest.fixture(scope="module")
def noisy_run(digits_data_dir, tmp_path_factory):
    """Digits with 5% of the training labels replaced on purpose, then scored."""
    workdir = str(tmp_path_factory.mktemp("noisy"))
    result = run_jtrain(["train", *MLP, "--config.data.batch_size=32", "--config.train.steps=400",
                         "--config.data.label_noise=0.05", "--workdir", workdir], digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = os.path.join(workdir, "scores.csv")
    result = run_jtrain(["score", "--workdir", workdir, "--output", scores], digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, pd.read_csv(scores)


def test_scores_rank_flipped_labels_first(noisy_run):
    _, frame = noisy_run
    n, flipped = len(frame), int(frame["flipped"].sum())
    assert flipped == round(0.05 * n)
    assert sorted(frame["index"]) == list(range(n))  # every training row once
    assert (np.diff(frame["loss"]) <= 0).all()  # highest loss first
    np.testing.assert_allclose(frame["loss"], -np.log(frame["p_label"]), rtol=1e-6)
    # a negative margin is exactly a wrong prediction
    assert ((frame["margin"] < 0) == (frame["label"] != frame["predicted"])).all()
    precision = frame.head(flipped)["flipped"].mean()
    # chance is 5%; a model that fits noise would put the flipped labels anywhere
    assert precision > 0.6, precision


def test_score_margin_ranking_and_bald(noisy_run, digits_data_dir, tmp_path):
    workdir, by_loss = noisy_run
    out = str(tmp_path / "margin.csv")
    result = run_jtrain(["score", "--workdir", workdir, "--output", out, "--rank", "margin", "--passes", "4",
                         "--split", "val"], digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(out)
    assert (np.diff(frame["margin"]) >= 0).all()
    assert "flipped" not in frame  # val labels are untouched
    assert (frame["bald"] >= -1e-9).all() and frame["bald"].max() > 0  # dropout passes disagree somewhere


def test_curriculum_pacing_functions():
    c = default_config().data
    c.curriculum.start, c.curriculum.steps, c.curriculum.stages = 0.25, 100, 3
    for pacing in ("linear", "root", "geometric", "step"):
        c.curriculum.pacing = pacing
        values = [curriculum.fraction(c, b) for b in range(0, 130)]
        assert values[0] == pytest.approx(0.25) and values[100] == pytest.approx(1.0) and values[-1] == 1.0
        assert (np.diff(values) >= -1e-12).all(), pacing
    c.curriculum.pacing = "step"
    assert len({round(curriculum.fraction(c, b), 9) for b in range(100)}) == 3
    c.curriculum.pacing = "root"
    assert curriculum.fraction(c, 25) > 0.25 + 0.75 * 0.25  # root grows faster than linear early on


def _order(order: str, stack: int = 1, seed: int = 0):
    c = default_config().data
    c.curriculum.order, c.curriculum.start, c.curriculum.steps = order, 0.2, 10
    ranking = np.arange(100)[::-1]  # row 99 easiest
    return curriculum.CurriculumOrder(ranking, 8, stack, seed, c)


def test_curriculum_order_paces_and_is_a_function_of_seed_and_step():
    order = _order("easy")
    first = order[0]
    assert len(first) == 8 and len(set(first)) == 8
    assert set(first) <= set(range(80, 100))  # the easiest 20% at step 0
    later = np.concatenate([order[b] for b in range(10, 60)])
    assert later.min() < 50  # the whole split after `steps`
    # stacks of batches (data.transfer_batches) hold the same batches in the same order
    stacked = _order("easy", stack=4)
    np.testing.assert_array_equal(stacked[3], np.concatenate([order[b] for b in range(12, 16)]))
    np.testing.assert_array_equal(_order("easy")[5], order[5])
    assert not np.array_equal(_order("easy", seed=1)[5], order[5])


def test_curriculum_difficulty_file_must_match_the_split(tmp_path):
    from jtrain.errors import DataError

    c = default_config().data
    path = tmp_path / "d.csv"
    pd.DataFrame({"index": [1, 0, 2], "loss": [0.5, 0.1, 0.9]}).to_csv(path, index=False)
    c.curriculum.difficulty = str(path)
    values = curriculum._from_file(str(path), "loss", 3)
    np.testing.assert_array_equal(values, [0.1, 0.5, 0.9])  # placed by index, not by file order
    with pytest.raises(DataError, match="3 rows, but the training split has 4"):
        curriculum._from_file(str(path), "loss", 4)
    with pytest.raises(DataError, match="no difficulty column 'margin'"):
        curriculum._from_file(str(path), "margin", 3)


@pytest.mark.slow
def test_curriculum_run_resumes_mid_pacing_exactly(noisy_run, digits_data_dir, tmp_path):
    workdir, _ = noisy_run
    common = ["train", *MLP, f"--config.data.curriculum.difficulty={os.path.join(workdir, 'scores.csv')}",
              "--config.data.curriculum.steps=60", "--config.data.curriculum.pacing=root",
              "--config.data.curriculum.order=hard", "--config.train.log_every_steps=10"]
    straight, pieces = str(tmp_path / "straight"), str(tmp_path / "pieces")
    assert run_jtrain([*common, "--config.train.steps=80", "--workdir", straight], digits_data_dir).returncode == 0
    assert run_jtrain([*common, "--config.train.steps=30", "--workdir", pieces], digits_data_dir).returncode == 0
    resumed = run_jtrain([*common, "--config.train.steps=80", "--workdir", pieces], digits_data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = lambda w: {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(w, "metrics.jsonl")))
                     if r["split"] == "train" and r["step"] > 30}
    assert log(straight) == log(pieces) and len(log(straight)) == 5
    a, b = (json.load(open(os.path.join(w, "summary.json"))) for w in (straight, pieces))
    assert a["test"]["loss"] == b["test"]["loss"]


@pytest.mark.slow
def test_active_learning_loop_queries_resumes_and_plots(digits_data_dir, tmp_path):
    workdir = str(tmp_path / "active")
    args = ["active", *MLP, "--config.train.steps=60", "--workdir", workdir, "--initial", "16", "--query", "12",
            "--rounds", "3", "--strategy", "random,margin,bald", "--passes", "3"]
    result = run_jtrain(args, digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    curves = pd.read_csv(os.path.join(workdir, "curves.csv"))
    assert list(curves["labelled"]) == [16, 28, 40] * 3
    assert os.path.getsize(os.path.join(workdir, "learning_curve.png")) > 10_000
    sets = {s: [np.load(os.path.join(workdir, s, "seed-0", f"labelled-{k}.npy")) for k in range(3)]
            for s in ("random", "margin", "bald")}
    for s, (l0, l1, l2) in sets.items():
        assert set(l0) < set(l1) < set(l2) and len(l2) == 40, s
        rows = json.load(open(os.path.join(workdir, s, "seed-0", "round-1", "config.json")))["data"]["train_rows"]
        np.testing.assert_array_equal(np.load(rows), l1)
    np.testing.assert_array_equal(sets["random"][0], sets["margin"][0])  # one initial set per seed
    assert set(sets["margin"][1]) != set(sets["random"][1])
    # the margin query really is the smallest top-2 gaps among the unlabelled rows of round 0's model
    from jtrain.score import informativeness, probabilities
    from jtrain import workdir as workdir_lib

    os.environ["JTRAIN_DATA_DIR"] = digits_data_dir
    config = workdir_lib.read_config(os.path.join(workdir, "margin", "seed-0", "round-0"))
    config.data.train_rows = ""
    run, state, _ = workdir_lib.restore(os.path.join(workdir, "margin", "seed-0", "round-0"), config)
    probs, _ = probabilities(run, state, "train")
    unlabelled = np.setdiff1d(np.arange(len(probs)), sets["margin"][0])
    gap = -informativeness("margin", probs[unlabelled])
    chosen = np.setdiff1d(sets["margin"][1], sets["margin"][0])
    assert gap[np.isin(unlabelled, chosen)].max() <= np.sort(gap)[11] + 1e-12

    # running again reads every finished round and trains nothing
    again = run_jtrain(args, digits_data_dir)
    assert again.returncode == 0 and "steps ->" not in again.stderr + again.stdout


@pytest.mark.parametrize("extra, expected", [
    (["--query", "2000"], "more than the pool's"),
    (["--initial", "8"], "--initial 8: round 0 trains on batches of data.batch_size=16"),
    (["--strategy", "bald", "--config.model.dropout=0.0"], "'model.dropout'"),
    (["--strategy", "bald", "--config.model.batch_norm=True"], "'model.batch_norm'"),
    (["--strategy", "entropic"], "--strategy 'entropic'"),
    (["--config.loss.name=mse", "--config.data.name=diabetes"], "class probabilities"),
])
def test_active_learning_mistakes_are_one_line(digits_data_dir, tmp_path, extra, expected):
    base = ["active", *MLP, "--workdir", str(tmp_path / "w"), "--initial", "16", "--query", "10", "--rounds", "2"]
    result = run_jtrain([*base, *extra], digits_data_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "w" / "entropy")


@pytest.mark.parametrize("extra, expected", [
    (["--config.data.curriculum.difficulty=nope.csv", "--config.data.curriculum.steps=5"], "no such file"),
    (["--config.data.curriculum.difficulty=tests/toy_source.py:x", "--config.data.curriculum.steps=5"],
     "cannot import"),
    (["--config.data.label_noise=0.1", "--config.data.name=diabetes", "--config.loss.name=mse"],
     "'data.label_noise': replaces class labels"),
    (["--config.data.train_rows=nope.npy"], "data.train_rows='nope.npy': no such file"),
])
def test_curriculum_and_rows_mistakes_are_one_line(digits_data_dir, tmp_path, extra, expected):
    result = run_jtrain(["train", *MLP, "--workdir", str(tmp_path / "w"), *extra], digits_data_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "w")  # refused before the run wrote anything


def test_score_file_of_another_split_size_is_refused(noisy_run, digits_data_dir, tmp_path):
    workdir, frame = noisy_run
    short = str(tmp_path / "short.csv")
    frame.head(100).to_csv(short, index=False)
    result = run_jtrain(["train", *MLP, "--workdir", str(tmp_path / "w"), f"--config.data.curriculum.difficulty={short}",
                         "--config.data.curriculum.steps=5"], digits_data_dir)
    assert result.returncode == 2 and "100 rows, but the training split has" in result.stderr, result.stderr
    result = run_jtrain(["score", "--workdir", workdir, "--output", str(tmp_path / "s.csv"), "--config.x=1"],
                        digits_data_dir)
    assert result.returncode == 2


def by_label(inputs, targets):
    """A difficulty function for the test below: the label itself (class 0 easiest)."""
    assert inputs.shape[0] == targets.shape[0]
    return targets.astype(float)


def test_curriculum_difficulty_function_orders_the_pool(digits_data_dir, monkeypatch):
    import jtrain

    monkeypatch.setenv("JTRAIN_DATA_DIR", digits_data_dir)
    config = jtrain.load_experiment("experiments/digits_curriculum.py")
    config.data.curriculum.difficulty = "tests.test_scores_curriculum_active:by_label"
    config.data.curriculum.start, config.data.curriculum.steps = 0.1, 1000
    source = jtrain.data.load(config.data)
    it = iter(source.train_dataset(config.data, seed=0))
    first = next(it)["targets"]
    assert set(first.tolist()) <= {0, 1}  # the easiest tenth of the split: zeros, a few ones
    config.data.curriculum.order = "hard"
    first = next(iter(jtrain.data.load(config.data).train_dataset(config.data, seed=0)))["targets"]
    assert set(first.tolist()) <= {8, 9}


def test_seq_len_warmup_cuts_rows_into_growing_sequences():
    from jtrain.data import text

    c = default_config().data
    c.seq_len, c.seq_len_warmup, c.seq_len_warmup_start = 64, 100, 16
    assert [text.warmup_length(c, b) for b in (0, 50, 100, 1000)] == [16, 40, 64, 64]
    rows = {"inputs": np.zeros((6, 64), np.int32), "targets": np.zeros((6, 64), np.int32)}
    out = text.warmup_segments(rows, 25, 3, c)  # batches 75, 76, 77 of 2 rows each
    for j, row in enumerate(out["segment_ids"]):
        length = text.warmup_length(c, 75 + j // 2)
        np.testing.assert_array_equal(row, np.arange(64) // length)
    full = text.warmup_segments(rows, 40, 3, c)["segment_ids"]
    assert (full == 0).all()  # after the warm-up: one sequence per row, and the same keys and shapes as before



@pytest.mark.slow
def test_active_warm_start_starts_each_round_from_the_last(digits_data_dir, tmp_path):
    workdir = str(tmp_path / "warm")
    result = run_jtrain(["active", *MLP, "--config.train.steps=30", "--workdir", workdir, "--initial", "16",
                         "--query", "16", "--rounds", "2", "--strategy", "least_confidence", "--warm_start"],
                        digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    second = os.path.join(workdir, "least_confidence", "seed-0", "round-1")
    config = json.load(open(os.path.join(second, "config.json")))
    assert config["init"]["pretrained"] == os.path.join(workdir, "least_confidence", "seed-0", "round-0")
    report = json.load(open(os.path.join(second, "load_report.json")))
    assert len(report["loaded"]) == 4 and report["initialised"] == []  # both layers from round 0


def test_curriculum_from_a_column_of_your_own_table(tmp_path, monkeypatch):
    """data.curriculum.difficulty=column: the table's column orders the pool and is no feature."""
    import jtrain
    from sklearn.datasets import load_iris

    monkeypatch.setenv("JTRAIN_DATA_DIR", str(tmp_path / "data"))
    iris = load_iris(as_frame=True).frame
    iris["hardness"] = np.arange(len(iris), dtype=float)[::-1]  # the last rows easiest
    path = tmp_path / "iris.csv"
    iris.to_csv(path, index=False)
    config = default_config()
    config.data.name, config.data.target, config.data.batch_size = f"csv:{path}", "target", 8
    config.data.curriculum.difficulty, config.data.curriculum.column = "column", "hardness"
    config.data.curriculum.start, config.data.curriculum.steps = 0.1, 1000
    source = jtrain.data.load(config.data)
    assert source.spec.input_shape == (4,)  # the four measurements; hardness left out
    x_train, _ = source.sources["train"].gather(np.arange(source.num_examples("train")))
    ranking = np.argsort(source.difficulty)
    batch = next(iter(source.train_dataset(config.data, seed=0)))
    easiest = set(ranking[: max(8, int(np.ceil(0.1 * len(ranking))))].tolist())
    rows = [int(np.flatnonzero((x_train == row).all(1))[0]) for row in batch["inputs"]]
    assert set(rows) <= easiest
    config.data.curriculum.column = "nope"
    with pytest.raises(jtrain.DataError, match="no difficulty column 'nope'"):
        jtrain.data.load(config.data)
