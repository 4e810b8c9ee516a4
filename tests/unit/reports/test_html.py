"""The HTML report: a self-contained page with an inline SVG timeline, and a PNG beside it."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from drillkit.observe.records import Records, RequestRecord
from drillkit.reports.format import format_score
from drillkit.reports.html import render_html, score_breakdown, write_html
from drillkit.reports.model import DrillReport, Environment, ScenarioRef, Status
from drillkit.reports.plot import FAULT_SHADE, MAX_POINTS, SERIES_COLOURS, timeline_figure
from drillkit.scoring import (
    SLO,
    DetectionEvent,
    DrillInput,
    Expectation,
    FaultRun,
    QualitySample,
    analyze,
)
from drillkit.scoring.alerts import AlertSpan, MonitoringInput
from tests.unit.reports.test_model import FINISHED, STARTED, sample_report

GOOD = "sha256:good"


def realistic_report(
    *,
    duration: float = 60.0,
    rps: int = 100,
    name: str = "kill-node",
    evidence: str = "SIGKILL pid 4242",
    seed: int = 7,
    monitoring: bool = False,
) -> DrillReport:
    """A kill-node drill as a real run looks: noisy latency, a failover spike, quality probes.

    replica-1 is killed at 20 s; for 0.4 s requests to it time out, then the gateway retries
    elsewhere (slow, some degraded answers) until it ejects the replica at 20.3 s and the
    survivors catch up; the fault is healed (the replica restarted) at 35 s.
    """
    rng = random.Random(seed)
    rows: list[RequestRecord] = []
    for i in range(-5 * rps, int(duration * rps)):
        t = i / rps + rng.uniform(0, 0.5 / rps)
        latency = rng.lognormvariate(2.4, 0.35)  # about 11 ms, p99 about 25 ms
        if 20.0 <= t < 20.4 and rng.random() < 0.35:
            rows.append(RequestRecord(t, 2000.0, 0, "timeout"))
            continue
        if 20.0 <= t < 22.5:
            latency *= rng.uniform(3, 15) * (1 - (t - 20.0) / 2.5) + 1
        degraded = 20.2 <= t < 20.9 and rng.random() < 0.2
        rows.append(
            RequestRecord(
                t,
                latency,
                200,
                degraded=degraded,
                model_digest="" if degraded else GOOD,
                replica=f"replica-{rng.randint(1, 3)}",
            )
        )
    quality = [
        QualitySample(float(t), 0.97 + rng.uniform(-0.02, 0.02) - (0.12 if 20 <= t < 23 else 0))
        for t in range(0, int(duration))
    ]
    fault = FaultRun(
        id="kill-1",
        kind="kill_node",
        target="replica-1",
        injected_at=20.0,
        healed_at=35.0,
        evidence=evidence,
        expect=Expectation(
            detect_within=1.0,
            recover_within=5.0,
            max_failed_requests=0,
            max_wrong_model_responses=0,
        ),
    )
    analysis = analyze(
        DrillInput(
            records=Records.build(rows, t0=0.0, verified_digests=[GOOD]),
            quality=quality,
            faults=[fault],
            events=[DetectionEvent(20.3, "gateway", "replica-1", "state up->ejected")],
            slo=SLO(availability=0.999, p99_ms=250.0, quality=0.9, degraded_max=0.05),
            duration=duration,
            target_rps=float(rps),
            pass_score=80.0,
            generator_saturated=False,
            monitoring=_monitoring() if monitoring else None,
        )
    )
    return DrillReport.from_analysis(
        analysis,
        scenario=ScenarioRef(name=name, path=f"scenarios/{name}.yaml", sha256="ab" * 32),
        backend="local",
        environment=Environment(gpu=False, python="3.11.7", host_cpus=8),
        started_at=STARTED,
        finished_at=FINISHED,
    )


def _monitoring() -> MonitoringInput:
    """What the stack's Prometheus saw of that kill: the replica down from 22 s (firing, then
    notified), resolved after the heal; and a latency alert well after the fault (noise)."""
    down = {"alertname": "RecommenderReplicaDown", "replica": "replica-1", "severity": "warning"}
    slow = {"alertname": "RecommenderSlow", "service": "gateway", "severity": "warning"}
    return MonitoringInput(
        source="stack",
        alerts=[
            AlertSpan("RecommenderReplicaDown", down, 21.0, 23.0, 37.0, 23.8),
            AlertSpan("RecommenderSlow", slow, 50.0, 52.0, 56.0, 52.9),
        ],
        budget={"scrape_interval": 1.0, "evaluation_interval": 2.0, "for": 2.0, "group_wait": 1.0},
        grace=11.0,
    )


def interrupted_report() -> DrillReport:
    """Interrupted during warmup: no series, no phases, the fault never applied."""
    report = sample_report(status="interrupted", error="SIGINT during warmup")
    fault = report.faults[0].model_copy(
        update={
            "injected_at": None,
            "healed_at": None,
            "detected_at": None,
            "recovered_at": None,
            "ttd_s": None,
            "rto_s": None,
        }
    )
    return report.model_copy(update={"series": [], "phases": [], "faults": [fault]})


def read_png(path: Path) -> NDArray[np.uint8]:
    """The PNG at ``path`` as an ``(height, width, 3)`` array of 0..255 RGB values."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    image = imread(path)  # floats 0..1 for a PNG
    return np.asarray(np.round(image[..., :3] * 255), dtype=np.uint8)


