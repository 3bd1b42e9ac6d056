"""Helpers shared by the command-line entry points: gin parsing and one-line errors.

The gin configurables of the commands are registered here: `experiment`
(`tfprune.experiment.Experiment`), `training` (`tfprune.training.TrainConfig`) and
`ablations` (the switches of `gin_configs/ablations/*.gin`).
"""

from __future__ import annotations

import ctypes
import difflib
import errno
import inspect
import os
import re
import signal
import sys
import tokenize
from collections.abc import Callable, Sequence

import gin
from absl import flags, logging

from tfprune.errors import ConfigError
from tfprune.experiment import Experiment
from tfprune.training import TrainConfig

# The gin configs shipped with tfprune: in an installed package, `tfprune/gin_configs/` (the
# wheel carries the repository's top-level `gin_configs/` there); in a source checkout, the
# top-level `gin_configs/` beside the package.
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_CONFIG_DIRS = (
    os.path.join(_PACKAGE, "gin_configs"),
    os.path.join(_PACKAGE, os.pardir, "gin_configs"),
)
_CONFIGS_NAME = "gin_configs"


def packaged_configs() -> str:
    """The directory of the gin configs shipped with tfprune.

    Returns:
        `<site-packages>/tfprune/gin_configs` in an installed package, the top-level
        `gin_configs` in a source checkout.
    """
    for directory in _CONFIG_DIRS:
        if os.path.isdir(directory):
            return os.path.normpath(directory)
    return os.path.normpath(_CONFIG_DIRS[0])


def packaged_gin_file(path: str) -> str | None:
    """The path of the shipped gin config that a relative `path` names (it need not exist).

    Args:
        path: Relative to the shipped configs, with or without a leading `gin_configs/`.

    Returns:
        The path under `packaged_configs()`, or None for an absolute `path` or one that leaves
        the configs' directory.

    Example:

    >>> packaged_gin_file("gin_configs/experiments/cifar10_resnet20.gin")
    '/.../tfprune/gin_configs/experiments/cifar10_resnet20.gin'
    """
    if os.path.isabs(path):
        return None
    parts = os.path.normpath(path).split(os.sep)
    if parts[:1] == [_CONFIGS_NAME]:
        parts = parts[1:]
    if not parts or os.pardir in parts or parts == [os.curdir]:
        return None
    return os.path.join(packaged_configs(), *parts)


def resolve_gin_file(path: str) -> str:
    """The gin file that `--gin_file=<path>` means.

    Args:
        path: A gin file's path, as given.

    Returns:
        `path` itself if it exists; else the shipped config it names (`packaged_gin_file`) if
        that exists; else `path`.

    Example:

    >>> resolve_gin_file("snip.gin")  # in a directory without a snip.gin
    '/.../tfprune/gin_configs/snip.gin'
    """
    if os.path.exists(path):
        return path
    packaged = packaged_gin_file(path)
    return packaged if packaged is not None and os.path.isfile(packaged) else path


class _GinFileParser(flags.ArgumentParser):
    """Parses `--gin_file` into the file it means (`resolve_gin_file`), so that every use of
    the flag's value, such as the sweep's command lines for its cells, names that file."""

    def parse(self, argument: str) -> str:
        return resolve_gin_file(argument)

    def flag_type(self) -> str:
        return "string"


# Flags of both `tfprune.train` and `tfprune.sweep`, defined once so that both modules can be
# imported into one process.
GIN_FILES = flags.DEFINE_multi(
    _GinFileParser(),
    flags.ArgumentSerializer(),
    "gin_file",
    [],
    "Gin config file(s), applied in order. A name that is not a file here is looked up among "
    "the configs shipped with tfprune (snip.gin, experiments/cifar10_resnet20.gin).",
)
GIN_BINDINGS = flags.DEFINE_multi_string(
    "gin_bindings", [], "Gin bindings, applied after the files."
)
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    None,
    "tfprune.train: the run directory (default: runs/<dataset>-<model>/<method>-...); "
    "tfprune.sweep: the sweep directory.",
)


