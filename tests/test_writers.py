"""Tests for jtrain.writers (metrics.jsonl, TensorBoard events) and jtrain.progress (console bar)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from jtrain.progress import DISABLE_ENV, ProgressBar
from jtrain.writers import METRICS_FILE, TENSORBOARD_DIR, MetricWriter, read_metrics

# ---------------------------------------------------------------------------------------------
# metrics.jsonl


def test_jsonl_round_trip_converts_numpy_and_lists(tmp_path):
    workdir = str(tmp_path)
    with MetricWriter(workdir) as writer:
        writer.write(
            np.int64(10),
            "train",
            {
                "loss": np.float32(0.5),
                "accuracy": np.array(0.75),  # 0-d array
                "count": np.int32(3),
                "confusion": np.array([[1, 2], [3, 4]]),
                "names": ["a", "b"],
            },
        )
        writer.write(20, "val", {"loss": 0.25})

    records = read_metrics(workdir)
    assert records == [
        {"step": 10, "split": "train", "loss": 0.5, "accuracy": 0.75, "count": 3,
         "confusion": [[1, 2], [3, 4]], "names": ["a", "b"]},
        {"step": 20, "split": "val", "loss": 0.25},
    ]
    # Plain Python types, not numpy ones that happen to compare equal.
    assert type(records[0]["step"]) is int
    assert type(records[0]["loss"]) is float
    assert type(records[0]["count"]) is int


def test_jax_scalars_are_accepted(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    with MetricWriter(str(tmp_path)) as writer:
        writer.write(1, "train", {"loss": jnp.asarray(0.5), "vec": jnp.arange(3)})
    assert read_metrics(str(tmp_path)) == [{"step": 1, "split": "train", "loss": 0.5, "vec": [0, 1, 2]}]


def test_reserved_metric_names_are_rejected(tmp_path):
    with MetricWriter(str(tmp_path)) as writer, pytest.raises(ValueError, match="reserved"):
        writer.write(1, "train", {"step": 3})


def test_second_writer_appends(tmp_path):
    workdir = str(tmp_path)
    with MetricWriter(workdir) as writer:
        writer.write(1, "train", {"loss": 1.0})
    with MetricWriter(workdir) as writer:  # a resumed run
        writer.write(2, "train", {"loss": 0.5})
    assert [(r["step"], r["loss"]) for r in read_metrics(workdir)] == [(1, 1.0), (2, 0.5)]


def test_truncated_last_line_is_skipped_and_repaired_on_resume(tmp_path):
    workdir = str(tmp_path)
    with MetricWriter(workdir) as writer:
        writer.write(1, "train", {"loss": 1.0})
    path = tmp_path / METRICS_FILE
    with open(path, "a") as f:
        f.write('{"step": 2, "split": "tr')  # the process died mid-write
    assert read_metrics(workdir) == [{"step": 1, "split": "train", "loss": 1.0}]

    # Resuming must not glue the next record onto the partial line.
    with MetricWriter(workdir) as writer:
        writer.write(2, "train", {"loss": 0.5})
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2]


def test_malformed_middle_line_raises(tmp_path):
    (tmp_path / METRICS_FILE).write_text('{"step": 1, "split": "train"}\nnot json\n{"step": 2, "split": "train"}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_metrics(str(tmp_path))


def test_missing_file_reads_as_empty(tmp_path):
    assert read_metrics(str(tmp_path)) == []


def test_disabled_writer_creates_nothing(tmp_path):
    workdir = tmp_path / "run"
    with MetricWriter(str(workdir), enabled=False) as writer:
        writer.write(1, "train", {"loss": 1.0})
        writer.flush()
    assert not workdir.exists()


# ---------------------------------------------------------------------------------------------
# TensorBoard

# Exactly representable in float32 (TensorBoard's simple_value), so they can be compared with ==.
TRAIN_LOSS = {0: 2.5, 10: 1.25, 20: 0.625}
VAL_ACCURACY = {10: 0.75, 20: 0.875}


def _write_example_run(workdir: str) -> None:
    with MetricWriter(workdir) as writer:
        for step, loss in TRAIN_LOSS.items():
            writer.write(step, "train", {"loss": np.float32(loss), "confusion": [[1, 0], [0, 1]]})
            if step in VAL_ACCURACY:
                writer.write(step, "val", {"accuracy": VAL_ACCURACY[step]})


def test_tensorboard_events_read_back_by_event_accumulator(tmp_path):
    _write_example_run(str(tmp_path))
    acc = event_accumulator.EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()

    # The non-scalar confusion matrix must not become a tag.
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "val/accuracy"]
    assert {e.step: e.value for e in acc.Scalars("train/loss")} == TRAIN_LOSS
    assert {e.step: e.value for e in acc.Scalars("val/accuracy")} == VAL_ACCURACY


def test_resumed_run_adds_a_second_event_file_in_the_same_run(tmp_path):
    with MetricWriter(str(tmp_path)) as writer:
        writer.write(1, "train", {"loss": 1.0})
    with MetricWriter(str(tmp_path)) as writer:
        writer.write(2, "train", {"loss": 0.5})
    acc = event_accumulator.EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 0.5)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# No proxy: the server is local, and an http_proxy in the environment must not reroute the requests.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(base: str, route: str, **params: str):
    url = f"{base}{route}?{urllib.parse.urlencode(params)}" if params else f"{base}{route}"
    with _LOCAL.open(url, timeout=5) as response:
        return json.load(response)


def test_tensorboard_server_serves_the_scalars(tmp_path):
    logdir = tmp_path / "logs"
    _write_example_run(str(logdir))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    with open(server_log, "wb") as log:
        # Output goes to a file, not a pipe, so a chatty server cannot block on a full pipe buffer.
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(port), "--load_fast=false", "--reload_interval=1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        run = None
        while run is None:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not load the run (exit code {server.poll()}):\n"
                            f"{server_log.read_text(errors='replace')}")
            try:
                tags = _get_json(base, "/data/plugin/scalars/tags")
                run = next((name for name, run_tags in tags.items() if "train/loss" in run_tags), None)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            if run is None:
                time.sleep(0.2)

        assert run == TENSORBOARD_DIR  # the event files' directory relative to --logdir
        points = _get_json(base, "/data/plugin/scalars/scalars", run=run, tag="train/loss")
        assert {step: value for _wall_time, step, value in points} == TRAIN_LOSS
        points = _get_json(base, "/data/plugin/scalars/scalars", run=run, tag="val/accuracy")
        assert {step: value for _wall_time, step, value in points} == VAL_ACCURACY
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------------------------
# progress bar


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_disabled_when_stderr_is_not_a_tty(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with ProgressBar(total=10) as bar:
        assert not bar.enabled
        bar.update(3)
        bar.set_metrics(loss=0.5)
    assert sys.stderr.getvalue() == ""


def test_progress_default_follows_tty_and_env(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _FakeTTY())
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    with ProgressBar(total=10) as bar:
        assert bar.enabled
    monkeypatch.setenv(DISABLE_ENV, "1")
    with ProgressBar(total=10) as bar:
        assert not bar.enabled
    monkeypatch.setenv(DISABLE_ENV, "")  # set but empty does not disable
    with ProgressBar(total=10) as bar:
        assert bar.enabled


def test_progress_enabled_shows_steps_and_metrics(capsys):
    with ProgressBar(total=100, initial=40, enabled=True) as bar:
        bar.update(2)
        bar.set_metrics(loss=0.123456, **{"examples/s": 12345.6})
        bar.write("evaluated")
    err = capsys.readouterr().err
    assert "42/100" in err
    assert "loss=0.1235" in err
    assert "examples/s=12346" in err
    assert "evaluated" in err


def test_progress_disabled_write_still_prints(capsys):
    bar = ProgressBar(total=5, enabled=False)
    bar.update()
    bar.write("hello")
    bar.close()
    assert capsys.readouterr().err == "hello\n"
