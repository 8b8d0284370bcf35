"""Metric writers for a run's workdir: `metrics.jsonl` plus TensorBoard event files.

The jsonl file is the record the framework itself reads back (plots, reports, tests); TensorBoard is
for looking at a run while it trains. Both are written from one `write()` call so they never disagree.

TensorBoard events are written with tensorboard's own event-file writer and protos, so no TensorFlow
is needed (the same route PyTorch's SummaryWriter takes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_FLUSH_SECS = 2.0

# Keys every record carries; a metric with one of these names would silently overwrite them.
_RESERVED_KEYS = ("step", "split")


def _to_python(value: Any) -> Any:
    """Converts a metric value to something `json` can write: int, float, str, bool or nested lists.

    Accepts numpy scalars and arrays, and jax arrays (anything with `__array__`); converting a jax
    array copies it to the host, which is why `write()` is meant to be called at log steps only.
    """
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    array = np.asarray(value)
    # `.item()` / `.tolist()` turn numpy dtypes into the matching Python int/float/bool.
    return array.item() if array.ndim == 0 else array.tolist()


def _is_scalar(value: Any) -> bool:
    # bool is an int subclass; a True/False flag still plots fine as 1/0 in TensorBoard.
    return isinstance(value, (int, float))


class MetricWriter:
    """Appends metric records to `workdir/metrics.jsonl` and `workdir/tensorboard/` event files.

    Only one process of a multi-host run should write: pass `enabled=False` on the others and every
    method becomes a no-op that creates no files.
    """

    def __init__(self, workdir: str, enabled: bool = True) -> None:
        self.workdir = workdir
        self.enabled = enabled
        self._jsonl = None
        self._events: EventFileWriter | None = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, METRICS_FILE)
        _drop_partial_last_line(path)
        # Append mode: a resumed run continues the same file instead of replacing its history.
        self._jsonl = open(path, "a", encoding="utf-8")
        # Each writer opens a new event file in the same directory; TensorBoard merges them into one run,
        # reading the files in name order. Names start with the creation second, so a writer opened in the
        # same second as an earlier one (a quick resume) waits for the next second to keep that order.
        tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
        _wait_for_a_later_second_than(tb_dir)
        # The writer's thread writes the first event at once and then flushes at most every
        # TENSORBOARD_FLUSH_SECS (its default is 2 minutes, too late for a live TensorBoard, which polls every few
        # seconds); a flush at every write would put the file I/O on the loop's thread.
        self._events = EventFileWriter(tb_dir, flush_secs=TENSORBOARD_FLUSH_SECS)
        # Records wait here and reach the writer's thread together, at most every TENSORBOARD_FLUSH_SECS: that
        # thread's pure-Python work (a CRC per record), woken at every log, holds the interpreter lock against
        # the loop.
        self._waiting: list[tuple[float, int, list[tuple[str, float]]]] = []  # (wall time, step, (tag, value))
        self._hand_off_at = 0.0

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """Records `metrics` of `split` ("train", "val", ...) at `step`.

        Scalars go to both the jsonl file and TensorBoard (tag `split/name`); non-scalar values, such
        as a confusion matrix, go to the jsonl file only.
        """
        if not self.enabled:
            return
        for key in _RESERVED_KEYS:
            if key in metrics:
                raise ValueError(f"metric name {key!r} is reserved for the record's own {key}")
        step = int(step)
        values = {str(name): _to_python(value) for name, value in metrics.items()}

        assert self._jsonl is not None and self._events is not None
        self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        # Flushing on every write is cheap (writes happen at log steps, not every step) and means a
        # crash loses no logged record.
        self._jsonl.flush()

        scalars = [(f"{split}/{name}", float(value)) for name, value in values.items() if _is_scalar(value)]
        if scalars:
            now = time.time()
            self._waiting.append((now, step, scalars))
            if now >= self._hand_off_at:
                self._hand_off_events()
                self._hand_off_at = now + TENSORBOARD_FLUSH_SECS

    def _hand_off_events(self) -> None:
        """Gives the waiting records to the event writer's thread, as TensorBoard events."""
        for wall_time, step, scalars in self._waiting:
            values = [summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in scalars]
            self._events.add_event(event_pb2.Event(wall_time=wall_time, step=step,
                                                   summary=summary_pb2.Summary(value=values)))
        self._waiting = []

    def flush(self) -> None:
        if self._jsonl is not None:
            self._jsonl.flush()
        if self._events is not None:
            self._hand_off_events()
            self._events.flush()

    def close(self) -> None:
        """Flushes and closes both files; safe to call more than once."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._events is not None:
            self._hand_off_events()
            self._events.close()
            self._events = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _drop_partial_last_line(path: str) -> None:
    """Truncates a record left half-written by a crash.

    Appending after it would glue the next record onto the same line and corrupt both; the partial
    record is unreadable anyway.
    """
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """Reads `workdir/metrics.jsonl` back as a list of records, in the order they were written.

    A truncated last line (the process died mid-write) is skipped; a malformed line anywhere else
    means the file is damaged and raises ValueError. A missing file gives an empty list.
    """
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            # Only the final line can be cut short by a crash: it is the one with no newline after it.
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: malformed metrics record: {e}") from e
    return records


def drop_records_after(workdir: str, step: int) -> None:
    """Forgets metrics.jsonl records past `step`: a run resumed from the checkpoint at `step` will log
    those steps again, and the history should read as one uninterrupted run. (TensorBoard does the same
    for its event files when it sees a step go backwards.)"""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.isfile(path):
        return
    _drop_partial_last_line(path)
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def _wait_for_a_later_second_than(tb_dir: str) -> None:
    newest = 0
    if os.path.isdir(tb_dir):
        for name in os.listdir(tb_dir):
            parts = name.split(".")
            if name.startswith("events.out.tfevents.") and len(parts) > 3 and parts[3].isdigit():
                newest = max(newest, int(parts[3]))
    while int(time.time()) <= newest:
        time.sleep(0.05)
