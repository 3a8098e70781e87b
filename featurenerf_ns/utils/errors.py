"""One-line reports of bad user data in nerfstudio's commands.

nerfstudio does not catch exceptions raised while it sets up a dataparser, so a user mistake (a
missing camera file, a wrong image size) would end ``ns-train`` in a long traceback through
nerfstudio and torch. This hook prints :class:`~featurenerf_ns.utils.io.UserError` (e.g. a ``DataError``) as
the single line it is; every other exception keeps the normal traceback.
"""

from __future__ import annotations

import sys

from featurenerf_ns.utils.io import UserError


def install_data_error_hook() -> None:
    """Report uncaught :class:`UserError` as one line on stderr (idempotent)."""
    previous = sys.excepthook
    if getattr(previous, "_featurenerf", False):
        return

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, UserError):
            print(f"error: {exc}", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    hook._featurenerf = True  # type: ignore[attr-defined]
    sys.excepthook = hook
