"""``drillkit model``: verify the model store, roll CURRENT back."""

from __future__ import annotations

from pathlib import Path

import typer

from drillkit.backends.base import load_state
from drillkit.cli.state import terminal
from drillkit.errors import InputError
from drillkit.stacks.recommender.data import CatalogSpec
from drillkit.stacks.recommender.store import ModelStore, signing_key

app = typer.Typer(
    help="Verify model artifacts and roll back the served version.", no_args_is_help=True
)

STORE = typer.Option(
    None,
    "--store",
    help="Model store root. Default: the running stack's "
    "store, else the built store of the default catalog.",
)


def resolve_store(store: Path | None) -> ModelStore:
    if store is not None:
        if not ModelStore(store).exists():
            raise InputError(f"{store}: not a model store (no versions/ folder)")
        return ModelStore(store)
    state = load_state()
    if state is not None:
        return ModelStore(Path(state.store))
    from drillkit.stacks.recommender.build import cached_store

    cached = cached_store(CatalogSpec().resolved())
    if cached is None:
        raise InputError(
            "no model store: no stack is up and nothing is built; run "
            "`drillkit stack build` or pass --store"
        )
    return cached


@app.command()
def verify(
    store: Path | None = STORE,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check every version's manifest, signature and file digests. Exit 1 when any fails."""
    t = terminal()
    model_store = resolve_store(store)
    key = signing_key()
    checks = model_store.check_all(key=key)
    if not checks:
        raise InputError(f"{model_store.root}: the store has no versions")
    failed = [c for c in checks if not c.ok]
    if json_out:
        t.json(
            {
                "store": str(model_store.root),
                "current": model_store.current(),
                "signature_checked": key is not None,
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
        )
    else:
        for c in checks:
            mark = " (CURRENT)" if c.current else ""
            if c.ok:
                assert c.manifest is not None
                t.result(f"ok      {c.version}{mark}  digest {c.manifest.digest[:16]}", "green")
            else:
                t.result(f"FAILED  {c.version}{mark}  {c.error}", "red")
        if key is None:
            t.info("signatures not checked: DRILLKIT_MODEL_KEY is not set")
    if failed:
        raise typer.Exit(1)


@app.command()
def rollback(
    to: str | None = typer.Option(
        None,
        "--to",
        help="Version to serve (default: the newest verified version older than CURRENT).",
    ),
    store: Path | None = STORE,
) -> None:
    """Point CURRENT at an earlier verified version; running replicas reload it."""
    model_store = resolve_store(store)
    previous, new = model_store.rollback(to, key=signing_key())
    terminal().result(f"CURRENT: {previous} -> {new} ({model_store.root})")
