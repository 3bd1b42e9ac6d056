"""Exceptions for errors a user can cause.

Every exception here carries a one-line message that says what was wrong and what to do.
The command-line entry points print it and exit with status 2.
"""


class TfpruneError(Exception):
    """Base class of every error a user of tfprune can cause."""


class ConfigError(TfpruneError, ValueError):
    """A setting (method, density, gin binding, step, ...) is invalid."""


class DataError(TfpruneError, ValueError):
    """A dataset or a `data` argument cannot be used."""


class OutputError(TfpruneError):
    """An output directory cannot be used as asked."""


class ModelError(TfpruneError, ValueError):
    """A model cannot be used as asked (no prunable layers, unsupported layer, ...)."""


class TrainingError(TfpruneError):
    """Training cannot go on (for example the loss became NaN); the last good checkpoint stays."""
