"""User-facing errors.

A :class:`HumantuneError` is a mistake in the user's input (a missing file, a bad config key, a malformed
keypoint list). The CLI prints its message as one line and exits with status 2; no stack trace.
Messages name the file, key or value and say what was expected.
"""


class HumantuneError(Exception):
    """An error caused by user input; its message is shown to the user as-is."""


class ConfigError(HumantuneError):
    """A config file or ``--set`` override is invalid."""


class DataError(HumantuneError):
    """A data file (image, annotation, manifest) is missing or malformed."""
