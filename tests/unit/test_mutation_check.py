"""The mutation check itself (tests/mutation/check.py), on made-up results: it fails on a
survivor its list does not explain, and only then."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

CHECK = Path(__file__).resolve().parents[1] / "mutation" / "check.py"


@pytest.fixture
def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_check", CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mutation_check", module)
    spec.loader.exec_module(module)
    listed = tmp_path / "survivors.toml"
    listed.write_text(
        '[[survivor]]\nmutant = "m.x_f__mutmut_1"\nreason = "equivalent: 449 is 0o700"\n'
    )
    monkeypatch.setattr(module, "SURVIVORS", listed)
    monkeypatch.setattr(module, "diff", lambda name: "-    a = 1\n+    a = 2")
    return module


def run(check: ModuleType, monkeypatch: pytest.MonkeyPatch, outcomes: dict[str, str]) -> int:
    monkeypatch.setattr(check, "results", lambda: outcomes)
    code: int = check.main(["--no-run"])
    return code


def test_a_listed_survivor_passes(
    check: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = {"m.x_f__mutmut_1": "survived", "m.x_f__mutmut_2": "killed"}
    assert run(check, monkeypatch, outcomes) == 0
    out = capsys.readouterr().out
    assert "mutants generated: 2" in out and "explained in survivors.toml: 1" in out


def test_a_new_survivor_fails_and_is_shown(
    check: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = {"m.x_f__mutmut_1": "survived", "m.x_g__mutmut_3": "no tests"}
    assert run(check, monkeypatch, outcomes) == 1
    out = capsys.readouterr().out
    assert "NEW SURVIVOR m.x_g__mutmut_3 (no tests)" in out and "+    a = 2" in out


def test_a_listed_mutant_now_killed_is_reported(
    check: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(check, monkeypatch, {"m.x_f__mutmut_1": "killed"}) == 0
    assert "no longer surviving (remove it): m.x_f__mutmut_1" in capsys.readouterr().out


def test_an_entry_without_a_reason_is_refused(
    check: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    check.SURVIVORS.write_text('[[survivor]]\nmutant = "m.x_f__mutmut_1"\nreason = "REVIEW"\n')
    with pytest.raises(SystemExit, match="needs a mutant and a reason"):
        run(check, monkeypatch, {"m.x_f__mutmut_1": "survived"})


@pytest.mark.parametrize(
    ("old", "new", "wording"),
    [
        ('raise E("bad value")', 'raise E("XXbad valueXX")', True),
        ('raise E("bad value")', 'raise E("BAD VALUE")', True),
        ('detail=f"{n} of {m} responses",', 'detail=f"XX{n} of {m} responsesXX",', True),
        ('if mode == "poison":', 'if mode == "XXpoisonXX":', False),  # a comparison
        ('if "sanity" in what:', 'if "SANITY" in what:', False),
        ('item.pop("healed_at", None)', 'item.pop("HEALED_AT", None)', False),  # a key
        ('{"op": "heal", "id": i}', '{"XXopXX": "heal", "id": i}', False),
        ("x = a >= b", "x = a > b", False),
    ],
)
def test_wording_only_is_a_change_inside_a_literal(
    check: ModuleType, old: str, new: str, wording: bool
) -> None:
    assert check._wording_only(old, new) is wording
