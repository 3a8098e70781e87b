"""One convention for user mistakes in every command: one line on stderr, exit status 2.

A user mistake (a missing, truncated or malformed file, an option that cannot work) is raised as a
:class:`~featurenerf_ns.utils.io.UserError` (:class:`~featurenerf_ns.utils.io.DataError` when a file is to blame)
and reported as ``error: <file or option>: <problem>``, with exit status 2 (the status tyro and argparse use for
a bad option). Anything else is a bug and keeps its full traceback (status 1). Plain ``ValueError`` is never taken
for a user mistake: code that detects one raises a ``UserError`` at the source.

The project's console scripts wrap their entrypoint in :func:`report_user_errors`. nerfstudio's own commands
(``ns-train``, ``ns-eval``, ``ns-viewer``, ...) are not ours to wrap, so :func:`install_data_error_hook` (called
when the plugin's dataparser entry points load, which every ``ns-*`` command does before parsing its options)
installs a ``sys.excepthook`` that prints the line and then raises ``SystemExit(2)``. CPython handles a
``SystemExit`` raised by the excepthook like one raised by the program: a normal shutdown (threads joined,
``atexit`` handlers run, streams flushed) with that status (``tests/utils/test_errors.py`` checks it on this
interpreter), whereas ``os._exit`` would skip the shutdown and wrapping nerfstudio's ``entrypoint`` would mean
patching nerfstudio. In an interactive interpreter the hook prints the line and does not exit.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from featurenerf_ns.utils.io import UserError

USER_ERROR_STATUS = 2
"""Exit status of a command stopped by a user mistake."""

F = TypeVar("F", bound=Callable)


def user_error_line(exc: BaseException) -> str:
    """The one line reporting ``exc`` (a message that spans lines is joined into one)."""
    return "error: " + " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())


def report_user_errors(entrypoint: F) -> F:
    """Decorate a console script's entrypoint: a :class:`UserError` becomes one line on stderr and exit status 2."""

    @functools.wraps(entrypoint)
    def wrapper(*args, **kwargs):
        try:
            return entrypoint(*args, **kwargs)
        except UserError as e:
            print(user_error_line(e), file=sys.stderr, flush=True)
            raise SystemExit(USER_ERROR_STATUS) from None

    return wrapper  # type: ignore[return-value]


def install_data_error_hook() -> None:
    """Make an uncaught :class:`UserError` end nerfstudio's commands like ours (idempotent)."""
    previous = sys.excepthook
    if getattr(previous, "_featurenerf", False):
        return

    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, UserError):
            previous(exc_type, exc, tb)
            return
        print(user_error_line(exc), file=sys.stderr, flush=True)
        if not (hasattr(sys, "ps1") or sys.flags.interactive):
            raise SystemExit(USER_ERROR_STATUS)

    hook._featurenerf = True  # type: ignore[attr-defined]
    sys.excepthook = hook
