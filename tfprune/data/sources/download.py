"""Before a download: whether any host answers. After a failed one: removing what it wrote.

Offline, TFDS would retry for minutes before failing; one connection attempt of a few seconds
to the download hosts (and TFDS' own bucket) tells the same at once.
"""

from __future__ import annotations

import shutil
import socket
import urllib.parse
import urllib.request
from pathlib import Path

_PROBE_SECONDS = 5.0
_TFDS_BUCKET = "https://storage.googleapis.com"


def unreachable(urls: list[str]) -> str | None:
    """Why none of the hosts a TFDS download of `urls` would use answers, or None if one does.

    None too when there is no URL: there is then nothing to try.
    """
    if not urls:
        return None
    reasons = []
    for address in dict.fromkeys(_address(url) for url in (*urls, _TFDS_BUCKET)):
        try:
            socket.create_connection(address, timeout=_PROBE_SECONDS).close()
            return None
        except OSError as error:
            reasons.append(f"{address[0]}:{address[1]}: {error.strerror or error}")
    return "no connection to " + ", ".join(reasons)


def _address(url: str) -> tuple[str, int]:
    """The (host, port) a download of `url` connects to: its proxy's, if one is set for it."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default = {"https": 443, "ftp": 21}.get(parts.scheme, 80)
    return parts.hostname or "", parts.port or default


class Created:
    """What a TFDS preparation adds under its data dir, to remove it again if it fails.

    Paths are compared up to three levels below the data dir (`downloads/<dataset>/<file>`,
    `<dataset>/incomplete.<id>`), and folders above it that did not exist go too.
    """

    _DEPTH = 3

    def __init__(self, root: Path):
        top = root
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        self.top = None if top.exists() else top
        self.root = root
        self.before = self._paths()

    def _paths(self) -> set[Path]:
        paths, level = set(), [self.root]
        for _ in range(self._DEPTH):
            level = [p for d in level if d.is_dir() and not d.is_symlink() for p in d.iterdir()]
            paths.update(level)
        return paths

    def remove(self) -> None:
        """Removes every path that was not there when this object was made."""
        if self.top is not None:
            shutil.rmtree(self.top, ignore_errors=True)
            return
        new = self._paths() - self.before
        for path in sorted(new):
            if path.parent in new:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
