"""``drillkit report show|trend|compare`` as CI jobs call them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

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


def _gfm(text: str) -> Any:
    """The HTML GitHub would make of ``text`` (CommonMark with GFM's pipe tables)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(text)


def _history(out: Path, name: str = "kill-node") -> None:
    for i, score in enumerate([90.0, 70.0, 95.0]):
        report = sample_report(status="passed" if score >= 80 else "failed", name=name).model_copy(
            update={"score": score, "started_at": sample_report().started_at + timedelta(days=i)}
        )
        path = write_report(report, out / f"{name}-{i}.json")
        write_report(report, out / "last.json")
        append_history(out, entry_for(report, path, out))


def test_trend_in_markdown_renders_as_a_table_on_github(tmp_path: Path) -> None:
    # Piped into $GITHUB_STEP_SUMMARY, the box-drawing table read as one paragraph of
    # ┃ and ━; markdown is a real table there.
    out = tmp_path / "reports"
    _history(out)
    proc = drillkit("report", "trend", str(out), "--format", "markdown", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not set("┃━│╇") & set(proc.stdout)
    html = _gfm(proc.stdout)
    assert "<h3>kill-node: 3 runs" in html
    assert html.count("<table>") == 1 and "<th>started</th>" in html
    assert html.count("<tr>") == 4  # the header and three runs
    assert ">-20.0</td>" in html and ">+25.0</td>" in html


def test_compare_and_show_in_markdown(tmp_path: Path) -> None:
    a = write_report(_rto(sample_report(), 2.0), tmp_path / "a.json")
    worse = write_report(_rto(sample_report(), 2.6), tmp_path / "worse.json")
    bad = drillkit("report", "compare", str(a), str(worse), "-f", "markdown", home=tmp_path)
    assert bad.returncode == 1, bad.stderr  # the gate is the same in every format
    html = _gfm(bad.stdout)
    assert "<table>" in html and "<strong>regression</strong>" in html
    assert "<strong>1 regression</strong>" in html

    shown = drillkit("report", "show", str(a), "--format", "markdown", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    html = _gfm(shown.stdout)
    assert html.count("<table>") == 3  # phases, faults, checks
    assert "<strong>FAIL</strong>" in html and "88.23" in html

    wrong = drillkit("report", "show", str(a), "--format", "yaml", home=tmp_path)
    assert wrong.returncode == 2 and "expected one of text, markdown, json" in wrong.stderr


def test_markdown_cells_cannot_break_the_table_or_inject_markup(tmp_path: Path) -> None:
    report = sample_report()
    report.faults[0].evidence = "a | b <script>x</script> **bold** [link](http://x)\nnext"
    path = write_report(report, tmp_path / "r.json")
    proc = drillkit("report", "show", str(path), "--format", "markdown", home=tmp_path)
    html = _gfm(proc.stdout)
    assert "<script>" not in html and "<strong>bold</strong>" not in html
    assert "<a href" not in html
    assert "a | b &lt;script&gt;x&lt;/script&gt; **bold** [link](http://x) next" in html
