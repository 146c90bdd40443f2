"""How both commands (``gaittools``, ``train-copy``) end when something is wrong: one line.

Exit codes (the README's contract):

- 0: everything done;
- 1: a run in which some items failed (the summary names them; commands ``sys.exit(1)``);
- 2: a usage error: bad arguments, missing or unusable inputs, a bad config. Nothing was done.

:class:`GuardedGroup` is the click group of both commands. A command reports a user's mistake
by raising ``click.ClickException`` (or click's usage errors) or one of the library's error
types (``StoreError``, ``SplitError``, ``BundleError``, ... all ``ValueError``/``RuntimeError``
subclasses with a message that names the file and the problem); the group prints
``Error: <message>`` and exits 2. Anything else is a bug: one line that says so, exit 1.
``GAITTOOLS_TRACEBACK=1`` lets every error through with its traceback, for debugging.
"""

from __future__ import annotations

import os
from typing import Any

import click

USAGE_ERROR = 2
ITEMS_FAILED = 1


class InputError(click.ClickException):
    """A user's mistake (arguments, inputs, config): ``Error: message``, exit 2."""

    exit_code = USAGE_ERROR


class RunStopped(click.ClickException):
    """A run that started and had to stop (a device failed): not the user's input, exit 1."""

    exit_code = ITEMS_FAILED


def user_error_types() -> tuple[type[BaseException], ...]:
    """The library's error types: each carries a message written for the user."""
    from gaittools.store.zarr_store import StoreError

    return (ValueError, KeyError, StoreError, OSError)


class GuardedGroup(click.Group):
    """A click group whose commands end in one line, with the exit codes above.

    ``extra_errors``: more exception types that mean "the user's input is wrong" (train-copy's
    ``RunError`` and ``ConfigError``).
    """

    extra_errors: tuple[type[BaseException], ...] = ()

    def invoke(self, ctx: click.Context) -> Any:
        if os.environ.get("GAITTOOLS_TRACEBACK"):
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except click.ClickException as exc:
            if exc.exit_code == 1 and not isinstance(exc, RunStopped):  # a refusal of input: usage error
                exc.exit_code = USAGE_ERROR
            raise
        except (*user_error_types(), *self.extra_errors) as exc:
            raise InputError(_message(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a bug: still one line, and how to see more
            error = click.ClickException(f"unexpected {type(exc).__name__}: {exc} (a bug; rerun with "
                                         "GAITTOOLS_TRACEBACK=1 to see where, and please report it)")
            error.exit_code = ITEMS_FAILED
            raise error from None


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # str(KeyError) adds quotes
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
