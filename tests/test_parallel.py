"""Tests for kvis_parallel.parallel: hand-out, colour range, and whole jobs under a real mpiexec.

The MPI tests compare movies made by 1, 2 and 3 ranks frame by frame, which
checks the order as well as the pixels. Other MPI tests make one rank fail and
check that the whole job ends promptly with a message naming the rank and step.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import last_line

from kvis_parallel import parallel
from kvis_parallel.errors import UserError
from kvis_parallel.parallel import NO_MORE_STEPS, Dispatcher, SurfaceCache
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


# --- Hand-out of steps ------------------------------------------------------------------


def drain(dispatcher: Dispatcher, ranks: list[int]) -> list[tuple[int, int]]:
    handed = []
    while True:
        progressed = False
        for rank in ranks:
            step = dispatcher.take(rank)
            if step != NO_MORE_STEPS:
                handed.append((rank, step))
                progressed = True
        if not progressed:
            return handed


def test_dispatcher_lowest_first():
    dispatcher = Dispatcher(range(5))

    assert [dispatcher.take(rank) for rank in (1, 2, 1, 0, 2, 1)] == [0, 1, 2, 3, 4, NO_MORE_STEPS]


def test_dispatcher_prefers_cached_step_nearby():
    dispatcher = Dispatcher(range(10), cached={2: [3, 9]}, lookahead=3)

    assert dispatcher.take(1) == 0
    assert dispatcher.take(2) == 3, "step 3 is within 3 of the lowest free step 1"
    assert dispatcher.take(2) == 1, "step 9 is too far ahead"
    assert dispatcher.take(1) == 2


def test_dispatcher_skips_cached_step_taken_elsewhere():
    dispatcher = Dispatcher(range(4), cached={1: [0, 1]}, lookahead=0)

    assert dispatcher.take(2) == 0
    assert dispatcher.take(1) == 1
    assert dispatcher.take(1) == 2


@pytest.mark.parametrize("seed", range(5))
def test_dispatcher_stays_within_lookahead(seed):
    generator = random.Random(seed)
    steps = 60
    lookahead = 4
    cached = {rank: sorted(generator.sample(range(steps), 15)) for rank in range(4)}
    dispatcher = Dispatcher(range(steps), cached=cached, lookahead=lookahead)

    taken: set[int] = set()
    while len(taken) < steps:
        lowest_free = min(set(range(steps)) - taken)
        step = dispatcher.take(generator.randrange(4))
        assert step not in taken
        assert step <= lowest_free + lookahead
        taken.add(step)
    assert all(dispatcher.take(rank) == NO_MORE_STEPS for rank in range(4))


def test_dispatcher_gives_every_step_once():
    handed = drain(Dispatcher(range(20), cached={0: [5, 6], 1: [7]}, lookahead=8), [0, 1, 2])

    assert sorted(step for _, step in handed) == list(range(20))


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


@pytest.mark.parametrize(("ranks", "width", "height"), [
    (1, 160, 120), (4, 1280, 720), (64, 1920, 1080), (256, 3840, 2160), (8, 7680, 7680),
])
def test_reorder_window_bounded(ranks, width, height):
    frame_bytes = width * height * 3 // 2
    window = parallel.reorder_window(ranks, frame_bytes)

    assert window >= parallel.MIN_REORDER_WINDOW
    assert window * frame_bytes <= max(parallel.REORDER_WINDOW_BYTES, parallel.MIN_REORDER_WINDOW * frame_bytes)


@pytest.mark.parametrize(("count", "expected"), [(1, 0), (2, 1), (11, 5), (100, 50)])
def test_poster_step_is_middle(count, expected):
    assert parallel.poster_step(count) == expected


class RecordingWriter:
    """Stands in for encode.MovieWriter: records the first Y value of each frame."""

    def __init__(self) -> None:
        self.written: list[int] = []

    def write_yuv420p(self, planes: np.ndarray) -> None:
        self.written.append(int(planes[0, 0]))


def test_collector_encodes_in_order_within_window():
    from mpi4py import MPI

    from kvis_parallel.progress import Progress

    writer = RecordingWriter()
    context = parallel.make_context(MPI.COMM_SELF)
    collector = parallel._FrameCollector(context, total=6, shape=(6, 4), window=3, writer=writer,
                                         progress=Progress())
    for step in (2, 1):
        assert collector.can_hold(step)
        frame = collector.buffer()
        frame[...] = step
        collector.store(step, frame)
    assert not collector.can_hold(3), "step 3 is outside the window of steps 0..2"
    assert writer.written == []

    frame = collector.buffer()
    frame[...] = 0
    collector.store(0, frame)
    collector.encode_ready()

    assert writer.written == [0, 1, 2]
    assert collector.next_step == 3
    assert collector.can_hold(5)
    assert collector._allocated == 3, "buffers are reused, never more than the window"


# --- Surfaces kept between the phases ---------------------------------------------------------


def make_surface(resolution: int):
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    source = vtkSphereSource()
    source.SetThetaResolution(resolution)
    source.SetPhiResolution(resolution)
    source.Update()
    return source.GetOutput()


def test_surface_cache_keeps_within_budget():
    surface = make_surface(64)
    size = surface.GetActualMemorySize() * 1024
    cache = SurfaceCache(budget_bytes=int(size * 2.5))

    assert [cache.offer(step, make_surface(64)) for step in range(4)] == [True, True, False, False]
    assert cache.steps == [0, 1]
    assert cache.used_bytes <= cache.budget_bytes


def test_surface_cache_pop_drops_older_steps():
    cache = SurfaceCache(budget_bytes=2**30)
    for step in (2, 4, 6):
        cache.offer(step, make_surface(8))

    assert cache.pop(5) is None
    assert cache.steps == [6]
    assert cache.pop(6) is not None
    assert cache.used_bytes == 0


# --- Colour range --------------------------------------------------------------------------


def test_prepass_ignores_nan_and_inf():
    result = parallel._PrepassResult()
    result.add("a", np.array([1.0, np.nan, 3.0, np.inf]), (0, 1, 0, 1, 0, 0))
    result.add("b", np.array([np.nan, np.nan]), (0, 2, 0, 1, 0, 0))
    result.add("c", np.array([-np.inf, 2.0]), None)

    assert (result.low, result.high) == (1.0, 3.0)
    assert result.nan_steps == ["b"]
    assert result.empty_steps == ["c"]
    assert list(result.bounds) == [0, 2, 0, 1, 0, 0]


def job_with(scene: Scene) -> parallel.RenderJob:
    return parallel.RenderJob(series=None, scene=scene, output=Path("m.mp4"))  # type: ignore[arg-type]


def test_colour_range_from_data():
    result = parallel._PrepassResult(low=-1.0, high=4.0, low_positive=0.5)

    assert parallel.colour_range(job_with(Scene(field="p")), result) == (-1.0, 4.0)
    assert parallel.colour_range(job_with(Scene(field="p", log=True)), result) == (0.5, 4.0)
    assert parallel.colour_range(job_with(Scene(field="p", range=(0.0, 1.0))), result) == (0.0, 1.0)


@pytest.mark.parametrize(("scene", "message"), [
    (Scene(field="p"), "no finite value"),
    (Scene(field="p", log=True), "no finite value"),
])
def test_colour_range_without_values(scene, message):
    with pytest.raises(UserError, match=message):
        parallel.colour_range(job_with(scene), parallel._PrepassResult())


def test_colour_range_log_without_positive_values():
    result = parallel._PrepassResult(low=-3.0, high=0.0)

    with pytest.raises(UserError, match="--log"):
        parallel.colour_range(job_with(Scene(field="p", log=True)), result)


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
