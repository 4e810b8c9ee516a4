"""``drillkit fault inject``: one fault on the running stack, journaled like a drill's."""

from __future__ import annotations

import time

import typer
import yaml
from pydantic import ValidationError

from drillkit.cli.stack import STACK, active_stack
from drillkit.cli.state import terminal
from drillkit.errors import InputError, TargetError
from drillkit.faults.base import ANY_SERVICE, fault_kinds, load_fault_kind
from drillkit.faults.context import FaultContext
from drillkit.journal import Journal
from drillkit.stacks.base import get_preset

app = typer.Typer(
    help="Inject a fault into the running stack (undo with `drillkit heal`).", no_args_is_help=True
)


def _parse_params(pairs: list[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param {pair!r}: expected key=value")
        params[key] = yaml.safe_load(raw) if raw else ""
    return params


@app.command()
def inject(
    kind: str = typer.Argument(..., help="Fault kind (see `drillkit list`)."),
    target: str = typer.Option(
        ..., "--target", "-t", help="Service name, model-store, or zone-<z> (a zoned stack)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", "-d", help="Heal after this many seconds (blocks)."
    ),
    param: list[str] = typer.Option([], "--param", "-p", help="Kind parameter key=value."),
    stack: str | None = STACK,
) -> None:
    """Apply a fault now; it stays until `drillkit heal` (or --duration elapses)."""
    kinds = fault_kinds()
    if kind not in kinds:
        raise InputError(f"unknown fault kind {kind!r} (known: {', '.join(sorted(kinds))})")
    info = kinds[kind]
    try:
        params = info.params.model_validate(_parse_params(param))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"--param {where}: {first['msg']}") from None
    state, backend = active_stack(stack)
    services = {s.name: s.role for s in state.services.values()}
    extra = get_preset(state.plan.preset).extra_targets(state)  # e.g. model-store
    wanted = info.target_roles
    allowed = [n for n, role in services.items() if ANY_SERVICE in wanted or role in wanted]
    allowed += [n for n, role in extra.items() if role in wanted]
    if target not in allowed:
        raise TargetError(f"--target {target!r}: {kind} can target {', '.join(sorted(allowed))}")
    t = terminal()
    fault = load_fault_kind(kind)
    journal = Journal.for_stack(state.id)
    ctx = FaultContext(backend, state, journal, fault_id=f"manual-{int(time.time())}")
    record = fault.apply(ctx, target, params)
    t.result(f"injected {kind} on {target}: {fault.check_applied(ctx, target, params, record)}")
    if duration is None:
        t.info("undo with `drillkit heal`")
        return
    try:
        time.sleep(duration)
    finally:
        fault.heal(ctx, record)
        journal.record_heal(str(record["journal_id"]))
        journal.compact()
        t.result(f"healed {kind} on {target}")
