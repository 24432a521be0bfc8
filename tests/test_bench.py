"""Tests of the benchmark's own code: statistics, tables, skipping missing tools, a tiny real run."""

from __future__ import annotations

import json
import math

import pytest

from bench import report, run, runners, stats
from bench.runners import RunResult, RunSpec


def make_result(label: str, wall_s: float, repetition: int, *, workload: str = "w", size: str = "160x120",
                summary: dict | None = None, ok: bool = True, warmup: bool = False) -> RunResult:
    tool, _, ranks = label.partition("-")
    return RunResult(workload=workload, size=size, tool=tool, ranks=int(ranks or 1), repetition=repetition,
                     warmup=warmup, oversubscribed=False, ok=ok, wall_s=wall_s, frames=10,
                     peak_rss_mb=100.0, cpu_s=3.0, summary=summary)


def kvis_summary(ranks: int = 2, wall_s: float = 2.0) -> dict:
    stages = {"read": 0.4, "geometry": 0.2, "render": 1.0, "readback": 0.2, "convert": 0.2,
              "send": 0.1, "encode": 0.6, "wait": 0.5}
    per_rank = [{"rank": rank, "host": "h", "frames": 5, "peak_rss_mb": 200.0 + rank} for rank in range(ranks)]
    return {"frames": 10, "ranks": ranks, "wall_s": wall_s, "stages": stages, "per_rank": per_rank}


def test_paired_ratios_from_timings():
    results = [
        make_result("kvis-2", 1.0, 0), make_result("paraview", 10.0, 0),
        make_result("kvis-2", 2.0, 1), make_result("paraview", 8.0, 1),
        make_result("kvis-2", 3.0, 2),  # its peer run is missing: no pair
        make_result("kvis-2", 9.0, 3, warmup=True), make_result("paraview", 9.0, 3, warmup=True),
    ]

    ratios = stats.paired_ratios(results, "w", "160x120", "kvis-2", "paraview")

    assert ratios == [pytest.approx(0.1), pytest.approx(0.25)]


def test_paired_ratios_skip_failed_runs():
    results = [make_result("kvis-1", 1.0, 0), make_result("pyvista", 4.0, 0, ok=False)]

    assert stats.paired_ratios(results, "w", "160x120", "kvis-1", "pyvista") == []


def test_spread_median_and_range():
    result = stats.spread([3.0, 1.0, 2.0, math.nan])

    assert result.median == 2.0
    assert (result.low, result.high) == (1.0, 3.0)
    assert result.count == 3
    assert result.format(1) == "2.0 [1.0–3.0]"


def test_spread_of_nothing():
    assert stats.spread([]).format() == "n/a"


def test_pipeline_bound_shared_limited():
    bound = stats.pipeline_bound(kvis_summary(ranks=2, wall_s=1.5))

    # Render work 0.4+0.2+1.0+0.2+0.2 = 2.0 s over 2 render ranks; encode 0.6 s;
    # all work 2.6 s over 2 ranks = 1.3 s, which is the largest term.
    assert bound.render_s == pytest.approx(1.0)
    assert bound.encode_s == pytest.approx(0.6)
    assert bound.bound_s == pytest.approx(1.3)
    assert bound.limit == "shared"
    assert bound.overhead == pytest.approx(1.5 / 1.3 - 1)


def test_pipeline_bound_encoder_limited():
    summary = kvis_summary(ranks=4, wall_s=3.0)
    summary["stages"]["encode"] = 2.5
    summary["per_rank"][0]["frames"] = 0

    bound = stats.pipeline_bound(summary)

    assert bound.render_ranks == 3
    assert bound.limit == "encode"
    assert bound.bound_s == pytest.approx(2.5)


def test_pipeline_bound_without_stages():
    assert stats.pipeline_bound({"frames": 1}) is None


