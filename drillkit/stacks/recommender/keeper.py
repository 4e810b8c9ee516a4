"""Run a program that is not drillkit's (HAProxy, Redis) as the child of a small Python parent.

The parent is the service as the backend sees it: it carries the stack's mark in its
environment (which Redis, rewriting its process title, would erase from its own), it leads
the process group that drillkit's kill, pause and resume signal (so they reach the child), it
forwards SIGTERM and SIGINT for a graceful stop, the kernel kills the child should the parent
die (``PR_SET_PDEATHSIG``), and it exits with the child's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
from collections.abc import Mapping, Sequence

__all__ = ["run_child"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_child(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, pass_fds: Sequence[int] = ()
) -> int:
    """Run ``argv`` (an executable's absolute path first) until it exits; its exit status."""
    child = subprocess.Popen(
        list(argv), env=dict(env) if env is not None else None, pass_fds=tuple(pass_fds),
        preexec_fn=_die_with_parent,
    )  # fmt: skip

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return child.wait()
