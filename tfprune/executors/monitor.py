"""The status lines of a sweep: each running cell and how far it is, read from its log."""

from __future__ import annotations

import os
import threading
import time

from absl import logging

from tfprune.executors.base import duration
from tfprune.training import parse_progress_line


def latest_progress(log_path: str, offset: int = 0, tail: int = 65536) -> dict | None:
    """The last complete progress line (see `tfprune.training.format_progress_line`) that a
    cell wrote to `log_path` after byte `offset`, parsed; None if there is none yet.

    Only the last `tail` bytes are read; a line still being written is left out.
    """
    try:
        with open(log_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(offset, size - tail)
            f.seek(start)
            text = f.read(size - start).decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(text.split("\n")[:-1]):
        progress = parse_progress_line(line)
        if progress is not None:
            return progress
    return None


class CellMonitor:
    """Logs one line naming each running cell and how far it is, read from the cell's log.

    A line is logged every `interval` seconds while cells run, and as soon as a cell starts.
    A cell's log is appended to by each attempt: only what this attempt wrote counts.

    Args:
        interval: Seconds between the status lines; 0 logs none.
        clock: A monotonic clock in seconds.

    Example:

    >>> with CellMonitor(30.0) as monitor:
    ...     monitor.started("snip-none-d0.1-s0", "D/logs/snip-none-d0.1-s0.log")
    """

    def __init__(self, interval: float, clock=time.monotonic):
        self.interval = interval
        self.clock = clock
        self.lock = threading.Lock()
        # name: (log path, size of the log when the cell started, start time)
        self.running: dict[str, tuple[str, int, float]] = {}
        self._reported: set[str] = set()
        self._last = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cell-monitor", daemon=True)

    def __enter__(self) -> CellMonitor:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def started(self, name: str, log_path: str) -> None:
        """Cell `name` starts now and writes to `log_path`."""
        try:
            offset = os.path.getsize(log_path)
        except OSError:
            offset = 0
        with self.lock:
            self.running[name] = (log_path, offset, self.clock())

    def ended(self, name: str) -> None:
        """Cell `name` has ended."""
        with self.lock:
            self.running.pop(name, None)

    def status(self) -> str | None:
        """The status line of the running cells; None if none runs."""
        with self.lock:
            running = dict(self.running)
        if not running:
            return None
        now = self.clock()
        parts = []
        for name, (log_path, offset, started) in running.items():
            progress = latest_progress(log_path, offset)
            if progress is None:
                state = "not training yet"
            else:
                state = (
                    f"epoch {progress['epoch']}/{progress['epochs']} iteration "
                    f"{progress['step']}/{progress['total_steps']} loss {progress['loss']:.4f}"
                )
            parts.append(f"{name} {state} ({duration(now - started)})")
        return f"running {len(parts)}: " + "; ".join(parts)

    def poll(self) -> None:
        """Logs the status line if `interval` has passed since the last one or a cell has
        started since."""
        with self.lock:
            names = set(self.running)
        now = self.clock()
        if now - self._last < self.interval and names <= self._reported:
            return
        line = self.status()
        if line is not None:
            logging.info("%s", line)
            self._last = now
        self._reported = names

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, self.interval / 3)):
            self.poll()
