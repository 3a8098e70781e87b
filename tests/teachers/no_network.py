"""Run ``featurenerf-teacher`` command lines in one process with the network blocked, recording every attempt to
reach it (DNS lookups and socket connections). A helper of ``test_cli_offline.py``, run in a subprocess so that the
torch and Hugging Face cache locations come from its environment::

    python -m tests.teachers.no_network '[["dino", "--data", ...], ...]'

Prints one JSON list: per command line its exit status, stderr and the network attempts made while it ran.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys


def main() -> None:
    attempts: list[str] = []

    def refuse(kind: str):
        def blocked(*args, **kwargs):
            attempts.append(kind)
            raise OSError(f"network blocked by the test ({kind})")

        return blocked

    socket.getaddrinfo = refuse("getaddrinfo")
    socket.socket.connect = refuse("connect")
    socket.socket.connect_ex = refuse("connect_ex")

    from featurenerf_ns.teachers.cli import entrypoint

    results = []
    for args in json.loads(sys.argv[1]):
        attempts.clear()
        err = io.StringIO()
        status = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                entrypoint(args)
            except SystemExit as e:
                status = e.code
        results.append({"args": args, "status": status, "stderr": err.getvalue(), "network": list(attempts)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
