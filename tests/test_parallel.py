"""Tests for kvis_parallel.parallel: job settings, and whole jobs in process and under a real mpiexec.

The MPI tests compare movies made by 1, 2 and 3 ranks frame by frame, which
checks the order as well as the pixels. Other MPI tests make one rank fail and
check that the whole job ends promptly with a message naming the rank and step.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import last_line

from kvis_parallel import parallel
from kvis_parallel.errors import UserError
from kvis_parallel.scene import Scene

SIZE = "160x120"
CAVITY_STEPS = 11

# Largest difference, in 8-bit levels, allowed between the decoded frames of
# two runs with different rank counts. Each frame is rendered by the same code
# on one CPU type, so the frames are expected to match exactly. The margin
# allows for rounding in a different OpenGL driver.
FRAME_TOLERANCE = 2

# Seconds within which a job with a failing rank must have ended.
FAILURE_DEADLINE_S = 30


# --- Settings and sizes ------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "ranks", "expected"), [
    ("auto", 1, "shared"),
    ("auto", 2, "shared"),
    ("auto", parallel.DEDICATED_ENCODER_MIN_RANKS - 1, "shared"),
    ("auto", parallel.DEDICATED_ENCODER_MIN_RANKS, "dedicated"),
    ("dedicated", 2, "dedicated"),
    ("dedicated", 1, "shared"),
    ("shared", 16, "shared"),
])
def test_encoder_mode(requested, ranks, expected):
    assert parallel.encoder_mode(requested, ranks) == expected


def test_encoder_mode_rejects_unknown():
    with pytest.raises(UserError, match="--encoder-rank"):
        parallel.encoder_mode("both", 4)


@pytest.mark.parametrize(("count", "expected"), [(1, 0), (2, 1), (11, 5), (100, 50)])
def test_poster_step_is_middle(count, expected):
    assert parallel.poster_step(count) == expected


# --- A whole job in this process ------------------------------------------------------------


def test_run_render_in_process(synthetic_series, tmp_path, movie_frames):
    from mpi4py import MPI

    from kvis_parallel.progress import Progress
    from kvis_parallel.series import discover_series

    series = discover_series(synthetic_series(steps=3))
    scene = parallel.resolve_field(series, Scene(size=(160, 120)))
    job = parallel.RenderJob(series=series, scene=scene, output=tmp_path / "m.mp4")
    summary = parallel.run_render(job, parallel.make_context(MPI.COMM_SELF), Progress())

    assert summary.frames == 3
    assert summary.per_rank[0].frames == 3
    assert summary.per_rank[0].cached_steps == 3
    assert summary.per_rank[0].steps_read == 3, "cached steps were read a second time"
    assert len(movie_frames(tmp_path / "m.mp4").frames) == 3


def test_render_and_readback_timed_apart(synthetic_series, tmp_path, monkeypatch):
    from mpi4py import MPI

    from kvis_parallel import render
    from kvis_parallel.progress import Progress
    from kvis_parallel.series import discover_series

    def render_together(*args, **kwargs):
        raise AssertionError("FrameRenderer.render() times drawing and readback as one stage")

    monkeypatch.setattr(render.FrameRenderer, "render", render_together)
    series = discover_series(synthetic_series(steps=2))
    scene = parallel.resolve_field(series, Scene(size=(160, 120)))
    job = parallel.RenderJob(series=series, scene=scene, output=tmp_path / "m.mp4")
    summary = parallel.run_render(job, parallel.make_context(MPI.COMM_SELF), Progress())

    stages = summary.per_rank[0].stages
    assert stages["render"] > 0
    assert stages["readback"] > 0


@pytest.mark.parametrize(("options", "title"), [
    ({"field": "U"}, "|U|"),
    ({"field": "U", "range": (0.0, 2.0)}, "|U|"),
    ({"field": "U", "component": "x"}, "U_x"),
    ({"field": "p"}, "p"),
], ids=["magnitude", "magnitude-with-range", "component", "scalar"])
def test_scalar_bar_title_marks_magnitude(synthetic_series, tmp_path, monkeypatch, options, title):
    from mpi4py import MPI

    from kvis_parallel import render
    from kvis_parallel.progress import Progress
    from kvis_parallel.series import discover_series

    titles = []
    close = render.FrameRenderer.close

    def record_title_and_close(self):
        titles.append(self.scalar_bar.GetTitle())
        close(self)

    monkeypatch.setattr(render.FrameRenderer, "close", record_title_and_close)
    series = discover_series(synthetic_series(steps=3))
    scene = parallel.resolve_field(series, Scene(size=(160, 120), **options))
    job = parallel.RenderJob(series=series, scene=scene, output=tmp_path / "m.mp4")
    parallel.run_render(job, parallel.make_context(MPI.COMM_SELF), Progress())

    assert titles == [title]


# --- Under mpiexec ----------------------------------------------------------------------------


def render(kvis, data: Path, movie: Path, ranks: int | None, *options: str, env=None, timeout=120):
    return kvis(["render", data, "-o", movie, "--size", SIZE, "-q", *options], ranks=ranks, env=env,
                timeout=timeout)


def max_difference(first, second) -> int:
    return int(np.abs(first.astype(np.int16) - second.astype(np.int16)).max())


@pytest.mark.mpi
def test_same_frames_on_1_2_3_ranks(kvis, dam_break, tmp_path, movie_frames):
    movies = {}
    for ranks in (None, 2, 3):
        movie = tmp_path / f"ranks_{ranks}.mp4"
        result = render(kvis, dam_break, movie, ranks, "--field", "alpha.water", "--time-format", "{index}")
        assert result.returncode == 0, result.stderr
        movies[ranks] = movie_frames(movie).frames

    reference = movies[None]
    assert len(reference) == 8
    # Neighbouring frames differ, so equal sequences also prove the order.
    assert all(max_difference(a, b) > FRAME_TOLERANCE for a, b in zip(reference, reference[1:]))
    for ranks in (2, 3):
        assert len(movies[ranks]) == len(reference)
        for index, (expected, frame) in enumerate(zip(reference, movies[ranks])):
            assert max_difference(expected, frame) <= FRAME_TOLERANCE, f"frame {index} differs on {ranks} ranks"


@pytest.mark.mpi
@pytest.mark.parametrize(("encoder", "renders_on_root"), [("shared", True), ("dedicated", False)])
def test_uneven_steps_shared_out(kvis, synthetic_series, tmp_path, movie_frames, encoder, renders_on_root):
    data = synthetic_series(cells=300, steps=9, grow=15.0)
    movie = tmp_path / "m.mp4"
    summary_path = tmp_path / "summary.json"
    result = render(kvis, data, movie, 3, "--encoder-rank", encoder, "--summary", summary_path)

    assert result.returncode == 0, result.stderr
    assert len(movie_frames(movie).frames) == 9
    summary = json.loads(summary_path.read_text())
    assert summary["encoder"] == encoder
    frames_per_rank = {entry["rank"]: entry["frames"] for entry in summary["per_rank"]}
    assert sum(frames_per_rank.values()) == 9
    assert (frames_per_rank[0] > 0) == renders_on_root
    assert frames_per_rank[1] > 0
    assert frames_per_rank[2] > 0


@pytest.mark.mpi
def test_summary_lists_every_rank(kvis, cavity, tmp_path):
    summary_path = tmp_path / "summary.json"
    result = render(kvis, cavity, tmp_path / "m.mp4", 2, "--summary", summary_path)

    assert result.returncode == 0, result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["ranks"] == 2
    assert [entry["rank"] for entry in summary["per_rank"]] == [0, 1]
    assert all(entry["peak_rss_mb"] > 0 for entry in summary["per_rank"])
    assert summary["frames"] == CAVITY_STEPS
    assert all(entry["stages"]["setup"] > 0 for entry in summary["per_rank"]), "every rank's start-up is counted"


SHARE_SCRIPT = """
import sys
from mpi4py import MPI
from kvis_parallel import failures, parallel

