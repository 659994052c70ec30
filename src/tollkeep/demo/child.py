"""Run a command that dies with its parent: ``python -m tollkeep.demo.child CMD ARGS…``.

On Linux the kernel sends SIGTERM to the command when the process that started it ends, however
it ends (Ctrl-C, SIGTERM re-raised by uvicorn after its shutdown, kill -9), so the demo never
leaves its gateways behind. Elsewhere the command just runs (the demo still stops them on a
normal exit)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            sys.exit(1)
    os.execv(sys.argv[1], sys.argv[1:])  # noqa: S606 (the argv the demo built, no shell)


if __name__ == "__main__":
    main()
