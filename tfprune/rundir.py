"""Run directories on disk: claiming one, checking what it holds, and its results.

A run directory holds `config.json` (what was asked), `checkpoints/`, `tensorboard/`,
`snapshots/` (weights kept at requested steps), `masks.npz`, and on completion `model.keras`
and `results.json`. Every file is written atomically. One process at a time holds a run
directory (`claim_output_dir`). Nothing here imports TensorFlow: the sweep plans and collects
with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time

from absl import logging

from tfprune._io import write_text
from tfprune.errors import OutputError
from tfprune.results import FINISHED_KEYS

# Settings that change how a run is displayed or executed, not what it computes.
COSMETIC = (
    "progress",
    "log_every_steps",
    "keep_checkpoints",
    "steps_per_execution",
    "deterministic",
    "jit_compile",
)


def read_results(output_dir: str) -> dict | None:
    """The `results.json` of a finished run, or None.

    A `results.json` that cannot be read (garbled, truncated, not a run's results) counts as
    missing, with a warning: the run then finishes again from its last checkpoint, which
    rewrites the file.
    """
    path = os.path.join(output_dir, "results.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            results = json.load(f)
        if not isinstance(results, dict) or not all(k in results for k in FINISHED_KEYS):
            raise ValueError("it is not the results of a run")
    except (OSError, ValueError) as error:
        logging.warning(
            "%s is unreadable (%s): the run counts as unfinished and finishes again from its "
            "last checkpoint",
            path,
            " ".join(str(error).split())[:200],
        )
        return None
    return results


def write_json(path: str, content: dict) -> None:
    """Writes `content` as JSON to `path` atomically (temporary file, then rename)."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def snapshot_path(run_dir: str, step: int) -> str:
    """Where a run keeps the variables it had after `step` iterations (see `Trainer`)."""
    return os.path.join(run_dir, "snapshots", f"step-{step:09d}.npz")


@contextlib.contextmanager
def locked(path: str):
    """Holds an exclusive lock on `path + ".lock"`, so that one process at a time computes a
    shared result (a dense pre-training, a lottery level) that others then reuse."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Settings added after runs were made without them, with the value that means "as before": a
# configuration that sets one to that value computes what one without it does.
ADDED_LATER = {"experiment": {"allocation": None}, "training": {"precision": "float32"}}


def semantic(config: dict) -> dict:
    """The part of a run's configuration that changes what it computes."""
    result = {}
    for key, value in config.items():
        if key == "tfprune_version":
            continue
        if key == "training":
            value = {k: v for k, v in value.items() if k not in COSMETIC}
        added = ADDED_LATER.get(key, {})
        if added and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in added or v != added[k]}
        result[key] = value
    return result


LOCK_NAME = ".tfprune.lock"


def prepare_output_dir(output_dir: str, config: dict, overwrite: bool) -> None:
    """Creates a run directory or checks that an existing one holds the same configuration.

    Raises:
        OutputError: if the directory holds something else (a different configuration, without
            `overwrite`; or files that are not a tfprune run) or cannot be written.
    """
    config_path = os.path.join(output_dir, "config.json")
    _check_usable(output_dir)
    is_run = os.path.exists(config_path)
    if is_run and overwrite:
        logging.warning("overwriting the run in %s", output_dir)
        _empty(output_dir)
    elif is_run:
        check_same_configuration(output_dir, config)
    try:
        os.makedirs(output_dir, exist_ok=True)
        if not os.path.exists(config_path):
            write_json(config_path, config)
        _check_writable(output_dir)
    except OSError as error:
        raise OutputError(f"cannot write to output directory {output_dir}: {error}") from error


def check_same_configuration(output_dir: str, config: dict) -> None:
    """Raises OutputError, naming the first setting that differs, unless the run in
    `output_dir` has the configuration `config` (up to the settings in `COSMETIC`)."""
    difference = _difference(os.path.join(output_dir, "config.json"), config)
    if difference:
        raise OutputError(
            f"{output_dir} holds a run with a different configuration ({difference}); "
            "choose another output directory or pass --overwrite to replace it"
        )