def fail(program: str, message: str) -> None:
    """Prints `program: error: message` on one line to stderr and exits with status 2."""
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"{program}: error: {one_line}\n")
    sys.exit(2)


def flags_parser(program: str) -> Callable[[list[str]], list[str]]:
    """An absl `flags_parser` for `app.run` that reports bad flags with `fail`.

    absl's own parser prints the error with a usage hint and exits with status 1.
    """

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            # absl words a bad boolean as a tuple: "('Non-boolean argument to boolean flag', 'x')".
            message = re.sub(
                r"\('Non-boolean argument to boolean flag', '(.*)'\)$",
                r"a boolean flag takes true or false, not \1",
                str(error),
            )
            fail(program, message)

    return parse


def ablation_switches(shuffle: bool = False, reinit: bool = False, invert: bool = False):
    """The ablations switched on by `ablations.<name> = True` (gin_configs/ablations/*.gin).

    Switches add up, so several ablation files combine; `experiment.ablations` adds to them.
    """
    return [
        name for name, on in (("shuffle", shuffle), ("reinit", reinit), ("invert", invert)) if on
    ]


ablations_configurable = gin.external_configurable(ablation_switches, "ablations")
experiment_configurable = gin.external_configurable(Experiment, "experiment")
training_configurable = gin.external_configurable(TrainConfig, "training")
# What the commands' gin files may configure, for error messages.
CONFIGURABLES: dict[str, Callable] = {
    "experiment": Experiment,
    "training": TrainConfig,
    "ablations": ablation_switches,
}


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
    """Parses gin files then bindings; includes resolve next to the including files.

    A file that does not exist at its path is looked up among the shipped configs
    (`resolve_gin_file`).

    Raises:
        ConfigError: for a missing file or an invalid file or binding, in one line that names
            the file or binding, the problem and, for an unknown name, the known ones.
    """
    files = check_gin_files(files)
    for path in files:
        directory = os.path.dirname(os.path.abspath(path))
        for prefix in (directory, os.path.dirname(directory)):
            gin.add_config_file_search_path(prefix)
    # gin logs every include path it tries and misses at error level; failures still raise.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    try:
        for path in files:
            _parse_one(gin.parse_config_file, path, f"gin file {path!r}")
        for binding in bindings:
            _parse_one(gin.parse_config, binding, f"gin binding {binding!r}")
        gin.finalize()
    finally:
        logging.set_verbosity(verbosity)


def check_gin_files(files: Sequence[str]) -> list[str]:
    """Checks that every path names a readable gin file that binds something.

    Returns:
        The files, each resolved by `resolve_gin_file`.

    Raises:
        ConfigError: naming the file: it does not exist (nor among the shipped configs), is a
            directory, cannot be read, or holds nothing but blank lines and comments (it would
            change no setting).
    """
    resolved = []
    for given in files:
        path = resolve_gin_file(given)
        if os.path.isdir(path):
            raise ConfigError(f"gin file {path!r} is a directory: give a gin file (.gin)")
        if not os.path.isfile(path):
            raise ConfigError(_missing_gin_file(path))
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [line.strip() for line in f]
        except OSError as error:
            raise ConfigError(f"cannot read gin file {path!r}: {error.strerror}") from None
        if all(not line or line.startswith("#") for line in lines):
            raise ConfigError(
                f"gin file {path!r} binds nothing (it is empty or holds only comments): give "
                "the file with your settings, such as gin_configs/snip.gin"
            )
        resolved.append(path)
    return resolved


def _missing_gin_file(path: str) -> str:
    # Both places it was looked for; in a source checkout run from its root, they are one.
    looked = dict.fromkeys(p for p in (os.path.abspath(path), packaged_gin_file(path)) if p)
    return f"gin file {path!r} does not exist (looked for {' and '.join(looked)})"


def method_bound() -> bool:
    """Whether the parsed gin files and bindings set `experiment.method`."""
    try:
        gin.query_parameter("experiment.method")
    except ValueError:
        return False
    return True


