"""Atomic file writes: write a temporary file beside the target, then rename it over."""

from __future__ import annotations

import contextlib
import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp"):
    """Yields a temporary path beside `path`; on success it is renamed to `path`.

    The file gets the usual permissions (0666 less the umask). On error the temporary file
    is removed and `path` keeps its previous content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def make_temp_dir(parent: str) -> str:
    """Creates a temporary directory in `parent` with the usual permissions (0777 less umask)."""
    path = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    os.chmod(path, 0o777 & ~_umask())
    return path
