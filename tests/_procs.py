"""tfprune's commands in subprocesses, as a user runs them: from the repository, TF quiet."""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def command(module: str, *args: str) -> list[str]:
    """The command line of `python -m <module> <args>`."""
    return [sys.executable, "-m", module, *args]


def run(module: str, *args: str, timeout: float = 600, env: dict | None = None):
    """Runs `python -m <module>` to the end; stdout and stderr are captured as text."""
    return subprocess.run(
        command(module, *args),
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(
    module: str,
    *args: str,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    env: dict | None = None,
    **popen_options,
) -> subprocess.Popen:
    """Starts `python -m <module>` in the background (output discarded unless asked for)."""
    return subprocess.Popen(
        command(module, *args),
        cwd=ROOT,
        env=env or ENV,
        stdout=stdout,
        stderr=stderr,
        text=True,
        **popen_options,
    )


def results(run_dir: str) -> dict:
    """The results.json of a finished run."""
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def wait_for(path: str, process: subprocess.Popen, timeout: float = 300) -> None:
    """Waits until `path` exists, failing if `process` ends first or the time runs out."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, f"the process ended before {path} appeared"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)
