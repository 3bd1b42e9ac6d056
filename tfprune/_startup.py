"""Start-up of the command-line entry points: TensorFlow imported without its start-up noise.

The commands that run TensorFlow (train, export) call `quiet_tensorflow` first thing when run as
`__main__`; the report and the sweep never import it. Importing tfprune as a library leaves the
process environment alone. The console scripts (`tfprune-train`, ...)
run the same `__main__` code as `python -m tfprune.train`, ...: see `run_command`.

This module imports nothing of TensorFlow, Keras or the rest of tfprune.
"""

from __future__ import annotations

import os
import re
import runpy
import sys
import tempfile

# 3 also hides the "failed call to cuInit" error that TensorFlow logs on every CPU-only machine.
DEFAULT_LEVEL = "3"
# A line that absl's C++ log writes before it is initialized: severity letter, a zero date
# and time "0000 00:00:<seconds since 1970>.<microseconds>", thread, file:line].
_EARLY_LOG_LINE = re.compile(r"^([IWEF])0000 00:00:\d+\.\d+ +\d+ [^\]]+\] ")
_BEFORE_INIT = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def quiet_tensorflow() -> None:
    """Sets `TF_CPP_MIN_LOG_LEVEL` (unless the user did) and imports TensorFlow at that level.

    TensorFlow 2.21 logs some lines while its libraries load (oneDNN, CUDA drivers), before it
    applies `TF_CPP_MIN_LOG_LEVEL`; they are held back here when that level hides them. Any
    other output of the import is passed on.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL)
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(kept_lines(captured.read().decode(errors="replace"), level))
            sys.stderr.flush()


def kept_lines(text: str, level: int) -> str:
    """The lines of `text` (stderr of the import) that TF_CPP_MIN_LOG_LEVEL=`level` lets through.

    Dropped: the lines absl logs before its initialization below `level`, and, for a level
    above 0, absl's note that it writes them to stderr. Every other line stays, so Python's own
    output is never lost (a message of several lines would keep its later lines, but the
    one TensorFlow logs, its CPU-feature note, follows the level).
    """
    kept = []
    for line in text.splitlines(keepends=True):
        early = _EARLY_LOG_LINE.match(line)
        if early and _SEVERITY[early.group(1)] < level:
            continue
        if line.startswith(_BEFORE_INIT) and level > 0:
            continue
        kept.append(line)
    return "".join(kept)


# The console scripts (pyproject.toml, [project.scripts]) and the modules they run.
COMMANDS = {
    "tfprune-train": "tfprune.train",
    "tfprune-sweep": "tfprune.sweep",
    "tfprune-report": "tfprune.report",
    "tfprune-export": "tfprune.export",
}


def run_command(module: str) -> None:
    """Runs `module` as `python -m <module>` does: its `__main__` block, with `sys.argv[0]`
    set to the module's file and the other arguments passed on.

    The command modules start with `quiet_tensorflow()` under `if __name__ == "__main__"`, so
    a console script starts as quietly as `python -m`, through the same code.

    Args:
        module: A command module, such as "tfprune.train".

    Example:

    >>> run_command("tfprune.report")  # what `tfprune-report` runs
    """
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def train() -> None:
    """The `tfprune-train` console script: `python -m tfprune.train`."""
    run_command(COMMANDS["tfprune-train"])


def sweep() -> None:
    """The `tfprune-sweep` console script: `python -m tfprune.sweep`."""
    run_command(COMMANDS["tfprune-sweep"])


def report() -> None:
    """The `tfprune-report` console script: `python -m tfprune.report`."""
    run_command(COMMANDS["tfprune-report"])


def export() -> None:
    """The `tfprune-export` console script: `python -m tfprune.export`."""
    run_command(COMMANDS["tfprune-export"])
