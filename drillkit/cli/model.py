"""``drillkit model``: verify the model store, roll CURRENT back."""

from __future__ import annotations

import os
from pathlib import Path

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
