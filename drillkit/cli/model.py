"""``drillkit model``: verify the model store, roll CURRENT back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from drillkit.backends.base import load_state
from drillkit.cli.state import terminal
from drillkit.errors import DrillkitError, InputError
from drillkit.stacks.recommender.store import ModelStore, verify_key

app = typer.Typer(
    help="Verify model artifacts and roll back the served version.", no_args_is_help=True
)

STORE = typer.Option(
    None,
    "--store",
    help="Model store root. Default: the running stack's "
    "stores (origin and every replica's copy), else every built store.",
)


STACK = typer.Option(None, "--stack", help="The stack whose stores to use, when several are up.")


def resolve_stores(store: Path | None, stack: str | None = None) -> list[tuple[str, ModelStore]]:
    """The stores a model command acts on, labelled: a given store; else the running stack's
    origin store and every replica's copy; else every built (cached) store."""
    if store is not None:
        if not ModelStore(store).exists():
            raise InputError(f"{store}: not a model store (no versions/ folder)")
        return [(str(store), ModelStore(store))]
    state = load_state(stack)
    if state is not None and state.plan.preset == "recommender":
        from drillkit.stacks.recommender.preset import origin_store, replica_store

        stores = [("origin", ModelStore(origin_store(state)))]
        stores += [
            (name, ModelStore(replica_store(state, name)))
            for name in state.names_with_role("replica")
        ]
        return stores
    from drillkit.stacks.recommender.build import built_stores

    stores = built_stores()
    if not stores:
        raise InputError(
            "no model store: no stack is up and nothing is built; run "
            "`drillkit stack build` or pass --store"
        )
    return [(f"built {label}", store) for label, store in stores]


@app.command()
def verify(
    store: Path | None = STORE,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    stack: str | None = STACK,
) -> None:
    """Check every version's manifest, signature and file digests. Exit 1 when any fails."""
    t = terminal()
    key = verify_key()
    results = []
    any_failed = False
    for label, model_store in resolve_stores(store, stack):
        checks = model_store.check_all(key=key)
        if not checks:
            raise InputError(f"{model_store.root}: the store has no versions")
        failed = any(not c.ok for c in checks)
        any_failed |= failed
        results.append((label, model_store, checks, failed))
    if json_out:
        t.json(
            {
                "ok": not any_failed,
                "signature_checked": key is not None,
                "stores": [
                    {
                        "label": label,
                        "store": str(ms.root),
                        "current": ms.current(),
                        "ok": not failed,
                        "versions": [
                            {
                                "version": c.version,
                                "ok": c.ok,
                                "current": c.current,
                                "error": c.error,
                                "digest": c.manifest.digest if c.manifest else None,
                            }
                            for c in checks
                        ],
                    }
                    for label, ms, checks, failed in results
                ],
            }
        )
    else:
        for label, ms, checks, _ in results:
            if len(results) > 1:
                t.result(f"{label}: {ms.root}")
            for c in checks:
                mark = " (CURRENT)" if c.current else ""
                if c.ok:
                    assert c.manifest is not None
                    t.result(f"ok      {c.version}{mark}  digest {c.manifest.digest[:16]}", "green")
                else:
                    t.result(f"FAILED  {c.version}{mark}  {c.error}", "red")
        if key is None:
            t.info("signatures not checked: no verification key (DRILLKIT_VERIFY_KEY) is set")
    if any_failed:
        raise typer.Exit(1)


@app.command()
def rollback(
    to: str | None = typer.Option(
        None,
        "--to",
        help="Version to serve (default: the newest verified version older than CURRENT).",
    ),
    store: Path | None = STORE,
    stack: str | None = STACK,
) -> None:
    """Point CURRENT at an earlier verified version; running replicas reload it."""
    t = terminal()
    key = verify_key()
    stores = resolve_stores(store, stack)
    if store is None and load_state(stack) is None and len(stores) > 1:
        raise InputError("several built stores and no stack up: pass --store to choose one")
    (label, primary), *others = stores
    previous, new = primary.rollback(to, key=key)
    t.result(f"{label}: CURRENT {previous} -> {new} ({primary.root})")
    failed = False
    for label, other in others:
        try:
            old, _ = other.rollback(new, key=key)
        except DrillkitError as exc:
            t.result(f"{label}: not rolled back: {exc}", "red")
            failed = True
        else:
            t.result(f"{label}: CURRENT {old} -> {new}")
    if failed:
        raise typer.Exit(1)


@app.command()
def keygen(
    out: Path = typer.Option(
        ..., "--out", help="Where to write the private key (created, readable by you only)."
    ),
) -> None:
    """Make an Ed25519 key pair for signing model versions: the private key into a file
    (for builds: DRILLKIT_SIGNING_KEY_FILE), the public key printed (for everything that
    verifies: DRILLKIT_VERIFY_KEY)."""
    from drillkit.stacks.recommender.store import SIGNING_KEY_ENV, VERIFY_KEY_ENV, new_signing_key

    if out.exists():
        raise InputError(f"{out}: exists; a signing key is never overwritten")
    seed, public = new_signing_key()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(seed.hex() + "\n")
    t = terminal()
    t.info(f"private key written to {out}; keep it where versions are built, nowhere else")
    t.result(f"{SIGNING_KEY_ENV}={out}")
    t.result(f"{VERIFY_KEY_ENV}={public.hex()}")


