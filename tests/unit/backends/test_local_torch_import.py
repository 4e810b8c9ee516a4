"""A signal during the local backend's torch import is held until the import is done: raised
inside torch's import, a KeyboardInterrupt can abort the process (SIGABRT: no heal, no
report), as a SIGTERM 0.45 s into a drill once did in CI."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    from drillkit.backends.local import LocalBackend

    assert "torch" not in sys.modules
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        LocalBackend().gpu_available()
        print("not interrupted")
    except KeyboardInterrupt:
        torch = sys.modules.get("torch")
        print("interrupted after the import:", torch is not None and hasattr(torch, "cuda"))
    """
)


@pytest.mark.parametrize("attempt", range(2))
def test_a_sigterm_during_the_torch_import_is_raised_after_it(attempt: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "interrupted after the import: True", done.stdout
