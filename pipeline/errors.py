"""Errors the user can act on.

Every error a user can fix (a bad path, a bad setting, an unreadable file) is a
`UserError`: the CLI prints its message as one line and exits with status 2.
Anything else is a bug and exits with status 1.
"""


class UserError(Exception):
    """A problem with the user's input, settings or environment; the message says what to do."""


class ConfigError(UserError):
    """A configuration key is unknown or its value is out of range."""


class InputError(UserError):
    """An input file or stream cannot be used."""
