"""Helpers shared by the command-line entry points: gin parsing and one-line errors."""

from __future__ import annotations

import os
import sys

import gin
from absl import logging

from tfprune.errors import ConfigError


def fail(program: str, message: str) -> None:
    """Prints `program: error: message` on one line to stderr and exits with status 2."""
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"{program}: error: {one_line}\n")
    sys.exit(2)


def parse_gin(files: list[str], bindings: list[str]) -> None:
    """Parses gin files then bindings; includes resolve next to the including files.

    Raises:
        ConfigError: for a missing file or an invalid binding, with gin's reason in one line.
    """
    for path in files:
        if not os.path.isfile(path):
            raise ConfigError(f"gin file {path!r} does not exist")
        directory = os.path.dirname(os.path.abspath(path))
        for prefix in (directory, os.path.dirname(directory)):
            gin.add_config_file_search_path(prefix)
    # gin logs every include path it tries and misses at error level; failures still raise.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)
    except (ValueError, SyntaxError, OSError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"invalid gin configuration: {reason}") from error
    finally:
        logging.set_verbosity(verbosity)
