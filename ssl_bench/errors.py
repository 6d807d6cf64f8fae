"""Errors caused by the user's input, shown as a short message instead of a traceback.

Anything raised as a `UserError` is something the user can fix (a path, an override, a
value); the CLI prints its message and exits non-zero. Bugs stay ordinary exceptions.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping


class UserError(Exception):
    """A problem with the input or configuration that the user can fix."""


class DataError(UserError):
    """A data set that cannot be found, read or used as configured."""


class NonFiniteLossError(UserError):
    """Training diverged: the loss became NaN or infinite."""


class ConfigError(UserError, ValueError):
    """A configured value that cannot work (a task's tile size, a backbone's stage spec).

    Also a `ValueError`, so code that builds these objects directly and catches
    `ValueError` keeps working; the CLI shows it as a message, like any `UserError`.
    """


def _check_arguments(config, kwargs: dict) -> None:
    """The keys of a `_target_` config must be arguments of the target: a misspelt or
    unknown key is the user's to fix, and is named before anything is built."""
    from hydra.utils import get_object

    if not isinstance(config, Mapping) or "_target_" not in config:
        return
    for key, value in config.items():  # nested targets are built by hydra too
        if not str(key).startswith("_"):
            _check_arguments(value, {})
    try:
        target = get_object(str(config["_target_"]))
    except Exception:  # noqa: BLE001 - hydra reports it, with its traceback (it may be a bug)
        return
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    names = {key for key in config if not str(key).startswith("_")} | set(kwargs)
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(names - set(accepted))
    if unknown:
        raise UserError(f"{config['_target_']} has no setting {', '.join(unknown)}; its settings "
                        f"are: {', '.join(accepted)}")


def instantiate(config, **kwargs):
    """`hydra.utils.instantiate`, but a `UserError` raised by the target comes out as itself.

    Hydra wraps every exception of a `_target_` in an `InstantiationException` whose text
    starts with the call; unwrapping keeps the user's message short and the exit code ours.
    Only what is known to be the user's becomes a message: unknown keys (checked against
    the target's signature first) and the `UserError`s (`ConfigError`s) that targets raise
    for values that cannot work. Anything else is a bug and keeps its traceback.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    _check_arguments(config, kwargs)
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise
