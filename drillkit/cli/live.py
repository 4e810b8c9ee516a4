"""The live view of a running drill (rich), or plain line logs for CI."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from drillkit.cli.console import Terminal
from drillkit.engine import Tick
from drillkit.scenario.model import Scenario
from drillkit.text import printable

_STATE_STYLE = {"up": "green", "down": "red", "ejected": "red", "unknown": "yellow"}


class LiveView:
    """Receives engine ticks; draws a live panel on a terminal, or logs lines otherwise."""

    def __init__(self, terminal: Terminal, scenario: Scenario, *, plain: bool = False) -> None:
        self.terminal = terminal
        self.scenario = scenario
        self.plain = plain or terminal.quiet or not terminal.err.is_terminal
        self._live: Live | None = None
        self._last_log = 0.0
        self._fault_marks: dict[str, str] = {}
        self._last_progress = ""

    def __enter__(self) -> LiveView:
        if not self.plain:
            self._live = Live(
                Text(f"drill {self.scenario.name}: starting"),
                console=self.terminal.err,
                refresh_per_second=4,
                transient=True,
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def progress(self, message: str, fraction: float) -> None:
        if message == self._last_progress:
            return
        self._last_progress = message
        if self.plain:
            self.terminal.info(f"[{self.scenario.name}] {message}")
        elif self._live is not None:
            self._live.update(Text(printable(f"drill {self.scenario.name}: {message}")))

    def tick(self, tick: Tick) -> None:
        self._log_fault_changes(tick)
        if self.plain:
            now = time.monotonic()
            if tick.message or now - self._last_log >= (1.0 if self.terminal.verbose else 5.0):
                self._last_log = now
                self.terminal.info(self._line(tick))
            return
        if self._live is not None:
            self._live.update(self._panel(tick))

    def _line(self, tick: Tick) -> str:
        if tick.message:
            return f"[{self.scenario.name}] {tick.message}"
        t = "-" if tick.t is None else f"{tick.t:6.1f}s"
        states = " ".join(f"{k}={v}" for k, v in sorted(tick.replica_states.items()))
        return (
            f"[{self.scenario.name}] t={t}/{tick.duration:g}s {tick.phase} "
            f"rate {tick.rps:.0f}/s p99 {tick.p99_ms:.0f} ms failed/s {tick.failed} "
            f"requests {tick.requests} | {states}"
        )

    def _log_fault_changes(self, tick: Tick) -> None:
        for record in tick.faults:
            mark = (
                "error"
                if record.error
                else "healed"
                if record.healed_at
                else "injected"
                if record.injected_at
                else "pending"
            )
            if self._fault_marks.get(record.id) != mark:
                self._fault_marks[record.id] = mark
                if mark != "pending":
                    detail = record.error or (record.evidence if mark == "injected" else "")
                    text = f"[{self.scenario.name}] fault {record.id} {mark}"
                    text += f": {detail}" if detail else ""
                    if self.plain or self._live is None:
                        self.terminal.info(text)
                    else:
                        self._live.console.print(printable(text), markup=False)

    def _panel(self, tick: Tick) -> Group:
        t = tick.t if tick.t is not None else 0.0
        header = Text.assemble(
            (f"drill {self.scenario.name} ", "bold"),
            (tick.phase, "cyan"),
            f"  t = {t:6.1f} s of {tick.duration:g} s",
        )
        bar = ProgressBar(total=tick.duration, completed=max(0.0, min(t, tick.duration)), width=60)
        figures = Text(
            f"rate {tick.rps:5.0f} req/s   p99 {tick.p99_ms:6.1f} ms   "
            f"failed {tick.failed}/s   requests {tick.requests}"
        )
        replicas = Text("replicas: ")
        for name, state in sorted(tick.replica_states.items()):
            # Names and states are what the stack's gateway says: shown, never obeyed.
            replicas.append(printable(f"{name} {state}  "), style=_STATE_STYLE.get(state, ""))
        faults = Table(show_header=True, box=None, pad_edge=False)
        for column in ("fault", "kind", "target", "at", "state"):
            faults.add_column(column)
        for record in tick.faults:
            faults.add_row(
                record.id,
                record.kind,
                ",".join(record.targets),
                f"{record.at:g}s",
                self._fault_marks.get(record.id, "pending"),
            )
        # A progress bar ends no line of its own: a one-cell grid puts it on its own row.
        bar_row = Table.grid()
        bar_row.add_row(bar)
        parts: list[object] = [header, bar_row, figures, replicas]
        if tick.faults:
            parts.append(faults)
        if tick.message:
            parts.append(Text(printable(tick.message), style="yellow"))
        return Group(*parts)  # type: ignore[arg-type]
