"""`stack down` finds the processes of its stack that the state does not know."""

from __future__ import annotations

import subprocess
import sys
import time

from drillkit.backends.local import strays


def test_strays_are_python_modules_carrying_the_stack_id() -> None:
    stack = "20990101-000000-abcdef"
    module = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--directory", f"/tmp/{stack}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    viewer = subprocess.Popen(["sleep", "30", stack])  # a `tail -f` of a log, say
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        assert strays(stack, set()) == [module.pid]
        assert strays(stack, {module.pid}) == []
    finally:
        for proc in (module, viewer, other):
            proc.kill()
            proc.wait()
