"""Tests for kvis_parallel.progress: JSON lines, the bar, stage timing and the summary."""

from __future__ import annotations

import io
import json
import time

import pytest

from kvis_parallel import progress as progress_module
from kvis_parallel.progress import (
    STAGES,
    BarProgress,
    JsonProgress,
    Progress,
    RankStats,
    RunSummary,
    StageClock,
    default_progress_mode,
    make_progress,
    peak_rss_mb,
)

JSON_KEYS = {"stage", "frames_done", "frames_total", "elapsed_s", "fps", "eta_s"}


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def summary_of(frames: int = 10, wall_s: float = 2.0) -> RunSummary:
    first = RankStats(rank=0, host="a", frames=6, peak_rss_mb=100.0)
    second = RankStats(rank=1, host="b", frames=4, peak_rss_mb=90.0)
    first.stages["render"] = 1.5
    second.stages["render"] = 1.0
    second.stages["send"] = 0.25
    return RunSummary(frames=frames, ranks=2, wall_s=wall_s, size=(160, 120), per_rank=[first, second])


def test_json_lines_have_contract_keys():
    stream = io.StringIO()
    reporter = JsonProgress(stream)
    reporter.stage("render", 3)
    for done in range(1, 4):
        reporter.advance(done)

    records = json_lines(stream)
    assert records, "no lines written"
    for record in records:
        assert set(record) == JSON_KEYS
    assert records[0]["frames_done"] == 0
    assert records[-1]["frames_done"] == 3
    assert records[-1]["frames_total"] == 3
    assert records[-1]["eta_s"] == 0.0


def test_json_updates_are_rate_limited(monkeypatch):
    monkeypatch.setattr(progress_module, "MIN_UPDATE_INTERVAL_S", 3600.0)
    stream = io.StringIO()
    reporter = JsonProgress(stream)
    reporter.stage("render", 100)
    for done in range(1, 101):
        reporter.advance(done)

    done_counts = [record["frames_done"] for record in json_lines(stream)]
    assert done_counts == [0, 100]


def test_json_eta_from_rate():
    stream = io.StringIO()
    reporter = JsonProgress(stream)
    reporter.stage("render", 10)
    reporter.stage_started -= 2.0  # as if the stage began two seconds ago
    reporter._last_update = 0.0
    reporter.advance(5)

    record = json_lines(stream)[-1]
    assert record["fps"] == pytest.approx(2.5, rel=0.05)
    assert record["eta_s"] == pytest.approx(2.0, rel=0.05)


def test_json_finish_carries_summary():
    stream = io.StringIO()
    reporter = JsonProgress(stream)
    reporter.stage("render", 10)
    reporter.finish(summary_of())

    record = json_lines(stream)[-1]
    assert record["stage"] == "done"
    assert record["frames_done"] == 10
    assert record["summary"]["frames"] == 10
    assert record["summary"]["ranks"] == 2


def test_json_fail_writes_error_object():
    stream = io.StringIO()
    JsonProgress(stream).fail("user", "field 'q' not found")

    assert json_lines(stream) == [{"stage": "error", "kind": "user", "message": "field 'q' not found"}]


def test_bar_redraws_and_ends_line():
    stream = io.StringIO()
    reporter = BarProgress(stream)
    reporter.stage("render", 4)
    reporter.advance(4)
    reporter.finish(summary_of())

    text = stream.getvalue()
    assert text.count("\r") >= 2
    assert "4/4 frames" in text
    assert "frames/s" in text
    assert "ETA" in text
    assert text.endswith("\n")


def test_silent_progress_writes_nothing(capsys):
    reporter = Progress()
    reporter.stage("render", 2)
    reporter.advance(2)
    reporter.finish(summary_of())

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


@pytest.mark.parametrize(("stream", "expected"), [
    (FakeTerminal(), "bar"),
    (io.StringIO(), "none"),
])
def test_default_mode_follows_terminal(stream, expected):
    assert default_progress_mode(stream) == expected


@pytest.mark.parametrize(("mode", "kind"), [
    ("json", JsonProgress),
    ("bar", BarProgress),
    ("none", Progress),
])
def test_make_progress_modes(mode, kind):
    assert type(make_progress(mode, io.StringIO(), io.StringIO())) is kind


def test_make_progress_rejects_unknown_mode():
    with pytest.raises(ValueError, match="xml"):
        make_progress("xml")


def test_stage_clock_sums_repeats():
    clock = StageClock()
    for _ in range(3):
        with clock.measure("render"):
            time.sleep(0.01)

    assert clock.seconds["render"] >= 0.03
    assert clock.seconds["encode"] == 0.0
    assert set(clock.seconds) == set(STAGES)


def test_stage_clock_rejects_unknown_stage():
    with pytest.raises(KeyError):
        StageClock().add("painting", 1.0)


def test_summary_sums_stages_over_ranks():
    summary = summary_of()

    assert summary.stages["render"] == pytest.approx(2.5)
    assert summary.stages["send"] == pytest.approx(0.25)
    assert summary.fps == pytest.approx(5.0)


def test_summary_json_shape():
    data = json.loads(json.dumps(summary_of().to_dict()))

    assert {"frames", "ranks", "wall_s", "fps", "stages", "per_rank"} <= set(data)
    assert set(data["stages"]) == set(STAGES)
    assert [entry["rank"] for entry in data["per_rank"]] == [0, 1]
    for entry in data["per_rank"]:
        assert {"rank", "host", "frames", "peak_rss_mb", "stages"} <= set(entry)


def test_summary_text_names_every_rank():
    text = summary_of().format_text()

    assert "10 frames" in text
    assert "rank 0 on a" in text
    assert "rank 1 on b" in text
    assert "peak RSS" in text


def test_peak_rss_is_plausible():
    assert 1.0 < peak_rss_mb() < 1e6