def test_timing_table_columns():
    results = [make_result("kvis-1", 2.0, 0, summary=kvis_summary(1)),
               make_result("kvis-2", 1.0, 0, summary=kvis_summary(2)),
               make_result("paraview", 10.0, 0)]
    document = {"steps": {"w": 10}, "machine": {}, "versions": {}, "method": {}}

    page = report.render_markdown(document, results, [], "", [])

    assert "| " + " | ".join(report.TIMING_COLUMNS) + " |" in page
    assert "| " + " | ".join(report.RATIO_COLUMNS) + " |" in page
    assert "| w | 160x120 | kvis-2 | paraview | 0.100 | 10.0 | 1.000 | 1 |" in page
    assert "| w | 160x120 | kvis | 2 | 10 | 1.00 | 10.0 | 3.0 | 100 | 1 |" in page


def test_memory_rows_ratio():
    short = make_result("kvis-2", 1.0, 0, summary={"per_rank": [{"rank": 0, "peak_rss_mb": 200.0}]})
    long = make_result("kvis-2", 9.0, 0, summary={"per_rank": [{"rank": 0, "peak_rss_mb": 210.0}]})
    long.frames = 2000

    rows = report.memory_rows([short, long])

    assert [row[0] for row in rows] == [10, 2000]
    assert rows[1][-1] == "1.050"


def test_findings_kept_on_rebuild(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(f"old\n{report.FINDINGS_START}\nrender is the limit\n{report.FINDINGS_END}\n")

    assert report.existing_findings(page) == "render is the limit"


def test_missing_peer_skipped_with_message(monkeypatch, capsys):
    monkeypatch.setattr(runners.shutil, "which", lambda name: None)
    plan = run.make_plan(run.parse_arguments(["--peers", "paraview", "--ranks", "1"]))
    skipped: list[str] = []

    specs = run.available_specs(plan, skipped)

    assert RunSpec("paraview") not in specs
    assert any(message.startswith("paraview: pvbatch not found") for message in skipped)
    assert "apt-get install -y paraview" in capsys.readouterr().out


def test_quick_plan_defaults():
    plan = run.make_plan(run.parse_arguments(["--quick"]))

    assert plan.workloads == ("cavity",)
    assert plan.sizes == ("1280x720",)
    assert plan.repetitions == 1
    assert plan.memory is False


def test_unknown_workload_rejected():
    with pytest.raises(SystemExit, match="unknown workloads"):
        run.make_plan(run.parse_arguments(["--workloads", "nosuch"]))


def tiny_run(tmp_path, peers: str) -> tuple[int, dict, str]:
    out = tmp_path / "out"
    status = run.main(["--workloads", "tiny", "--sizes", "160x120", "--ranks", "1", "--repetitions", "1",
                       "--no-warmup", "--no-memory", "--peers", peers, "--out", str(out),
                       "--cache", str(tmp_path / "cache"), "--markdown", str(out / "RESULTS.md"),
                       "--plots", str(out)])
    return status, json.loads((out / "results.json").read_text()), (out / "RESULTS.md").read_text()


@pytest.mark.skipif(runners.missing_reason("kvis") is not None, reason="kvis command line not available")
def test_tiny_kvis_run_well_formed(tmp_path):
    status, document, page = tiny_run(tmp_path, peers="none")

    assert status == 0
    [result] = document["results"]
    assert result["ok"], result["error"]
    assert result["frames"] == 4
    assert result["wall_s"] > 0
    assert result["summary"]["stages"].keys() >= set(stats.SUMMARY_STAGES)
    assert "| " + " | ".join(report.TIMING_COLUMNS) + " |" in page
    assert "| tiny | 160x120 | kvis | 1 | 4 |" in page


@pytest.mark.slow
def test_tiny_run_with_peers(tmp_path):
    status, document, page = tiny_run(tmp_path, peers="paraview,pyvista")

    ran = {result["tool"]: result for result in document["results"]}
    for message in document["skipped"]:
        assert message.split(":")[0] not in ran
    for tool, result in ran.items():
        assert result["ok"], f"{tool}: {result['error']}"
    assert status == 0
    if {"kvis", "paraview"} <= ran.keys():
        assert "| tiny | 160x120 | kvis-1 | paraview |" in page
