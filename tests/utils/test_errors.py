"""The error convention: a user mistake is one line on stderr and exit status 2, anything else a traceback.

The commands themselves are exercised in tests/test_bad_inputs.py; these tests pin the two mechanisms down: the
decorator of our console scripts and the excepthook that nerfstudio's commands end in (its exit status comes from
the interpreter's shutdown, so it runs in a real process).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from featurenerf_ns.utils.errors import report_user_errors, user_error_line
from featurenerf_ns.utils.io import DataError, UserError


@report_user_errors
def _command(error: BaseException | None) -> str:
    if error is not None:
        raise error
    return "done"


def test_decorated_entrypoint_reports_a_user_error_as_one_line(capsys):
    assert _command(None) == "done"
    with pytest.raises(SystemExit) as info:
        _command(DataError("data/camera/x.json", "transform_matrix of frame 2 is not finite\n(NaN or infinity)"))
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: data/camera/x.json: transform_matrix of frame 2 is not finite (NaN or infinity)\n"
    assert captured.out == ""


@pytest.mark.parametrize("bug", [ValueError("bad value"), KeyError("key"), RuntimeError("boom")])
def test_decorated_entrypoint_lets_anything_else_through(bug, capsys):
    with pytest.raises(type(bug)) as info:
        _command(bug)
    assert info.value is bug
    assert capsys.readouterr().err == ""


def test_user_error_line_joins_lines():
    assert user_error_line(UserError("  first\n\n   second  \n")) == "error: first second"


HOOKED = (
    "import atexit, sys\n"
    "from featurenerf_ns.utils.errors import install_data_error_hook\n"
    "from featurenerf_ns.utils.io import DataError\n"
    "install_data_error_hook()\n"
    "install_data_error_hook()\n"  # idempotent: one line, not two
    "atexit.register(lambda: print('shut down normally', flush=True))\n"
    "raise {error}\n"
)


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_excepthook_ends_the_process_with_one_line_and_status_2():
    proc = _python(HOOKED.format(error="DataError('runs/x', 'cannot write (No space left on device)')"))
    assert proc.returncode == 2
    assert proc.stderr == "error: runs/x: cannot write (No space left on device)\n"
    assert proc.stdout == "shut down normally\n"  # the interpreter's own shutdown ran (atexit handlers)


def test_excepthook_keeps_the_traceback_of_a_bug():
    proc = _python(HOOKED.format(error="ValueError('a bug')"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):")
    assert proc.stderr.endswith("ValueError: a bug\n")


def test_excepthook_does_not_end_an_interactive_session():
    proc = _python(HOOKED.format(error="DataError('runs/x', 'bad')"), "-i")
    assert proc.returncode == 0  # the session went on to read its (empty) input
    assert "error: runs/x: bad\n" in proc.stderr and "Traceback" not in proc.stderr
