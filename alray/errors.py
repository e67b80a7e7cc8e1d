"""The exceptions a user can cause; the CLI turns them into exit code 2 and one line."""

from __future__ import annotations


class AlrayError(Exception):
    """Base of the errors a user can cause (bad config, bad input); never an internal bug."""


class ConfigError(AlrayError):
    """The configuration is invalid: the message names the dotted key or the file."""


class InputError(AlrayError):
    """An input table, file or checkpoint is unusable: the message names it and what was expected."""
