"""Errors that are the user's to fix: the CLI prints their one-line message and exits with code 2."""


class UserError(Exception):
    """A mistake in input (config, file, data, flags). The message names the thing to fix."""


class ConfigError(UserError, ValueError):
    """An unknown config key, a value of the wrong type, or a value out of range."""


class DataError(UserError):
    """Missing or unusable data: the message says how to get it."""


class TrainingError(Exception):
    """Training cannot go on (e.g. a non-finite loss with train.on_nonfinite=halt): one line, exit code 1."""
