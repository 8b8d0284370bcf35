"""Where a run's wall time goes: compile, data wait, eval, checkpoint blocking, and step compute.

Timed on the host without extra device syncs: the loop already blocks once per log interval (fetching
metrics), so time not spent compiling, waiting for data, evaluating or blocking on a checkpoint save is time
the host spent dispatching steps or waiting for them to finish - step compute. Goodput is its fraction of
the loop's wall time.
"""

from __future__ import annotations

import contextlib
import time


class TimeBudget:
    CATEGORIES = ("compile", "data", "eval", "checkpoint")

    def __init__(self):
        self.seconds = dict.fromkeys(self.CATEGORIES, 0.0)
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def track(self, category: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[category] += time.perf_counter() - began

    def add(self, category: str, seconds: float) -> None:
        """The same as `track`, for the loop's per-step path, where a context manager's cost shows."""
        self.seconds[category] += seconds

    def report(self) -> dict[str, float]:
        total = max(time.perf_counter() - self._start, 1e-9)
        step = max(total - sum(self.seconds.values()), 0.0)
        out = {f"{k}_s": v for k, v in self.seconds.items()}
        out.update(step_s=step, total_s=total, goodput=step / total)
        return out


def since_process_start() -> float | None:
    """Seconds since this process started (interpreter, imports, config), from /proc; None where unknown."""
    import os

    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
