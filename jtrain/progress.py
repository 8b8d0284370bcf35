"""A progress bar for the training loop that never touches device values.

`update()` only counts steps on the host, so calling it every step does not block on the
asynchronously dispatched train step; metrics reach the bar through `set_metrics()`, which the loop
calls at log steps with values it has already copied to the host.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

# Set to any non-empty value to turn the bar off where stderr is a terminal nobody watches
# (CI runners and job schedulers that allocate a pseudo-terminal).
DISABLE_ENV = "JTRAIN_NO_PROGRESS"


def _default_enabled() -> bool:
    # A bar redrawn with carriage returns only makes sense on a terminal; in a log file it is noise.
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get(DISABLE_ENV)


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    value = float(value)
    # Throughputs like 12345.6 examples/s read better without an exponent; losses and learning rates
    # keep four significant digits.
    return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


class ProgressBar:
    """Shows steps done / total, steps per second, ETA and the latest logged metrics on stderr.

    `enabled=None` turns the bar on only when stderr is a terminal and `JTRAIN_NO_PROGRESS` is unset.
    A disabled bar ignores every call except `write()`, which then prints plainly to stderr.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool | None = None, desc: str = "train") -> None:
        self.enabled = _default_enabled() if enabled is None else enabled
        self._bar: tqdm | None = None
        if self.enabled:
            # `initial` lets a resumed run start the bar at its restored step; tqdm's rate counts only
            # the steps done since, so the ETA is not skewed by the restored ones.
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                file=sys.stderr,  # looked up now, not at import, so redirected stderr is honoured
                dynamic_ncols=True,
            )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_metrics(self, **metrics: float) -> None:
        """Replaces the postfix with `name=value` for each metric, e.g. `loss=0.1234`."""
        if self._bar is not None:
            self._bar.set_postfix_str(", ".join(f"{k}={_format_value(v)}" for k, v in metrics.items()))

    def write(self, message: str) -> None:
        """Prints a line above the bar (or plainly, when disabled) without garbling it."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