def colour_share(image: NDArray[np.uint8], hex_colour: str, tolerance: int = 3) -> float:
    """The share of ``image``'s pixels within ``tolerance`` of ``#rrggbb``."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    close = np.all(np.abs(image.astype(np.int16) - rgb) <= tolerance, axis=-1)
    return float(close.mean())


# -- the page -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def realistic() -> DrillReport:
    return realistic_report()


def test_writes_a_page_and_a_png_beside_it(tmp_path: Path, realistic: DrillReport) -> None:
    target = tmp_path / "out" / "drill.html"
    written = write_html(realistic, target)
    assert written == [target, tmp_path / "out" / "drill.png"]
    page = target.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 1 and "</svg>" in page
    assert not list(target.parent.glob(".*.tmp")), "a temporary file was left behind"
    # The realistic report's verdict is in the header.
    assert realistic.status in page and format_score(realistic.score) in page
    assert "kill-1" in page and "kill_node" in page and "replica-1" in page


@pytest.mark.parametrize(
    ("name", "png_name"),
    [
        pytest.param("drill.html", "drill.png", id="html"),
        pytest.param("drill", "drill.png", id="no-suffix"),
        pytest.param("drill.png", "drill.timeline.png", id="png-suffix"),
    ],
)
def test_png_never_overwrites_the_page(tmp_path: Path, name: str, png_name: str) -> None:
    page, png = write_html(sample_report(), tmp_path / name)
    assert (page.name, png.name) == (name, png_name)
    assert page.read_bytes().startswith(b"<!DOCTYPE html>")


def test_page_is_self_contained(tmp_path: Path, realistic: DrillReport) -> None:
    page = render_html(realistic, svg="<svg></svg>")
    written = write_html(realistic, tmp_path / "r.html")[0].read_text("utf-8")
    for text in (page, written):
        # xmlns declarations name a namespace and load nothing; anything else that points at a
        # URL would need the network.
        refs = re.findall(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", text)
        assert refs == []
        assert "<script" not in text and "<link" not in text and "@import" not in text
        assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", text)


@pytest.mark.parametrize(
    "where",
    ["scenario", "evidence", "error", "detected_by", "check_detail", "fault_id", "target"],
)
def test_strings_from_the_report_are_escaped(tmp_path: Path, where: str) -> None:
    evil = '<script>alert("x")</script>&'
    if where in ("fault_id", "target"):
        # Also drawn in the plot, where "$...$" would otherwise be typeset as TeX.
        evil += " $5 or $6"
    report = sample_report(status="error", error=evil if where == "error" else "stack died")
    if where == "scenario":
        report = report.model_copy(
            update={"scenario": report.scenario.model_copy(update={"name": evil})}
        )
    elif where in ("evidence", "detected_by", "target"):
        report.faults[0] = report.faults[0].model_copy(update={where: evil})
    elif where == "fault_id":
        report.faults[0] = report.faults[0].model_copy(update={"id": evil})
        report.phases[1] = report.phases[1].model_copy(update={"name": f"fault:{evil}"})
    elif where == "check_detail":
        report.checks[0] = report.checks[0].model_copy(update={"detail": evil})
    page = write_html(report, tmp_path / "r.html")[0].read_text("utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    if where in ("fault_id", "target"):
        svg = page[page.index("<svg") : page.index("</svg>")]
        label = re.search(r">([^<]*\$5 or \$6[^<]*)</text>", svg)  # one text element
        assert label is not None and "&lt;script&gt;" in label[1]


def test_fault_ids_and_kinds_appear_in_tables_and_plot(
    tmp_path: Path, realistic: DrillReport
) -> None:
    page = write_html(realistic, tmp_path / "r.html")[0].read_text("utf-8")
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert "kill-1" in svg and "kill_node" in svg  # the window's label
    assert FAULT_SHADE in svg  # the shaded window
    table = page[page.index("<h2>Faults</h2>") :]
    assert "<b>kill-1</b>" in table and "SIGKILL pid 4242" in table
    assert "detected by gateway: state up-&gt;ejected" in table


# -- the PNG ------------------------------------------------------------------------------------


def test_png_is_valid_and_not_blank(tmp_path: Path, realistic: DrillReport) -> None:
    _, png = write_html(realistic, tmp_path / "r.html")
    image = read_png(png)
    height, width, _ = image.shape
    assert width > 600 and height > 400
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20
    assert np.any(image != 255, axis=-1).mean() > 0.05
    # The fault is 15 s of 60: its shading covers a good part of the panels.
    assert colour_share(image, FAULT_SHADE) > 0.05, "the fault window is not shaded"


# -- edge cases ---------------------------------------------------------------------------------


def test_empty_series_writes_a_no_data_page(tmp_path: Path) -> None:
    report = interrupted_report()
    page_path, png = write_html(report, tmp_path / "r.html")
    page = page_path.read_text("utf-8")
    svg = page[page.index("<svg") : page.index("</svg>")]  # a figure, not a broken image
    assert "no data: the drill was interrupted before t=0" in svg
    assert "SIGINT during warmup" in page and "interrupted" in page
    assert np.any(read_png(png) < 200), "the no-data PNG is blank"


def test_missing_values_are_gaps_not_crashes(tmp_path: Path) -> None:
    report = sample_report()
    series = [
        s.model_copy(update={"quality": None if i % 7 else 0.95, "rps": 0.0, "p99_ms": 0.0})
        if 100 <= i < 150
        else s
        for i, s in enumerate(report.series)
    ]
    report = report.model_copy(update={"series": series})
    written = write_html(report, tmp_path / "r.html")
    assert [p.name for p in written] == ["r.html", "r.png"]
    assert "<svg" in written[0].read_text()
    # A window without a quality sample is a gap in the quality line, not a drop to 0.
    figure = timeline_figure(report)
    lines = [
        np.asarray(line.get_ydata(), dtype=float)
        for ax in figure.axes
        if "quality" in ax.get_ylabel()
        for line in ax.get_lines()
    ]
    quality = [y for y in lines if y.size > 10]  # the series, not the target's line
    assert quality and any(np.isnan(y).any() for y in quality)
    assert not any((np.nan_to_num(y, nan=100.0) <= 0).any() for y in quality)


def test_fault_never_healed_is_shaded_to_the_end(tmp_path: Path) -> None:
    report = sample_report()
    report.faults[0] = report.faults[0].model_copy(update={"healed_at": None})
    page = write_html(report, tmp_path / "r.html")[0].read_text("utf-8")
    assert "never healed" in page


def test_long_series_is_downsampled(tmp_path: Path) -> None:
    report = realistic_report(duration=400.0, rps=20)  # 4000 windows
    assert len(report.series) > MAX_POINTS
    figure = timeline_figure(report)
    _, rps, p99 = figure.axes[:3]
    assert rps.get_ylabel() == "requests / s" and p99.get_ylabel() == "p99 latency, ms"
    # Noisy latency: about one corner per plotted window, and no more windows than allowed.
    (line,) = [ln for ln in p99.get_lines() if ln.get_color() == SERIES_COLOURS["p99_ms"]]
    assert MAX_POINTS / 2 < len(line.get_xdata()) <= MAX_POINTS + 1  # type: ignore[arg-type]
    assert write_html(report, tmp_path / "r.html")[0].stat().st_size < 1_000_000


def test_flat_stretches_do_not_bloat_the_page(tmp_path: Path, realistic: DrillReport) -> None:
    # 600 windows, with failures and degraded answers in only a few of them.
    page = write_html(realistic, tmp_path / "r.html")[0]
    assert page.stat().st_size < 250_000


# -- the score ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(sample_report, id="one-failed-expectation"),
        pytest.param(realistic_report, id="realistic"),
        pytest.param(interrupted_report, id="interrupted"),
    ],
)
def test_score_explanation_adds_up(tmp_path: Path, make: object) -> None:
    report: DrillReport = make()  # type: ignore[operator]
    earned, total, score = score_breakdown(report)
    assert score == pytest.approx(report.score)
    page = write_html(report, tmp_path / "r.html")[0].read_text("utf-8")
    section = page[page.index("How the score was computed") :]
    shown = re.search(r"= 100 \u00d7 ([\d.]+) / ([\d.]+) = <b>([\d.]+)</b>", section)
    assert shown is not None, section[:2000]
    assert float(shown[1]) == pytest.approx(earned, abs=1e-4)
    assert float(shown[2]) == pytest.approx(total)
    assert shown[3] == format_score(report.score)
    assert "equals the report" in section


def test_partial_credit_is_shown_with_its_numbers(tmp_path: Path) -> None:
    report = sample_report()
    check = next(c for c in report.checks if c.name == "kill-1.recover_within")
    index = report.checks.index(check)
    report.checks[index] = check.model_copy(update={"actual": 7.0, "passed": False, "credit": 0.6})
    *_, score = score_breakdown(report)
    report = report.model_copy(update={"score": score})
    page = write_html(report, tmp_path / "r.html")[0].read_text("utf-8")
    assert "max(0, 1 \u2212 (7 \u2212 5) / 5) = 0.6" in page
    assert f"<b>{format_score(score)}</b>" in page


def test_critical_failure_is_called_out(tmp_path: Path) -> None:
    report = sample_report()
    report.checks[-2] = report.checks[-2].model_copy(
        update={"passed": False, "credit": 0.0, "actual": 3.0}
    )
    _, _, score = score_breakdown(report)
    report = report.model_copy(update={"score": score, "status": "failed"})
    page = write_html(report, tmp_path / "r.html")[0].read_text("utf-8")
    assert "critical check failed: <code>wrong_model_responses</code>" in page
    assert "whatever the score" in page


def test_a_score_that_does_not_add_up_is_flagged(tmp_path: Path) -> None:
    report = sample_report().model_copy(update={"score": 99.0})
    page = write_html(report, tmp_path / "r.html")[0].read_text("utf-8")
    assert "but the report says 99.00" in page


@pytest.mark.parametrize(
    ("status", "css"),
    [
        pytest.param("passed", "badge ok", id="passed"),
        pytest.param("failed", "badge bad", id="failed"),
        pytest.param("error", "badge bad", id="error"),
        pytest.param("interrupted", "badge warn", id="interrupted"),
    ],
)
def test_status_is_coloured(status: Status, css: str) -> None:
    page = render_html(sample_report(status=status), svg="<svg></svg>")
    assert f'<span class="{css}">{status}</span>' in page


def test_a_fault_without_slo_impact_is_said_so_with_the_service_back_apart(
    tmp_path: Path, realistic: DrillReport
) -> None:
    # The SLOs never broke (rto 0) but the target came back 19.7 s after the kill: the page
    # must not say "time to recover 0.00s", nor draw "recovered" before "detected".
    fault = realistic.faults[0]
    assert fault.injected_at is not None
    quiet = realistic.model_copy(deep=True)
    quiet.faults[0] = fault.model_copy(
        update={
            "recovered_at": fault.injected_at,
            "rto_s": 0.0,
            "slo_impact": False,
            "restored_at": fault.injected_at + 19.7,
        }
    )
    quiet.faults = quiet.faults[:1]
    page = render_html(quiet, svg="<svg></svg>", png_name="")
    kpi = re.search(r'time to recover</div><div class="v">([^<]*)</div>', page)
    assert kpi is not None and kpi.group(1) == "no SLO impact"
    assert "back in service after 19.70s" in page
    assert page.count("no SLO impact") >= 2  # the KPI and the fault's row
    assert 'time to recover</div><div class="v">0.00s' not in page
    figure = timeline_figure(quiet)  # draws "back in service", no "recovered" mark
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert any("no SLO impact" in t for t in texts)
    assert any(t.startswith("back in service +19.70s") for t in texts)
    assert not any(t.startswith("recovered +") for t in texts)


def rollout_report() -> DrillReport:
    """A bad canary rolled back at its first step: 10% of users on v3 from 10.5 s to 18.4 s."""
    from drillkit.scoring.rollout import RolloutRun, RolloutStep

    bad = "sha256:bad"
    rows = []
    for i in range(0, 3000):
        t = i / 100
        user = (i * 7919) % 500
        exposed = 10.5 <= t < 18.4 and user % 10 == 0
        rows.append(RequestRecord(t, 12.0, 200, model_digest=bad if exposed else GOOD, user=user))
    run = RolloutRun(
        version="v3",
        digest=bad,
        stable="v2",
        status="rolled_back",
        verdict="rolled back at 10%: quality 70% of stable on 80 golden users (min 90%)",
        started_at=10.0,
        verdict_at=18.5,
        rolled_back_at=18.6,
        ended_at=18.6,
        analysis=True,
        expected="rolled_back",
        defect="quality",
        steps=[RolloutStep(0.1, 10.4, 18.4, "fail", ["quality 70%"], quality=0.7)],
    )
    fault = FaultRun(
        "canary-1", "bad_rollout", "model-store", 10.0, 25.0,
        expect=Expectation(rollback_within=16.0), rollout=run,
    )  # fmt: skip
    analysis = analyze(
        DrillInput(
            records=Records.build(rows, t0=0.0, verified_digests=[GOOD, bad]),
            quality=[QualitySample(float(t), 1.0) for t in range(30)],
            faults=[fault],
            events=[DetectionEvent(18.5, "rollout", "model-store", "rollout analysis: ...")],
            slo=SLO(availability=0.999, p99_ms=250.0, quality=0.9, degraded_max=0.05),
            duration=30.0,
            target_rps=100.0,
            pass_score=80.0,
            generator_saturated=False,
        )
    )
    return DrillReport.from_analysis(
        analysis,
        scenario=ScenarioRef(name="bad-canary", path="s.yaml", sha256="ab" * 32),
        backend="local",
        environment=Environment(gpu=False, python="3.11.7", host_cpus=2),
        started_at=STARTED,
        finished_at=FINISHED,
    )


def test_a_rollout_has_its_section_and_its_exposure_on_the_timeline(
    tmp_path: Path, realistic: DrillReport
) -> None:
    from drillkit.reports.plot import EXPOSURE

    report = rollout_report()
    rollout = report.faults[0].rollout
    assert rollout is not None and rollout.exposed_users == 50 and rollout.users == 500
    page, png = write_html(report, tmp_path / "r.html")
    text = page.read_text()
    assert "<h2>Rollouts</h2>" in text and "rolled back at 10%" in text
    assert "50 of 500 users (10.0%)" in text
    assert "new version answering (rollout)" in text  # the timeline's legend
    # The exposure bar is drawn; a drill without a rollout has none of its colour (control).
    assert colour_share(read_png(png), EXPOSURE) > 0.0005
    _, plain = write_html(realistic, tmp_path / "plain.html")
    assert colour_share(read_png(plain), EXPOSURE) == 0.0


def data_loss_report() -> DrillReport:
    """An event store wiped at 10 s, restored 0.8 s later from a backup taken at 6 s."""
    from drillkit.scoring.data import (
        BackupMark,
        DataCensus,
        DataLossRun,
        EventSent,
        RestoreMark,
    )

    rows = [RequestRecord(i / 100, 12.0, 200, model_digest=GOOD) for i in range(3000)]
    sent = [EventSent("p", i, i / 10, i / 10 + 0.002, not 100 <= i < 108) for i in range(300)]
    # The backup at 6 s held events 0..59; 60..99 were acknowledged and lost.
    stored = frozenset(("p", i) for i in [*range(60), *range(108, 300)])
    census = DataCensus(
        stored,
        backups=tuple(BackupMark("events", t, int(t * 10)) for t in (0.0, 3.0, 6.0, 9.0)),
        restores=(RestoreMark("events", 10.6, 10.8, "20261205T000006-abc", 6.0, carried=4),),
        stale=((10.0, 11.5),),
    )
    fault = FaultRun(
        "wipe-1", "data_loss", "event-store", 10.0, 11.0,
        expect=Expectation(rpo_within=5.0, rto_within=2.0),
        data=DataLossRun("event-store", "wipe", 10.0, 30.0),
    )  # fmt: skip
    analysis = analyze(
        DrillInput(
            records=Records.build(rows, t0=0.0, verified_digests=[GOOD]),
            quality=[QualitySample(float(t), 1.0) for t in range(30)],
            faults=[fault],
            events=[DetectionEvent(10.6, "backup", "event-store", "restore of events backup")],
            slo=SLO(availability=0.999, p99_ms=250.0, quality=0.9, degraded_max=0.05),
            duration=30.0,
            target_rps=100.0,
            pass_score=80.0,
            generator_saturated=False,
            events_sent=sent,
            census=census,
        )
    )
    return DrillReport.from_analysis(
        analysis,
        scenario=ScenarioRef(name="event-store-wipe", path="s.yaml", sha256="ab" * 32),
        backend="local",
        environment=Environment(gpu=False, python="3.11.7", host_cpus=2),
        started_at=STARTED,
        finished_at=FINISHED,
    )


def test_a_data_loss_has_its_section_and_its_restore_on_the_timeline(
    tmp_path: Path, realistic: DrillReport
) -> None:
    from drillkit.reports.plot import BACKUP

    report = data_loss_report()
    data = report.faults[0].data
    assert data is not None and data.events_lost == 40
    assert data.rpo_s == pytest.approx(10.0 - 6.002)
    assert data.rto_s == pytest.approx(0.802)  # writes back at 10.802, restored at 10.8
    assert report.events is not None and report.events.lost == 40
    page, png = write_html(report, tmp_path / "r.html")
    text = page.read_text()
    assert "<h2>Data</h2>" in text
    assert "40 of 100 acknowledged event(s) lost, RPO 4.00s" in text
    assert "restored 20261205T000006-abc (4.00s old)" in text
    # The last backup and the restore are drawn; a drill without data loss has neither.
    assert colour_share(read_png(png), BACKUP) > 0.00005
    _, plain = write_html(realistic, tmp_path / "plain.html")
    assert colour_share(read_png(plain), BACKUP) == 0.0
    assert "<h2>Data</h2>" not in plain.with_suffix(".html").read_text()


def test_a_lost_load_worker_is_marked_where_the_rate_drops(realistic: DrillReport) -> None:
    from drillkit.reports.model import LoadWorkerReport

    def worker(name: str, address: str, lost_at: float | None = None) -> LoadWorkerReport:
        return LoadWorkerReport(
            name=name, host="gen", address=address, records=10, clock_offset_ms=0.0,
            rtt_ms=0.1, lost_at=lost_at,
        )  # fmt: skip

    load = realistic.load.model_copy(
        update={
            "workers": [
                worker("gen-$a$-1", "10.0.0.2", lost_at=21.5),
                worker("gen-b-1", "10.0.0.3"),
            ],
            "lost_requests": 120,
        }
    )
    report = realistic.model_copy(update={"load": load})
    figure = timeline_figure(report)
    rps = next(ax for ax in figure.axes if ax.get_ylabel() == "requests / s")
    assert [t.get_text() for t in rps.texts if "lost" in t.get_text()] == [
        " load worker gen-$a$-1 lost"  # a dollar, not TeX
    ]
    assert any(np.asarray(line.get_xdata()).tolist() == [21.5, 21.5] for line in rps.get_lines())
    page = render_html(report, svg="", png_name="r.png")
    assert "load worker lost (gen-$a$-1 at 21.5s): 120 requests not offered" in page