context = parallel.make_context(MPI.COMM_WORLD)
prepared = []

def prepare():
    prepared.append(context.rank)
    if sys.argv[1] == "fail":
        raise RuntimeError("prepare failed")

try:
    value = failures.share_from_root(context, lambda: "steps", prepare=prepare)
except RuntimeError as error:
    value = str(error)
print(f"rank {context.rank}: {value} prepared={prepared}", flush=True)
"""


@pytest.mark.mpi
@pytest.mark.parametrize(("mode", "expected"), [("ok", "steps"), ("fail", "prepare failed")])
def test_share_from_root_prepares_others(tmp_path, mode, expected):
    import subprocess
    import sys

    from conftest import MPIEXEC

    script = tmp_path / "share.py"
    script.write_text(SHARE_SCRIPT)
    result = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script), mode],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "rank 0: steps prepared=[]" in result.stdout, "rank 0 runs make, not prepare"
    assert f"rank 1: {expected} prepared=[1]" in result.stdout


@pytest.mark.mpi
@pytest.mark.parametrize(("fail_step", "encoder"), [(0, "auto"), (5, "auto"), (10, "auto"), (5, "dedicated")])
def test_failing_rank_ends_job(kvis, cavity, tmp_path, fail_step, encoder):
    started = time.monotonic()
    result = render(kvis, cavity, tmp_path / "m.mp4", 3, "--encoder-rank", encoder,
                    env={"KVIS_TEST_FAIL_STEP": str(fail_step)}, timeout=FAILURE_DEADLINE_S * 2)
    elapsed = time.monotonic() - started

    assert elapsed < FAILURE_DEADLINE_S
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert line.startswith("kvis: error: bug in kvis: rank "), result.stderr
    assert " of 3 on " in line
    assert f"time step cavity_{fail_step * 10} " in line
    assert "KVIS_TEST_FAIL_STEP" in line
    assert not (tmp_path / "m.mp4").exists()


@pytest.mark.mpi
def test_crashed_rank_ends_job(kvis, cavity, tmp_path):
    started = time.monotonic()
    result = render(kvis, cavity, tmp_path / "m.mp4", 3, env={"KVIS_TEST_FAIL_STEP": "4:exit"},
                    timeout=FAILURE_DEADLINE_S * 2)

    assert time.monotonic() - started < FAILURE_DEADLINE_S
    assert result.returncode != 0
    assert not (tmp_path / "m.mp4").exists()


@pytest.mark.mpi
def test_corrupt_step_under_mpi(kvis, cavity, tmp_path):
    data = tmp_path / "VTK"
    shutil.copytree(cavity, data)
    (data / "cavity_70.vtk").write_bytes(b"# vtk DataFile Version 2.0\nbroken\nBINARY\nDATASET POLYDATA\nPOINTS")
    result = render(kvis, data, tmp_path / "m.mp4", 2)

    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith("kvis: error:")
    assert "cavity_70" in line


@pytest.mark.mpi
def test_truncated_step_under_mpi(kvis, cavity, tmp_path):
    data = tmp_path / "VTK"
    shutil.copytree(cavity, data)
    step_file = data / "cavity_50.vtk"
    content = step_file.read_bytes()
    step_file.write_bytes(content[:content.index(b"CELL_DATA")])
    result = render(kvis, data, tmp_path / "m.mp4", 2, "--field", "p")

    assert result.returncode == 2, result.stderr
    line = last_line(result.stderr)
    assert line.startswith("kvis: error:"), result.stderr
    assert str(step_file) in line
    assert "truncated" in line


@pytest.mark.mpi
def test_only_rank_0_reports(kvis, cavity, tmp_path):
    result = kvis(["render", cavity, "-o", tmp_path / "m.mp4", "--fps", "abc"], ranks=3)

    assert result.returncode == 2
    assert result.stderr.count("kvis: error:") == 1
    assert "--fps" in last_line(result.stderr)


@pytest.mark.mpi
def test_list_fields_under_mpi(kvis, cavity, tmp_path):
    result = render(kvis, cavity, tmp_path / "m.mp4", 2, "--list-fields")

    assert result.returncode == 0, result.stderr
    assert sum(line.split()[:2] == ["p", "cell"] for line in result.stdout.splitlines()) == 1
    assert not (tmp_path / "m.mp4").exists()


@pytest.mark.mpi
def test_unknown_field_under_mpi(kvis, cavity, tmp_path):
    result = render(kvis, cavity, tmp_path / "m.mp4", 2, "--field", "nope")

    assert result.returncode == 2
    assert result.stderr.count("kvis: error:") == 1
    assert "fields that exist" in last_line(result.stderr)


@pytest.mark.mpi
def test_log_with_negative_values_under_mpi(kvis, cavity, tmp_path):
    result = render(kvis, cavity, tmp_path / "m.mp4", 2, "--field", "p", "--log")

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("kvis: error:") == 1
    line = last_line(result.stderr)
    assert "--log needs values above zero" in line
    assert "--range MIN,MAX" in line


@pytest.mark.mpi
def test_slice_missing_mesh_under_mpi(kvis, cavity, tmp_path):
    result = render(kvis, cavity, tmp_path / "m.mp4", 2, "--slice", "0.05,0.05,0.5,0,0,1")

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("kvis: error:") == 1
    line = last_line(result.stderr)
    assert "--slice plane through (0.05, 0.05, 0.5)" in line
    assert "z from 0 to 0.01" in line
    assert not (tmp_path / "m.mp4").exists()


@pytest.mark.mpi
def test_sigterm_cleans_up(synthetic_series, tmp_path):
    import os
    import signal
    import subprocess
    import tarfile

    from conftest import kvis_command

    archive = tmp_path / "VTK.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(synthetic_series(steps=150), arcname="VTK")
    out = tmp_path / "out"
    out.mkdir()
    command = kvis_command(["render", archive, "-o", out / "m.mp4", "--size", "640x360", "--progress", "json"],
                           ranks=2)

    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            for line in process.stdout:
                if json.loads(line)["stage"] == "render":
                    break
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=FAILURE_DEADLINE_S)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert process.returncode == 130
    assert last_line(stderr).startswith("kvis: error: interrupted")
    assert list(out.iterdir()) == [], "the extracted input or a partial movie was left behind"