def _parse_one(parse: Callable[[str], object], source: str, where: str) -> None:
    try:
        parse(source)
    except (ValueError, SyntaxError, OSError, TypeError, KeyError, tokenize.TokenError) as error:
        raise ConfigError(f"invalid {where}: {_gin_reason(error)}") from None


def _gin_reason(error: BaseException) -> str:
    if isinstance(error, tokenize.TokenError):
        return "the text ends inside a bracket or a string: close it"
    if isinstance(error, SyntaxError):
        line = f" (line {error.lineno}: {(error.text or '').strip()})" if error.lineno else ""
        token = re.search(r"Failed to parse token '(.*?)'", error.msg or "")
        if token:
            value = token.group(1)
            text = error.text or ""
            # Quoting these would make them strings: say what gin cannot do instead.
            if value.lstrip("+-").lower() in ("nan", "inf", "infinity"):
                problem, need = "gin has no nan or inf", "give a number"
            elif re.search(rf"(?<![\w.]){re.escape(value)}\s*\(", text):
                problem, need = f"gin calls no function such as {value}(...)", "give the value"
            else:
                return f"cannot read the value {value}{line}; write a string in quotes: '{value}'"
            parameter = re.match(r"\s*([\w.]+)\s*=", text)
            if parameter and parameter.group(1).split(".")[-1] == "density":
                need = "a density must be a number in (0, 1]"
            return f"cannot read the value {value}{line}: {problem}; {need}"
        return f"{(error.msg or 'syntax error').rstrip('.')}{line}"
    reason = " ".join(str(error).split())
    if "No configurable matching" in reason:
        return f"{reason}; configurables: {', '.join(CONFIGURABLES)}"
    parameter = re.search(r"Configurable '(\w+)' doesn't have a parameter named '(\w+)'", reason)
    if parameter and parameter.group(1) in CONFIGURABLES:
        known = list(inspect.signature(CONFIGURABLES[parameter.group(1)]).parameters)
        close = difflib.get_close_matches(parameter.group(2), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{reason}{hint}; its parameters: {', '.join(known)}"
    return reason


# What to do about an error of the file system, by errno.
_OS_HINTS = {
    errno.ENOSPC: "free some space and run the same command again: the run resumes from its "
    "last checkpoint",
    errno.EDQUOT: "free some of your quota and run the same command again: the run resumes from "
    "its last checkpoint",
    errno.EROFS: "make it writable or choose another output directory",
    errno.EACCES: "make it writable or choose another output directory",
    errno.EPERM: "make it writable or choose another output directory",
}


def os_error_message(error: OSError, directory: str) -> str:
    """A one-line account of a failed write under `directory` and what to do about it, as
    `cannot write to <file or directory>: No space left on device; free some space ...`."""
    reason = error.strerror or " ".join(str(error).split())
    hint = _OS_HINTS.get(error.errno)
    message = f"cannot write to {error.filename or directory}: {reason}"
    return f"{message}; {hint}" if hint else message


# Set by the sweep in the environment of each cell it starts: the sweep's process id.
PARENT_PID_ENV = "TFPRUNE_PARENT_PID"
# Sent to a cell when its sweep dies. Not SIGTERM: Linux sends it again each time the cell
# passes to another of the dying sweep's threads, and a repeated SIGTERM means "stop now".
PARENT_GONE_SIGNAL = signal.SIGUSR1
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a process a sweep started (`PARENT_PID_ENV` set), has Linux send
    `PARENT_GONE_SIGNAL` to this process when the sweep dies, even by SIGKILL, so that a cell
    never trains on as an orphan (`tfprune.train` then writes a checkpoint and stops, and the
    next sweep resumes it). Elsewhere, nothing."""
    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, PARENT_GONE_SIGNAL, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        logging.warning("prctl failed (errno %d): this cell may outlive its sweep", error)
        return
    if os.getppid() != int(parent):  # the sweep died before the request was made
        os.kill(os.getpid(), PARENT_GONE_SIGNAL)
