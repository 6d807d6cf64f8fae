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


def instantiate(config, **kwargs):
    """`hydra.utils.instantiate`, but a `UserError` raised by the target comes out as itself.

    Hydra wraps every exception of a `_target_` in an `InstantiationException` whose text
    starts with the call; unwrapping keeps the user's message short and the exit code ours.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise UserError(f"bad configuration: {cause}") from exc
        raise