@contextlib.contextmanager
def claim_output_dir(output_dir: str, config: dict, overwrite: bool):
    """`prepare_output_dir`, holding the run directory for this process until the block ends.

    One process at a time runs in a run directory: a second one (a repeated command, a sweep
    started twice) is refused instead of writing the same checkpoints and event files.

    Raises:
        OutputError: as `prepare_output_dir`, or if another process holds the directory.
    """
    _check_usable(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        handle = open(os.path.join(output_dir, LOCK_NAME), "a+")
    except OSError as error:
        raise OutputError(f"cannot write to output directory {output_dir}: {error}") from error
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"another process ({_holder(handle)}) is running in {output_dir}: wait for it to "
                "end, or choose another output directory"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            # The host too: on a cluster, the run directory is shared by several machines.
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
            handle.flush()
            prepare_output_dir(output_dir, config, overwrite)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_holder(output_dir: str) -> str | None:
    """Who holds the run directory (`claim_output_dir`), as `pid 18312 on node7`; None if no
    process holds it."""
    path = os.path.join(output_dir, LOCK_NAME)
    if not os.path.exists(path):
        return None
    # Opened for writing: network file systems lock a file exclusively only so.
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def wait_until_unclaimed(
    output_dir: str, timeout: float, poll: float = 1.0, clock=time.monotonic, sleep=time.sleep
) -> str | None:
    """Waits until no process holds the run directory, for `timeout` seconds at most.

    A run cut short on a machine that died may hold its run directory a while longer: its
    process, told that it lost its parent, writes a checkpoint first; a network file system
    releases the locks of a machine it lost when that machine's lease ends (NFSv4: 90 s by
    default). The lock is never taken from a process that holds it.

    Returns:
        None once no process holds it; the holder (`claim_holder`) if one still does after
        `timeout` seconds.

    Example:

    >>> wait_until_unclaimed("runs/snip-none-d0.1-s0", timeout=300.0) is None
    True
    """
    deadline = clock() + timeout
    holder = claim_holder(output_dir)
    if holder is not None:
        logging.info("%s is held by %s: waiting up to %gs for it", output_dir, holder, timeout)
    while holder is not None and clock() < deadline:
        sleep(poll)
        holder = claim_holder(output_dir)
    return holder


def _holder(handle) -> str:
    """The holder that a run directory's lock file names: `pid <pid> on <host>`."""
    handle.seek(0)
    words = handle.read().split()
    if not words:
        return "pid unknown"
    return f"pid {words[0]}" + (f" on {words[1]}" if len(words) > 1 else "")


def _check_usable(output_dir: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputError(f"output directory {output_dir} exists and is not a directory")
    if os.path.isdir(output_dir) and not os.path.exists(os.path.join(output_dir, "config.json")):
        # The lock and the temporary files of an atomic write cut short do not make a run.
        if [n for n in os.listdir(output_dir) if n != LOCK_NAME and not n.startswith(".tmp-")]:
            raise OutputError(
                f"{output_dir} is not empty and holds no tfprune run; choose another output "
                "directory"
            )


def _check_writable(output_dir: str) -> None:
    """Raises OSError unless a file can be created in the run directory and in each of its
    subdirectories (a read-only directory, a full disk)."""
    for root in [output_dir] + [
        entry.path for entry in os.scandir(output_dir) if entry.is_dir() and entry.name[0] != "."
    ]:
        with tempfile.TemporaryFile(dir=root):
            pass


def _empty(output_dir: str) -> None:
    """Removes everything in `output_dir` but the lock file that the caller may hold."""
    for entry in os.scandir(output_dir):
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)


def _difference(config_path: str, config: dict) -> str | None:
    """The first setting in which the run of `config_path` differs from `config`, as
    `"experiment.density: 0.05 there, 0.1 here"`; None when they compute the same."""
    try:
        with open(config_path) as f:
            stored = semantic(json.load(f))
    except (OSError, ValueError, AttributeError) as error:
        return f"its config.json is unreadable: {' '.join(str(error).split())[:100]}"
    wanted = semantic(json.loads(json.dumps(config)))
    there, here = _flatten(stored), _flatten(wanted)
    for key in sorted(there.keys() | here.keys()):
        old, new = there.get(key, _ABSENT), here.get(key, _ABSENT)
        if old != new:
            return f"{key}: {_shown(old)} there, {_shown(new)} here"
    return None


_ABSENT = object()


def _shown(value) -> str:
    return "unset" if value is _ABSENT else repr(value)


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in ("experiment", "training") and not prefix:
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[prefix + key] = value
    return flat