def _running_stack(stack: str | None) -> Any:
    from drillkit.errors import NoStackError

    state = load_state(stack)
    if state is None:
        raise NoStackError("no stack is up: `drillkit stack up` first")
    if state.plan.preset != "recommender":
        raise InputError(f"stack {state.id} is not a recommender stack")
    return state


@app.command()
def publish(
    defect: str = typer.Option(
        "none",
        "--defect",
        help="none (a healthy new version), quality, errors or latency: a defect that passes "
        "every offline check.",
    ),
    severity: str = typer.Option(
        "30%",
        "--severity",
        help="quality/errors: the share of users hurt (30%); latency: milliseconds added.",
    ),
    stack: str | None = STACK,
) -> None:
    """Add a new version to the running stack's store, built from CURRENT (not served yet:
    roll it out with `drillkit model rollout`)."""
    from drillkit.stacks.recommender.defects import DEFECTS
    from drillkit.stacks.recommender.rollout import publish_version

    if defect not in DEFECTS:
        raise InputError(f"--defect: expected one of {', '.join(DEFECTS)}, got {defect!r}")
    state = _running_stack(stack)
    amount = _severity(defect, severity)
    manifest = publish_version(state, defect, amount)
    terminal().result(
        f"published {manifest.version} (digest {manifest.digest[:16]}, defect {defect}); "
        f"CURRENT unchanged"
    )


def _severity(defect: str, text: str) -> float:
    from drillkit.scenario.units import parse_share

    if defect == "latency":
        try:
            value = float(text.removesuffix("ms"))
        except ValueError:
            raise InputError(f"--severity: expected milliseconds, got {text!r}") from None
        if not 0 < value <= 10_000:
            raise InputError(f"--severity: expected 0 < ms <= 10000, got {text!r}")
        return value
    try:
        return parse_share(text)
    except ValueError as exc:
        raise InputError(f"--severity: {exc}") from None


@app.command()
def rollout(
    version: str | None = typer.Argument(None, help="The version to roll out, e.g. v3."),
    steps: str = typer.Option("10,50,100", "--steps", help="Percent of users at each step."),
    interval: str = typer.Option("10s", "--interval", help="How long each step is held."),
    analysis: bool = typer.Option(
        True, "--analysis/--no-analysis", help="Judge each step (off: nothing rolls back)."
    ),
    status: bool = typer.Option(False, "--status", help="Show the stack's rollout and exit."),
    abort: bool = typer.Option(False, "--abort", help="Roll the running rollout back now."),
    json_out: bool = typer.Option(False, "--json", help="Print the rollout record as JSON."),
    stack: str | None = STACK,
) -> None:
    """Gray-release VERSION: a share of users to replicas serving it, each step judged
    (errors, p99, degraded, quality against stable), rolled back automatically when one
    fails. Exit 0 promoted, 1 rolled back or aborted."""
    from drillkit.scenario.units import parse_positive_duration
    from drillkit.stacks.recommender.rollout import (
        RolloutController,
        abort_rollout,
        parse_steps,
        read_rollout,
    )

    t = terminal()
    if status and abort:
        raise InputError("--status and --abort: choose one")
    state = _running_stack(stack)
    if status or abort:
        if version is not None:
            raise InputError(f"--{'status' if status else 'abort'} takes no VERSION")
        data = abort_rollout(state) if abort else read_rollout(state)
        if data is None:
            t.result("no rollout on this stack")
            return
        _show(data, json_out)
        return
    if version is None:
        raise InputError("VERSION: required (or --status / --abort)")
    shares = parse_steps(steps)
    try:
        seconds = parse_positive_duration(interval)
    except ValueError as exc:
        raise InputError(f"--interval: {exc}") from None
    from drillkit.stacks.recommender.rollout import AnalysisSettings

    controller = RolloutController(
        state,
        version,
        steps=shares,
        interval=seconds,
        analysis=AnalysisSettings(enabled=analysis),
        on_event=t.info,
    )
    controller.prepare()
    data = controller.run()
    _show(data, json_out)
    if data["status"] != "promoted":
        raise typer.Exit(1)


def _show(data: dict[str, Any], json_out: bool) -> None:
    t = terminal()
    if json_out:
        t.json(data)
        return
    t.result(
        f"rollout of {data['version']} (stable {data['stable']}): {data['status']}"
        + (f": {data['verdict']}" if data.get("verdict") else ""),
        "green" if data["status"] == "promoted" else "red" if data["status"] != "running" else None,
    )
    start = float(data["started_at"])

    def pair(step: dict[str, Any], key: str, fmt: str) -> str:
        values = [step.get(side, {}).get(key) for side in ("canary", "stable")]
        return "/".join("-" if v is None else format(v, fmt) for v in values)

    for step in data.get("step_results", []):
        quality = "-" if step.get("quality") is None else f"{step['quality']:.0%}"
        t.result(
            f"  {step['started_at'] - start:5.1f}s  {step['weight']:4.0%}  {step['verdict']:<10} "
            f"errors {pair(step, 'error_ratio', '.1%')}  p99 {pair(step, 'p99_ms', '.0f')} ms  "
            f"degraded {pair(step, 'degraded_share', '.1%')}  quality {quality}"
        )
    if data["status"] == "running":
        t.result(f"  now: {data['weight']:.0%} of users on {', '.join(data['canary']) or '-'}")
