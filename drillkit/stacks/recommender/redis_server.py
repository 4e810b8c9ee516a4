"""Run ``redis-server`` under a parent that keeps the stack's mark
(:mod:`drillkit.stacks.recommender.keeper`): Redis rewrites its process title over the memory
that ``/proc/PID/environ`` shows, which erases the ``DRILLKIT_STACK_ID`` mark by which the
local backend proves that a process is the stack's own before it signals it.

Run as ``python -m drillkit.stacks.recommender.redis_server ARGS...`` (redis-server's own).
"""

from __future__ import annotations

import shutil
import sys

from drillkit.stacks.recommender.keeper import run_child

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis_server: error: redis-server is not installed", file=sys.stderr)
        return 3
    return run_child([binary, *args])


if __name__ == "__main__":
    raise SystemExit(main())
