"""One exception type per kind of user mistake.

The CLI turns any :class:`RefusalSaeError` into one clear line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RefusalSaeError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class ConfigError(RefusalSaeError):
    """A setting is invalid (unknown layer, bad option value, inconsistent config)."""


class DataError(RefusalSaeError):
    """A dataset is missing, empty or malformed."""


class ModelLoadError(RefusalSaeError):
    """A model cannot be found or loaded (unknown id offline, missing files)."""


class MismatchError(RefusalSaeError):
    """Two artifacts do not fit together (SAE width, d_model, hook name, layer count)."""


class NumericalError(RefusalSaeError):
    """Activations or scores contain NaN or inf."""


class MissingResultError(ConfigError):
    """A stage needs the result of an earlier stage that is not in the run directory (or is out of date)."""
