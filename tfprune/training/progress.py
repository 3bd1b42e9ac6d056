"""Training progress on stdout, and the plain progress line that a sweep reads back.

Importing this module imports neither TensorFlow nor Keras (a sweep parses the lines of its
cells without them); the Keras progress bar is imported when a terminal shows it.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable

# Without a terminal, a progress line is written at most this often (and at each epoch's end).
PLAIN_PROGRESS_SECONDS = 5.0


class ProgressDisplay:
    """Training progress on stdout: keras' progress bar on a terminal, plain lines elsewhere.

    Redirected to a file, the bar's ANSI codes, carriage returns and backspaces would fill it;
    there, each `update` writes one `format_progress_line` instead, at most every `interval`
    seconds (the first update and the last of each epoch always).

    Args:
        total_steps: Iterations of the whole training.
        steps_per_epoch: Iterations in one epoch.
        enabled: False shows nothing.
        stream: Where the plain lines go (default: `sys.stdout` at construction); the bar
            goes to `sys.stdout`.
        interval: Seconds between plain lines.
        clock: A monotonic clock in seconds.

    Example:

    >>> progress = ProgressDisplay(100, 50)
    >>> progress.start_epoch(0, 0, 50)
    >>> progress.update(10, 0.6931, 0.5, 0.1)
    epoch 1/2 iteration 10/100 loss 0.6931 accuracy 0.5000 lr 0.1
    """

    def __init__(
        self,
        total_steps: int,
        steps_per_epoch: int,
        enabled: bool = True,
        stream=None,
        interval: float = PLAIN_PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total_steps = total_steps
        self.epochs = math.ceil(total_steps / steps_per_epoch)
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.bar = _is_terminal(self.stream)
        self.interval = interval
        self.clock = clock
        self._epoch = self._epoch_start = self._epoch_end = 0
        self._progbar = None
        self._last_line = None

    def start_epoch(self, epoch: int, step: int, epoch_end: int) -> None:
        """Epoch `epoch` (from 0) runs from iteration `step` to `epoch_end`."""
        self._epoch, self._epoch_start, self._epoch_end = epoch, step, epoch_end
        if self.enabled and self.bar:
            import keras  # only a terminal shows the bar; see the module's docstring

            self._progbar = keras.utils.Progbar(
                epoch_end - step, stateful_metrics=["loss", "accuracy", "lr"]
            )

    def update(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        """The train metrics after iteration `step` (the running means of the epoch)."""
        if not self.enabled:
            return
        if self.bar:
            values = [("loss", loss), ("accuracy", accuracy), ("lr", lr)]
            self._progbar.update(step - self._epoch_start, values)
            return
        now = self.clock()
        recent = self._last_line is not None and now - self._last_line < self.interval
        if recent and step < self._epoch_end:
            return
        self._last_line = now
        line = format_progress_line(
            self._epoch + 1, self.epochs, step, self.total_steps, loss, accuracy, lr
        )
        self.stream.write(line + "\n")
        self.stream.flush()


def _is_terminal(stream) -> bool:
    # A notebook's output is no terminal but redraws the bar as one does.
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def format_progress_line(
    epoch: int, epochs: int, step: int, total_steps: int, loss: float, accuracy: float, lr: float
) -> str:
    """One plain progress line: `epoch 2/10 iteration 300/4690 loss 0.4123 accuracy 0.8512
    lr 0.1` (epoch from 1, iteration counted over the whole training)."""
    return (
        f"epoch {epoch}/{epochs} iteration {step}/{total_steps} loss {loss:.4f} "
        f"accuracy {accuracy:.4f} lr {lr:g}"
    )


_PROGRESS_LINE = re.compile(
    r"^epoch (\d+)/(\d+) iteration (\d+)/(\d+) loss (\S+) accuracy (\S+) lr (\S+)$"
)


def parse_progress_line(line: str) -> dict | None:
    """The numbers of a `format_progress_line` line (keys `epoch`, `epochs`, `step`,
    `total_steps`, `loss`, `accuracy`, `lr`), or None for any other line."""
    match = _PROGRESS_LINE.match(line.strip())
    if not match:
        return None
    names = ("epoch", "epochs", "step", "total_steps", "loss", "accuracy", "lr")
    try:
        return {
            name: (int if index < 4 else float)(value)
            for index, (name, value) in enumerate(zip(names, match.groups(), strict=True))
        }
    except ValueError:
        return None
