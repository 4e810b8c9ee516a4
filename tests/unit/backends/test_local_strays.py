"""`stack down` finds the processes of its stack that the state does not know: by the stack's
mark in their environment, never by what their command line says."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from drillkit.backends.local import STACK_ENV, strays


def test_strays_carry_the_stacks_mark_in_their_environment() -> None:
    stack = "20990101-000000-abcdef"
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    marked = subprocess.Popen(sleep, env={**os.environ, STACK_ENV: stack})
    other_stack = subprocess.Popen(sleep, env={**os.environ, STACK_ENV: stack[:-1] + "0"})
    # Command lines that name the stack, as drillkit's own used to be recognised by:
    # `python -m` with the stack's folder in its arguments, and a `tail -f` of a log.
    quoting = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--directory", f"/tmp/{stack}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    viewer = subprocess.Popen(["sleep", "30", stack])
    try:
        time.sleep(0.3)
        assert strays(stack, set()) == [marked.pid]
        assert strays(stack, {marked.pid}) == []
    finally:
        for proc in (marked, other_stack, quoting, viewer):
            proc.kill()
            proc.wait()
