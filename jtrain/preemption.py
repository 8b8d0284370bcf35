"""SIGTERM / SIGINT (preemption, Ctrl-C): finish the current step, checkpoint it, exit with PREEMPTED_EXIT_CODE.

The handler only sets a flag; the loop checks it between steps, so a step is never cut in half and the
checkpoint holds a consistent state. A second signal while the checkpoint is being written is ignored: the
save is what makes the resume possible. With several processes, the flag is agreed on collectively, so every
process stops at the same step (checkpoint saves are collective).
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again" - the same command resumes from the checkpoint


class Preempted(Exception):
    """Raised by `jtrain.train` after the preemption checkpoint is durable."""

    def __init__(self, step: int, signal_name: str, checkpoint_dir: str):
        self.step = step
        super().__init__(f"stopped by {signal_name} after step {step}; checkpoint saved in {checkpoint_dir}/{step}; "
                         f"run the same command to resume")


class PreemptionWatcher:
    """Context manager installing the handlers (main thread only; elsewhere it watches nothing)."""

    def __init__(self):
        self.signal_name = ""
        self._previous = {}

    def __enter__(self) -> "PreemptionWatcher":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def stop_requested(self) -> bool:
        """Whether any process received a signal. Collective with several processes: call it at the same
        steps everywhere."""
        local = bool(self.signal_name)
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils

        return bool(np.max(multihost_utils.process_allgather(np.int32(local))))
