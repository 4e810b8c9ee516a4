"""Mutation testing of the measurement core, and the check that no new mutant survives.

Run from the repository root (needs ``pip install -e '.[dev,mutation]'``)::

    python tests/mutation/check.py            # mutmut run, then compare (tens of minutes)
    python tests/mutation/check.py --no-run   # compare the results of the last run only

mutmut (configured under ``[tool.mutmut]`` in pyproject.toml) changes the scoring rules, the
series and records, the scenario's validation and the journal one small edit at a time and
runs the unit tests that reach each edit. A mutant the tests do not notice *survives*. Every
survivor must be listed in ``survivors.toml`` beside this file with the reason it is
acceptable (an equivalent mutant: no input tells it from the original). The check prints the
figures (mutants generated, killed, survived...) and exits 1 when a survivor is not listed,
naming it and showing its diff; listed mutants that are now killed are reported so that the
list shrinks. Mutant names are mutmut's own (pinned in the ``mutation`` extra) and number the
mutants of one function: after a function changes, rerun and re-explain its survivors.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SURVIVORS = HERE / "survivors.toml"
#: Outcomes that need a reason in survivors.toml: the tests did not notice the change.
UNNOTICED = ("survived", "no tests")
_LINE = re.compile(r"^\s+(?P<name>[\w.]+__mutmut_\d+): (?P<status>.+?)\s*$")


def mutmut(*args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=ROOT,
        capture_output=capture,
        text=True,
        check=False,
    )


def results() -> dict[str, str]:
    """Every mutant of the last run and its outcome."""
    proc = mutmut("results", "--all", "true")
    if proc.returncode != 0:
        raise SystemExit(f"mutmut results failed:\n{proc.stdout}{proc.stderr}")
    outcomes = {}
    for line in proc.stdout.splitlines():
        match = _LINE.match(line)
        if match:
            outcomes[match["name"]] = match["status"]
    if not outcomes:
        raise SystemExit("no mutation results: run without --no-run first")
    return outcomes


def listed() -> dict[str, str]:
    """The accepted survivors: mutant name -> reason."""
    data = tomllib.loads(SURVIVORS.read_text())
    accepted: dict[str, str] = {}
    for entry in data.get("survivor", []):
        name, reason = entry.get("mutant"), entry.get("reason", "").strip()
        if not isinstance(name, str) or not reason or reason.startswith("REVIEW"):
            raise SystemExit(f"{SURVIVORS}: every [[survivor]] needs a mutant and a reason")
        accepted[name] = reason
    return accepted


def diff(name: str) -> str:
    shown = mutmut("show", name).stdout
    return "\n".join(
        line for line in shown.splitlines() if line.startswith(("-", "+")) and line[1:2] != line[0]
    )


#: Mechanical survivors whose reason follows from the diff alone: (reason, test on the old
#: and new text). ``--draft`` uses them to propose survivors.toml entries; anything else is
#: proposed as REVIEW, which the check never accepts: a person writes that reason.
_KNOWN: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "equivalent: side='left' is numpy.searchsorted's default",
        lambda old, new: 'side="left"' in old and "side=" not in new,
    ),
    (
        "equivalent: numpy.fromiter's count only preallocates; the values are the same",
        lambda old, new: "count=" in old and "count=" not in new,
    ),
    (
        "equivalent: the values already have this dtype, which numpy infers without it",
        lambda old, new: "dtype=np." in old and ("dtype=None" in new or "dtype=" not in new),
    ),
    ("equivalent: 449 is 0o700", lambda old, new: "0o700" in old and "449" in new),
    ("equivalent: 384 is 0o600", lambda old, new: "0o600" in old and "384" in new),
]
WORDING = "wording only: the text of a message a person reads; nothing computes on it"


_LITERAL = re.compile(r"[rbfRBF]*(\"[^\"]*\"|'[^']*')")
#: Code around a literal that computes with it: a comparison, a lookup, a key.
_COMPUTES = re.compile(r"==|!=|\bin\b|\bis\b|startswith|endswith|\[\"\"\]|\.get\(|\.pop\(|:\s*\"\"")


def _wording_only(old: str, new: str) -> bool:
    """The pair differs only inside a string literal, by mutmut's XX wrapping or a change of
    case, and no code around it compares, looks up or keys with that literal: the wording of
    a message."""
    changed = old != new and (
        old.lower() == new.lower() or (new.replace("XX", "") == old and ("XX" in new))
    )
    code = _LITERAL.sub('""', old)
    return changed and '""' in code and not _COMPUTES.search(code)


def draft(name: str) -> str:
    """A survivors.toml entry for ``name``, its reason from :data:`_KNOWN` or REVIEW."""
    lines = diff(name).splitlines()
    old = "\n".join(line[1:] for line in lines if line.startswith("-"))
    new = "\n".join(line[1:] for line in lines if line.startswith("+"))
    reason = WORDING if _wording_only(old, new) else "REVIEW"
    for why, matches in _KNOWN:
        if matches(old, new):
            reason = why
    shown = "\n".join(lines).replace("'''", '"""')
    return f"[[survivor]]\nmutant = \"{name}\"\nreason = \"{reason}\"\ndiff = '''\n{shown}\n'''\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-run", action="store_true", help="compare the last run's results")
    parser.add_argument(
        "--draft", action="store_true", help="print survivors.toml entries for new survivors"
    )
    parser.add_argument(
        "--max-children", type=int, default=None, help="parallel mutants (default: CPUs)"
    )
    args = parser.parse_args(argv)

    if not args.no_run:
        started = time.monotonic()
        run = ["run"] + ([f"--max-children={args.max_children}"] if args.max_children else [])
        proc = mutmut(*run, capture=False)
        print(f"mutmut run: {time.monotonic() - started:.0f} s, exit code {proc.returncode}")
        if proc.returncode != 0:
            return proc.returncode
    outcomes = results()
    counts = Counter(outcomes.values())
    accepted = listed()
    print(
        f"mutants generated: {len(outcomes)}; "
        + ", ".join(f"{status}: {n}" for status, n in counts.most_common())
    )
    unnoticed = sorted(name for name, status in outcomes.items() if status in UNNOTICED)
    new = [name for name in unnoticed if name not in accepted]
    stale = sorted(name for name in accepted if outcomes.get(name) not in UNNOTICED)
    explained = len(unnoticed) - len(new)
    print(f"survivors: {len(unnoticed)}; explained in {SURVIVORS.name}: {explained}")
    for name in stale:
        print(f"listed but no longer surviving (remove it): {name} ({outcomes.get(name, 'gone')})")
    if args.draft:
        for name in new:
            print(draft(name))
        return 1 if new else 0
    for name in new:
        print(f"\nNEW SURVIVOR {name} ({outcomes[name]}):\n{diff(name)}")
    if new:
        print(
            f"\n{len(new)} mutant(s) survived that {SURVIVORS.name} does not explain: add a test "
            "that kills each, or list it with the reason no test can."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
