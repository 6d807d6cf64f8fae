"""Errors caused by the user's input, shown as a short message instead of a traceback.

Anything raised as a `UserError` is something the user can fix (a path, an override, a
value); the CLI prints its message and exits non-zero. Bugs stay ordinary exceptions.
"""


class UserError(Exception):
    """A problem with the input or configuration that the user can fix."""


class DataError(UserError):
    """A data set that cannot be found, read or used as configured."""


class NonFiniteLossError(UserError):
    """Training diverged: the loss became NaN or infinite."""
