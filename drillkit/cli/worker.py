"""``drillkit worker``: join a drill's load from another host."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import typer

from drillkit.cli.state import terminal
from drillkit.errors import InputError


def worker(
    master: str = typer.Option(
        ...,
        "--master",
        help="The drill's address, HOST:PORT (its load.bind and load.port).",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="A file holding the drill's token (load.token_file)."
    ),
    token_stdin: bool = typer.Option(
        False, "--token-stdin", help="Read the drill's token from the first line of stdin."
    ),
    name: str = typer.Option(
        "", "--name", help="How the drill's report names this worker (default: the host name)."
    ),
    wait: float = typer.Option(
        30.0, "--wait", min=0.0, help="Seconds to keep trying to reach the drill."
    ),
) -> None:
    """Run a drill's load from this host: a Locust worker that joins the drill's master and
    streams its records to the drill; it ends when the drill does."""
    from drillkit.load.worker import MAX_TOKEN, check_token, run_worker

    if (token_file is None) == (not token_stdin):
        raise InputError("drillkit worker: give --token-file FILE or --token-stdin (one of them)")
    if token_file is not None:
        from drillkit.fsutil import read_private

        try:
            raw = read_private(token_file, limit=4096).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--token-file: cannot read {token_file}: {exc}") from None
    else:
        raw = sys.stdin.readline(MAX_TOKEN + 1)
    token = check_token(raw, "drillkit worker: the token")
    t = terminal()
    t.info(f"joining the drill at {master}")
    rc = run_worker(master, token, name or socket.gethostname(), wait=wait)
    if rc:
        raise typer.Exit(rc)
    t.result("the drill's load is done")
