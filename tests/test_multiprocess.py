"""Two processes x 4 fake CPU devices on 127.0.0.1 train like one process x 8 devices; a dead peer is an error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from _cli import REPO_ROOT, SMOKE_OVERRIDES, assert_same_state, final_state, run_jtrain

# The experiment's shift augmentation and dropout stay on: neither may depend on the number of processes.
ARGS = ["train", "--config", "experiments/digits_cnn.py", *SMOKE_OVERRIDES, "--config.data.eval_batch_size=40",
        "--config.train.steps=20"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pair(args: list[str], data_dir: str, extra: list[str] = ()) -> list[subprocess.Popen]:
    port = _free_port()
    env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "JTRAIN_DATA_DIR": data_dir, "PYTHONPATH": REPO_ROOT,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    return [subprocess.Popen([sys.executable, "-m", "jtrain", *args, *extra, "--coordinator", f"127.0.0.1:{port}",
                              "--num_processes", "2", "--process_id", str(i)], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _losses(workdir: str) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
            if r["split"] == "train"}


def test_two_processes_match_one_process_and_checkpoint_restores_in_one(digits_data_dir, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    single = run_jtrain([*ARGS, "--workdir", one], digits_data_dir,
                        {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert single.returncode == 0, single.stderr[-3000:]

    procs = _start_pair([*ARGS, "--workdir", two], digits_data_dir)
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "'data': 8" in outputs[0][1]  # one mesh over both processes' devices
    # Same examples, augmentations, dropout masks and init on the same 8 devices: only the order of the
    # cross-process sums may differ, which leaves at most 4e-7 on any leaf after 20 steps (measured); 2e-6 is a
    # 5x margin and still 1000x below one AdamW step (lr 2e-3), what a process augmenting other rows would move.
    assert_same_state(final_state(one), final_state(two), rtol=1e-5, atol=2e-6)
    a, b = _losses(one), _losses(two)
    assert a.keys() == b.keys()
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), step
    s1 = json.load(open(os.path.join(one, "summary.json")))
    s2 = json.load(open(os.path.join(two, "summary.json")))
    assert s2["test"]["num_examples"] == 270
    assert s2["test"]["loss"] == pytest.approx(s1["test"]["loss"], rel=1e-4)

    # The 2-process checkpoint restores in a 1-process run.
    evaluated = run_jtrain(["eval", "--workdir", two], digits_data_dir, {"XLA_FLAGS": ""})
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["loss"] == pytest.approx(s2["test"]["loss"], rel=1e-5)


DECODER = ["train", "--config", "experiments/shakespeare_char_gpt.py", "--config.data.seq_len=32",
           "--config.model.max_len=32", "--config.data.batch_size=16", "--config.data.eval_batch_size=64",
           "--config.model.num_layers=2", "--config.model.embed_dim=32", "--config.model.mlp_dim=64",
           "--config.model.num_heads=2", "--config.train.steps=20", "--config.train.log_every_steps=5",
           "--config.eval.every_steps=0", "--config.checkpoint.every_steps=0", "--config.data.splits.val=val[:1]",
           "--config.data.splits.test=none", "--config.data.augment="]


@pytest.fixture(scope="module")
def text_data_dir(tmp_path_factory) -> str:
    from jtrain.data import registry

    path = str(tmp_path_factory.mktemp("tfds_text"))
    registry.prepare("shakespeare_char", path)
    return path


def test_two_processes_train_the_decoder_like_one(text_data_dir, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    single = run_jtrain([*DECODER, "--workdir", one], text_data_dir,
                        {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert single.returncode == 0, single.stderr[-3000:]
    procs = _start_pair([*DECODER, "--workdir", two], text_data_dir)
    for p, (_, err) in zip(procs, [p.communicate(timeout=600) for p in procs]):
        assert p.returncode == 0, err[-3000:]
    # Same 8 devices (the decoder has no dropout): summation-order noise only. The largest difference, 8e-7, is
    # in the key biases, whose gradient is zero in exact arithmetic (softmax ignores a shift shared by all keys),
    # so AdamW normalises rounding noise there; 1e-5 is a 12x margin and 200x below one step (lr 2e-3).
    assert_same_state(final_state(one), final_state(two), rtol=1e-5, atol=1e-5)
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [5, 10, 15, 20]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), step


def test_killing_one_process_stops_the_other_within_60s(digits_data_dir, tmp_path):
    procs = _start_pair([*ARGS, "--workdir", str(tmp_path)], digits_data_dir,
                        ["--config.train.steps=100000", "--config.train.log_every_steps=1"])
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-2000:]
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    try:
        procs[0].wait(timeout=60)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("the surviving process hung for more than 60 s after its peer died")
    assert time.time() - killed_at < 60
    assert procs[0].returncode != 0


def test_unreachable_coordinator_fails_fast_with_the_address(digits_data_dir, tmp_path):
    port = _free_port()  # nobody listens there
    start = time.time()
    result = run_jtrain([*ARGS, "--workdir", str(tmp_path), "--coordinator", f"127.0.0.1:{port}",
                         "--num_processes", "2", "--process_id", "1"], digits_data_dir,
                        {"JTRAIN_COORDINATOR_TIMEOUT_S": "5"}, timeout=180)
    assert result.returncode == 2
    assert time.time() - start < 60
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"jtrain: error: cannot join the run's coordinator at 127.0.0.1:{port}"), last


def test_augmentation_draws_do_not_depend_on_the_number_of_processes():
    from jtrain.data import transforms

    # Two stacked global batches of 8 copies of one image: rows differ only by their draws.
    images = np.repeat(np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32), 16, axis=0)
    names = ("shift", "flip", "noise")

    def gens():
        return [np.random.default_rng([0, j]) for j in range(2)]

    whole = transforms.augment_batch({"inputs": images}, names, gens())["inputs"]
    # Process p of 4 holds rows 2p, 2p + 1 of each global batch.
    parts = [transforms.augment_batch({"inputs": images.reshape(2, 4, 2, 8, 8, 1)[:, p].reshape(4, 8, 8, 1)},
                                      names, gens(), p, 4)["inputs"].reshape(2, 2, 8, 8, 1) for p in range(4)]
    np.testing.assert_array_equal(np.stack(parts, 1).reshape(whole.shape), whole)
    assert not np.array_equal(parts[0], parts[1])  # each process's rows get their own draws, not the first rows'
