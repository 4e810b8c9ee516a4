"""``drillkit report show|trend|compare`` as CI jobs call them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from drillkit.reports.history import append_history, entry_for
from drillkit.reports.jsonfile import write_report
from drillkit.reports.model import DrillReport
from tests.unit.cli.test_cli import drillkit
from tests.unit.reports.test_model import sample_report


def _rto(report: DrillReport, rto: float) -> DrillReport:
    return report.model_copy(
        update={"faults": [report.faults[0].model_copy(update={"rto_s": rto})]}
    )


def test_compare_gates_on_a_worse_rto(tmp_path: Path) -> None:
    a = write_report(_rto(sample_report(), 2.0), tmp_path / "a.json")
    same = write_report(_rto(sample_report(), 2.0), tmp_path / "same.json")
    worse = write_report(_rto(sample_report(), 2.6), tmp_path / "worse.json")

    ok = drillkit("report", "compare", str(a), str(same), home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "no regressions" in ok.stdout

    bad = drillkit("report", "compare", str(a), str(worse), home=tmp_path)
    assert bad.returncode == 1, bad.stderr
    assert "fault kill-1 rto" in bad.stdout and "+30%" in bad.stdout
    assert "1 regression" in bad.stdout

    as_json = drillkit("report", "compare", str(a), str(worse), "--json", home=tmp_path)
    assert json.loads(as_json.stdout)["regressions"] == 1

    lenient = drillkit("report", "compare", str(a), str(worse), "--tolerance", "50", home=tmp_path)
    assert lenient.returncode == 0, lenient.stdout


def test_compare_refuses_other_scenarios_and_schemas(tmp_path: Path) -> None:
    a = write_report(sample_report(), tmp_path / "a.json")
    b = write_report(sample_report(name="pause-node"), tmp_path / "b.json")
    proc = drillkit("report", "compare", str(a), str(b), home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("drillkit: error: ") and "one scenario" in proc.stderr
    data = json.loads(a.read_text())
    data["schema_version"] = 2
    (tmp_path / "v2.json").write_text(json.dumps(data))
    proc = drillkit("report", "compare", str(a), str(tmp_path / "v2.json"), home=tmp_path)
    assert proc.returncode == 2 and "different schema versions" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_show_last_and_trend(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    for i, score in enumerate([90.0, 70.0, 95.0]):
        report = sample_report(status="passed" if score >= 80 else "failed").model_copy(
            update={"score": score, "started_at": sample_report().started_at + timedelta(days=i)}
        )
        path = write_report(report, out / f"kill-node-{i}.json")
        write_report(report, out / "last.json")
        append_history(out, entry_for(report, path, out))
    shown = drillkit("report", "show", "last", "--out", str(out), home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "kill-1" in shown.stdout

    trend = drillkit("report", "trend", str(out), home=tmp_path)
    assert trend.returncode == 0, trend.stderr
    assert "kill-node: 3 runs" in trend.stdout
    assert "-20.0" in trend.stdout and "+25.0" in trend.stdout

    as_json = json.loads(
        drillkit("report", "trend", str(out), "--json", "--last", "2", home=tmp_path).stdout
    )
    assert [e["score"] for e in as_json["kill-node"]] == [70.0, 95.0]

    unknown = drillkit("report", "trend", str(out), "--scenario", "nope", home=tmp_path)
    assert unknown.returncode == 2 and "it has kill-node" in unknown.stderr


def test_reports_holding_nan_or_infinity_are_refused(tmp_path: Path) -> None:
    good = write_report(sample_report(), tmp_path / "good.json")
    text = good.read_text()
    for name, spoiled in (
        ("nan", text.replace('"score": 88.23529411764706', '"score": NaN', 1)),
        ("inf", text.replace('"score": 88.23529411764706', '"score": Infinity', 1)),
        ("overflow", text.replace('"score": 88.23529411764706', '"score": 1e999', 1)),
    ):
        assert spoiled != text, name
        path = tmp_path / f"{name}.json"
        path.write_text(spoiled)
        for args in (("report", "show", str(path)), ("report", "compare", str(good), str(path))):
            proc = drillkit(*args, home=tmp_path)
            assert proc.returncode == 2, (name, args, proc.stdout, proc.stderr)
            assert proc.stderr.startswith("drillkit: error: ") and "Traceback" not in proc.stderr
