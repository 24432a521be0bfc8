"""Tests for kvis_parallel.cli: options, inputs, outputs and errors, through the real command.

Most tests run ``python -m kvis_parallel`` in a subprocess with one process
(an mpi4py singleton) at 160x120 on the small samples; the MPI tests are in
test_parallel.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import kvis_command, last_line
from PIL import Image

from kvis_parallel.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    build_parser,
    configure_logging,
    parse_args,
    route_vtk_output,
    scene_from_args,
)
from kvis_parallel.errors import UserError
from kvis_parallel.scene import Scene

SIZE = "160x120"
CAVITY_STEPS = 11
DAM_BREAK_STEPS = 8


def render_args(input_path: Path, output: Path, *options: str) -> list[str]:
    return ["render", str(input_path), "-o", str(output), "--size", SIZE, *options]


# --- Parsing, in process ----------------------------------------------------------


def test_scene_from_defaults():
    scene = scene_from_args(parse_args(["render", "VTK", "-o", "movie.mp4"]))

    assert scene == Scene()


def test_scene_from_every_option():
    args = parse_args([
        "render", "VTK", "-o", "m.mp4", "--field", "U", "--association", "cell", "--component", "x",
        "--parts", "internal,movingWall", "--colormap", "coolwarm_r", "--range", "1,2", "--log",
        "--view", "+z", "--zoom", "1.5", "--slice", "0,0,0.005,0,0,1", "--edges", "--size", "640x360",
        "--fps", "24", "--crf", "18", "--preset", "fast", "--title", "Cavity", "--time-format",
        "{index}", "--fxaa",
    ])
    scene = scene_from_args(args)

    assert scene.field == "U"
    assert scene.association == "cell"
    assert scene.component == "x"
    assert scene.parts == ("internal", "movingWall")
    assert scene.colormap == "coolwarm_r"
    assert scene.range == (1.0, 2.0)
    assert scene.log is True
    assert scene.view == "+z"
    assert scene.zoom == 1.5
    assert scene.slice == (0.0, 0.0, 0.005, 0.0, 0.0, 1.0)
    assert scene.edges is True
    assert scene.size == (640, 360)
    assert (scene.fps, scene.crf, scene.preset) == (24, 18, "fast")
    assert scene.title == "Cavity"
    assert scene.time_format == "{index}"
    assert scene.fxaa is True


@pytest.mark.parametrize(("options", "attribute", "expected"), [
    (["--range", "-1,1"], "range", (-1.0, 1.0)),
    (["--range=-2.5,-1"], "range", (-2.5, -1.0)),
    (["--slice", "-0.5,0,0,0,0,1"], "slice", (-0.5, 0.0, 0.0, 0.0, 0.0, 1.0)),
])
def test_negative_values_accepted(options, attribute, expected):
    args = parse_args(["render", "VTK", "-o", "m.mp4", *options])

    assert getattr(args, attribute) == expected


def test_odd_size_rounded_up(caplog):
    with caplog.at_level(logging.INFO, logger="kvis_parallel.cli"):
        scene = scene_from_args(parse_args(["render", "VTK", "-o", "m.mp4", "--size", "161x121"]))

    assert scene.size == (162, 122)
    assert "161x121 rounded up to 162x122" in caplog.text


@pytest.mark.parametrize(("options", "named"), [
    (["--fps", "abc"], "--fps"),
    (["--size", "big"], "--size"),
    (["--range", "5,1"], "--range"),
    (["--range", "1"], "--range"),
    (["--slice", "0,0,0,0,0,0"], "--slice"),
    (["--view", "top"], "--view"),
    (["--preset", "quick"], "--preset"),
    (["--progress", "xml"], "--progress"),
    (["--bogus"], "--bogus"),
])
def test_parser_errors_name_option(options, named):
    with pytest.raises(UserError, match=named):
        parse_args(["render", "VTK", "-o", "m.mp4", *options])


def test_missing_output_is_usage_error():
    with pytest.raises(UserError, match="-o"):
        parse_args(["render", "VTK"])


@pytest.mark.parametrize(("options", "named"), [
    (["--fps", "0"], "fps"),
    (["--crf", "60"], "crf"),
    (["--size", "8x8"], "size"),
    (["--colormap", "rainbow"], "colormap"),
    (["--zoom", "0"], "zoom"),
    (["--time-format", "{when}"], "time format"),
])
def test_scene_errors_name_setting(options, named):
    args = parse_args(["render", "VTK", "-o", "m.mp4", *options])

    with pytest.raises(UserError, match=named):
        scene_from_args(args)


@pytest.mark.parametrize(("option", "unit"), [
    ("--size", "pixels"),
    ("--fps", "frames per second"),
    ("--range", "units"),
    ("--cache-mb", "MiB"),
])
def test_help_states_units(option, unit):
    render = build_parser()._subparsers._group_actions[0].choices["render"]
    help_text = " ".join(render.format_help().split())

    assert option in help_text
    assert unit in help_text


# --- Rendering, in a subprocess ------------------------------------------------------


def test_render_cavity_movie(kvis, cavity, tmp_path, movie_frames):
    movie = tmp_path / "cavity.mp4"
    result = kvis(render_args(cavity, movie, "--fps", "5"))

    assert result.returncode == 0, result.stderr
    decoded = movie_frames(movie)
    assert len(decoded.frames) == CAVITY_STEPS
    assert (decoded.width, decoded.height) == (160, 120)
    assert decoded.fps == 5
    assert decoded.duration_s == pytest.approx(CAVITY_STEPS / 5)
    assert decoded.pix_fmt == "yuv420p"
    assert decoded.codec == "h264"


def test_render_leaves_no_partial_files(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "cavity.mp4"))

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cavity.mp4"]


def test_render_xml_layout_in_time_order(kvis, dam_break, tmp_path, movie_frames):
    movie = tmp_path / "dam.mp4"
    result = kvis(render_args(dam_break, movie, "--field", "alpha.water", "--time-format", "{index}"))

    assert result.returncode == 0, result.stderr
    assert len(movie_frames(movie).frames) == DAM_BREAK_STEPS


def test_field_missing_at_first_step_drawn_as_nan(kvis, dam_break, tmp_path, movie_frames):
    movie = tmp_path / "dam.mp4"
    result = kvis(render_args(dam_break, movie, "--field", "p"))

    assert result.returncode == 0, result.stderr
    assert "damBreak_0 has no finite value of p" in result.stderr
    assert len(movie_frames(movie).frames) == DAM_BREAK_STEPS


def test_tarball_input(kvis, cavity, tmp_path, movie_frames):
    archive = tmp_path / "VTK.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cavity, arcname="job_42/case/VTK")
    out = tmp_path / "out"
    out.mkdir()
    result = kvis(render_args(archive, out / "movie.mp4"))

    assert result.returncode == 0, result.stderr
    assert len(movie_frames(out / "movie.mp4").frames) == CAVITY_STEPS
    assert sorted(path.name for path in out.iterdir()) == ["movie.mp4"], "extracted files were left behind"


def test_tarball_extracted_into_workdir(kvis, cavity, tmp_path):
    archive = tmp_path / "VTK.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cavity, arcname="VTK")
    workdir = tmp_path / "scratch"
    workdir.mkdir()
    result = kvis(render_args(archive, tmp_path / "movie.mp4", "--workdir", workdir, "-v"))

    assert result.returncode == 0, result.stderr
    assert f"into {workdir}/.kvis-input-" in result.stderr
    assert list(workdir.iterdir()) == []


def test_folder_above_vtk_input(kvis, cavity, tmp_path, movie_frames):
    movie = tmp_path / "movie.mp4"
    result = kvis(render_args(cavity.parent, movie))

    assert result.returncode == 0, result.stderr
    assert len(movie_frames(movie).frames) == CAVITY_STEPS


def test_frames_and_poster(kvis, cavity, tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    poster = tmp_path / "poster.jpg"
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--frames", frames, "--poster", poster))

    assert result.returncode == 0, result.stderr
    pngs = sorted(frames.glob("frame_*.png"))
    assert [path.name for path in pngs] == [f"frame_{index:05d}.png" for index in range(CAVITY_STEPS)]
    assert Image.open(pngs[0]).size == (160, 120)
    with Image.open(poster) as image:
        assert image.format == "JPEG"
        assert image.size == (160, 120)


def test_poster_is_middle_frame(kvis, cavity, tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    poster = tmp_path / "poster.jpg"
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--frames", frames, "--poster", poster))
    assert result.returncode == 0, result.stderr

    poster_pixels = np.asarray(Image.open(poster), dtype=float)
    differences = [np.abs(np.asarray(Image.open(path), dtype=float) - poster_pixels).mean()
                   for path in sorted(frames.glob("*.png"))]
    assert int(np.argmin(differences)) == CAVITY_STEPS // 2


def test_list_fields(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--list-fields"))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["p", "cell"] for line in lines), result.stdout
    assert any(line.split()[:4] == ["U", "point", "3", "components,"] for line in lines), result.stdout
    assert not (tmp_path / "m.mp4").exists()


def test_inspect_json(kvis, dam_break):
    result = kvis(["inspect", dam_break, "--json"])

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"layout", "steps", "first_time", "last_time", "parts", "fields"}
    assert report["layout"] == "foam-xml"
    assert report["steps"] == DAM_BREAK_STEPS
    assert report["first_time"] == 0.0
    assert report["last_time"] == pytest.approx(0.35)
    assert report["parts"][0] == "internal"
    alpha = [entry for entry in report["fields"] if entry["name"] == "alpha.water"]
    assert alpha
    assert alpha[0]["components"] == 1
    assert alpha[0]["range"][1] == pytest.approx(1.0)


def test_inspect_tarball(kvis, cavity, tmp_path):
    archive = tmp_path / "VTK.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cavity, arcname="VTK")
    result = kvis(["inspect", archive, "--json"])

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == CAVITY_STEPS
    assert [path.name for path in tmp_path.iterdir()] == ["VTK.tgz"], "extracted files were left behind"


def test_inspect_text(kvis, cavity):
    result = kvis(["inspect", cavity])

    assert result.returncode == 0, result.stderr
    assert "steps: 11" in result.stdout
    assert "parts: internal, fixedWalls, movingWall" in result.stdout


def test_progress_json_lines(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--progress", "json"))

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    stages = [record["stage"] for record in records]
    assert stages[0] == "discover"
    assert "prepass" in stages
    assert "render" in stages
    assert stages[-1] == "done"
    for record in records:
        assert {"stage", "frames_done", "frames_total", "elapsed_s", "fps", "eta_s"} <= set(record)
    assert records[-1]["frames_done"] == CAVITY_STEPS
    assert records[-1]["summary"]["frames"] == CAVITY_STEPS


def test_summary_file(kvis, cavity, tmp_path):
    summary_path = tmp_path / "summary.json"
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--summary", summary_path, "-q"))

    assert result.returncode == 0, result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == CAVITY_STEPS
    assert summary["ranks"] == 1
    assert summary["wall_s"] > 0
    assert summary["fps"] == pytest.approx(CAVITY_STEPS / summary["wall_s"], rel=0.01)
    assert set(summary["stages"]) == {"setup", "read", "geometry", "render", "readback", "convert", "send",
                                      "encode", "wait"}
    assert summary["per_rank"][0]["frames"] == CAVITY_STEPS
    assert summary["per_rank"][0]["peak_rss_mb"] > 0


def write_plane_step(path: Path, values) -> None:
    """Write a unit square in z = 0 of 10x10 cells with cell field p = values(x of the cell centre)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkFiltersSources import vtkPlaneSource
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter

    source = vtkPlaneSource()
    source.SetResolution(10, 10)
    source.SetOrigin(0, 0, 0)
    source.SetPoint1(1, 0, 0)
    source.SetPoint2(0, 1, 0)
    source.Update()
    plane = source.GetOutput()
    centres_x = (np.arange(100) % 10 + 0.5) / 10
    array = numpy_to_vtk(np.asarray(values(centres_x), dtype=np.float32), deep=True)
    array.SetName("p")
    plane.GetCellData().AddArray(array)

    writer = vtkPolyDataWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(plane)
    writer.Write()


def test_colour_range_is_global(kvis, tmp_path, movie_frames):
    data = tmp_path / "VTK"
    data.mkdir()
    write_plane_step(data / "plane_0.vtk", lambda x: x)                 # 0.05 .. 0.95
    write_plane_step(data / "plane_1.vtk", lambda x: 0.45 + 0.1 * x)    # 0.455 .. 0.545
    movie = tmp_path / "m.mp4"
    result = kvis(["render", data, "-o", movie, "--size", "320x240", "--colormap", "grayscale",
                   "--field", "p", "--time-format", "", "--crf", "0"])
    assert result.returncode == 0, result.stderr

    wide, narrow = movie_frames(movie).frames
    row = 120
    left, right = 137 - 70, 137 + 70  # the plane spans about 137 +- 110 px in the data viewport
    wide_spread = float(wide[row, right].mean()) - float(wide[row, left].mean())
    narrow_spread = float(narrow[row, right].mean()) - float(narrow[row, left].mean())
    assert wide_spread > 120, "the wide step should span most of the grey scale"
    assert abs(narrow_spread) < 40, "the narrow step was rescaled to its own range"
    assert 90 < narrow[row, 137].mean() < 170, "the narrow step should be mid grey"


def test_nan_step_renders_with_warning(kvis, synthetic_series, tmp_path, movie_frames):
    data = synthetic_series(steps=4, nan_step=2)
    movie = tmp_path / "m.mp4"
    result = kvis(render_args(data, movie, "--field", "p"))

    assert result.returncode == 0, result.stderr
    assert "no finite value of p" in result.stderr
    assert len(movie_frames(movie).frames) == 4


# --- Errors -----------------------------------------------------------------------------


def test_no_time_steps(kvis, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = kvis(render_args(empty, tmp_path / "m.mp4"))

    assert result.returncode == 2
    assert last_line(result.stderr).startswith("kvis: error: no time steps found")


def test_unknown_field_lists_fields(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--field", "nope", "--progress", "json"))

    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith("kvis: error: field 'nope' not found")
    assert "p (cell)" in line
    assert "U (point)" in line
    error = json.loads(last_line(result.stdout))
    assert error == {"stage": "error", "kind": "user", "message": line.removeprefix("kvis: error: ")}
    assert not (tmp_path / "m.mp4").exists()


def test_corrupt_step_named(kvis, cavity, tmp_path):
    data = tmp_path / "VTK"
    shutil.copytree(cavity, data)
    broken = data / "cavity_50.vtk"
    broken.write_bytes(b"# vtk DataFile Version 2.0\ngarbage\nBINARY\nDATASET UNSTRUCTURED_GRID\nPOINTS x\n")
    result = kvis(render_args(data, tmp_path / "m.mp4"))

    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith("kvis: error:")
    assert "cavity_50" in line
    assert not (tmp_path / "m.mp4").exists()


@pytest.mark.parametrize(("options", "named"), [
    (["--fps", "abc"], "--fps"),
    (["--size", "3x3"], "size"),
    (["--colormap", "rainbow"], "colormap"),
    (["--encoder-rank", "both"], "--encoder-rank"),
])
def test_bad_option_exits_2(kvis, cavity, tmp_path, options, named):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", *options))

    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith("kvis: error:")
    assert named in line


@pytest.mark.parametrize(("make_args", "named"), [
    (lambda data, out: render_args(out / "missing", out / "m.mp4"), "missing"),
    (lambda data, out: render_args(data, out / "no_folder" / "m.mp4"), "no_folder"),
    (lambda data, out: render_args(data, out / "m.mp4", "--poster", out / "no_folder" / "p.jpg"), "--poster"),
])
def test_bad_paths_exit_2(kvis, cavity, tmp_path, make_args, named):
    result = kvis(make_args(cavity, tmp_path))

    assert result.returncode == 2
    assert named in last_line(result.stderr)


def test_injected_bug_exits_1(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4"), env={"KVIS_TEST_FAIL_STEP": "3"})

    assert result.returncode == 1
    line = last_line(result.stderr)
    assert line.startswith("kvis: error: bug in kvis:")
    assert "time step cavity_30" in line
    assert not (tmp_path / "m.mp4").exists()


# --- Outputs checked before any work ----------------------------------------------------


@pytest.fixture
def immutable_folder(tmp_path):
    """Return a folder that root cannot write either (chattr +i), made writable again afterwards."""
    folder = tmp_path / "immut"
    folder.mkdir()
    result = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {result.stderr.strip()}")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def assert_user_error(result, *named: str) -> None:
    assert result.returncode == 2, result.stderr
    line = last_line(result.stderr)
    assert line.startswith("kvis: error:")
    for text in named:
        assert text in line
    assert "Traceback" not in result.stderr
    assert "bug in kvis" not in result.stderr
    assert "removed the incomplete movie" not in result.stderr


def test_unwritable_output_folder(kvis, dam_break, immutable_folder):
    result = kvis(render_args(dam_break, immutable_folder / "a.mp4"))

    assert_user_error(result, f"cannot write to folder {immutable_folder}:", "choose another -o")
    assert "prepass" not in result.stderr


def test_output_in_sys_rejected(kvis, dam_break):
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    result = kvis(render_args(dam_break, Path("/sys/kvis.mp4")))

    assert_user_error(result, "cannot write to folder /sys:", "choose another -o")


def test_unwritable_workdir(kvis, cavity, tmp_path, immutable_folder):
    archive = tmp_path / "VTK.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cavity, arcname="VTK")
    result = kvis(render_args(archive, tmp_path / "m.mp4", "--workdir", immutable_folder))

    assert_user_error(result, f"cannot write to folder {immutable_folder}:", "--workdir")
    assert not (tmp_path / "m.mp4").exists()


@pytest.mark.parametrize(("options", "named"), [
    (lambda out: ["--summary", out], "invalid --summary"),
    (lambda out: ["--poster", out], "invalid --poster"),
    (lambda out: ["--poster", out / "p.gif"], ".jpg, .jpeg or .png"),
    (lambda out: ["--frames", out / "file.txt"], "invalid --frames"),
    (lambda out: ["--summary", out / "no_folder" / "s.json"], "no_folder"),
])
def test_bad_outputs_rejected_before_rendering(kvis, cavity, tmp_path, options, named):
    (tmp_path / "file.txt").write_text("not a folder")
    result = kvis(render_args(cavity, tmp_path / "m.mp4", *map(str, options(tmp_path))))

    assert_user_error(result, named)
    assert not (tmp_path / "m.mp4").exists()
    assert "colour range" not in result.stderr


@pytest.mark.parametrize("name", ["p6.avi", "movie.mkv", "movie.gif"])
def test_movie_suffix_rejected(kvis, cavity, tmp_path, name):
    result = kvis(render_args(cavity, tmp_path / name))

    assert_user_error(result, f"invalid -o {tmp_path / name}", ".mp4")


def test_movie_without_suffix_warns(kvis, cavity, tmp_path, movie_frames):
    result = kvis(render_args(cavity, tmp_path / "p7", "--size", "32x32"))

    assert result.returncode == 0, result.stderr
    assert "has no suffix" in result.stderr
    assert len(movie_frames(tmp_path / "p7").frames) == CAVITY_STEPS


def test_png_poster_and_old_frames(kvis, cavity, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(20):
        (frames / f"frame_{index:05d}.png").write_bytes(b"old")
    (frames / "notes.txt").write_text("kept")

    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--size", "32x32", "--poster", tmp_path / "p.png",
                              "--frames", frames))

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(path.name for path in frames.glob("frame_*.png"))[-1] == f"frame_{CAVITY_STEPS - 1:05d}.png"
    assert len(list(frames.glob("frame_*.png"))) == CAVITY_STEPS
    assert (frames / "notes.txt").read_text() == "kept"
    assert "removed 20 frame_*.png files" in result.stderr


def test_negative_cache_rejected():
    with pytest.raises(UserError, match="--cache-mb"):
        parse_args(["render", "in", "-o", "m.mp4", "--cache-mb", "-5"])


def test_dedicated_encoder_alone_warns(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--size", "32x32", "--encoder-rank", "dedicated"))

    assert result.returncode == 0, result.stderr
    assert "--encoder-rank dedicated needs at least 2 processes" in result.stderr


# --- Options that used to crash --------------------------------------------------------


@pytest.mark.parametrize("time_format", ["{time:>99999999}", "{label.__class__.__mro__}"])
def test_hostile_time_format_rejected(time_format):
    with pytest.raises(UserError, match="invalid time format"):
        scene_from_args(parse_args(["render", "in", "-o", "m.mp4", "--time-format", time_format]))


@pytest.mark.parametrize("size", ["16x16", "200x16", "16x200"])
def test_tiny_sizes_render(kvis, cavity, tmp_path, movie_frames, size):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--size", size))

    assert result.returncode == 0, result.stderr
    assert len(movie_frames(tmp_path / "m.mp4").frames) == CAVITY_STEPS


def test_log_with_negative_values_rejected(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--field", "p", "--log"))

    assert_user_error(result, "'p'", "--range MIN,MAX", "MIN > 0")


@pytest.mark.parametrize(("sample", "plane"), [
    ("cavity", "0.05,0.05,0.005,0,0,1"),
    ("dam_break", "0.3,0.3,0.0073,0,0,1"),
])
def test_mid_plane_slice_of_2d_case(kvis, request, tmp_path, movie_frames, sample, plane):
    data = request.getfixturevalue(sample)
    result = kvis(render_args(data, tmp_path / "m.mp4", "--slice", plane))

    assert result.returncode == 0, result.stderr
    assert "has no geometry" not in result.stderr
    expected = CAVITY_STEPS if sample == "cavity" else DAM_BREAK_STEPS
    assert len(movie_frames(tmp_path / "m.mp4").frames) == expected


def test_slice_missing_mesh_rejected(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--slice", "0.05,0.05,0.5,0,0,1"))

    assert_user_error(result, "--slice plane through (0.05, 0.05, 0.5)", "z from 0 to 0.01")
    assert "no finite value" not in result.stderr
    assert "has no geometry" not in result.stderr
    assert not (tmp_path / "m.mp4").exists()


def test_flat_patch_drawn_face_on(kvis, cavity, tmp_path):
    poster = tmp_path / "p.png"
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--parts", "movingWall", "--poster", poster))

    assert result.returncode == 0, result.stderr
    with Image.open(poster) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    background = np.round(np.array(Scene().background) * 255)
    # The data viewport keeps at least 60% of the width, left of the scalar bar,
    # and rows 20 to 100 lie between the title and time label rows at 160x120.
    data = pixels[20:100, : int(0.6 * 160)]
    drawn = np.abs(data - background).max(axis=2) > 30
    # Edge-on the patch would be a line one pixel high at most; face-on it is a 10:1 strip.
    assert drawn.sum(axis=1).max() > 0.5 * data.shape[1]
    assert drawn.sum(axis=0).max() > 2


# --- Inputs ---------------------------------------------------------------------------


def test_legacy_series_file_input(kvis, cavity, tmp_path, movie_frames):
    result = kvis(render_args(cavity / "cavity.vtk.series", tmp_path / "m.mp4"))

    assert result.returncode == 0, result.stderr
    assert len(movie_frames(tmp_path / "m.mp4").frames) == CAVITY_STEPS


def test_legacy_folder_input_quiet(kvis, cavity):
    result = kvis(["inspect", cavity])

    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert "layout: foam-legacy" in result.stdout
    assert "from t = 0 to t = 0.5" in result.stdout


def test_two_cases_below_input(kvis, cavity, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(cavity, tmp_path / "two" / name / "VTK")
    result = kvis(render_args(tmp_path / "two", tmp_path / "m.mp4"))

    assert_user_error(result, "several folders contain time steps", str(tmp_path / "two" / "a" / "VTK"),
                      str(tmp_path / "two" / "b" / "VTK"), "give one of them as INPUT")


def test_text_named_tar_gz(kvis, tmp_path):
    fake = tmp_path / "x.tar.gz"
    fake.write_text("hello\n")
    result = kvis(render_args(fake, tmp_path / "m.mp4"))

    assert_user_error(result, "x.tar.gz is not a tar archive", "neither a tar header nor gzip")
    assert "upload" not in last_line(result.stderr)


# --- Output streams and signals --------------------------------------------------------


def test_closed_stdout_is_quiet(cavity):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(kvis_command(["inspect", cavity]), stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    finally:
        os.close(write_end)

    assert result.returncode == EXIT_BROKEN_PIPE
    assert "Traceback" not in result.stderr
    assert "bug in kvis" not in result.stderr
    assert "Exception ignored" not in result.stderr


def test_progress_json_without_text_summary(kvis, cavity, tmp_path):
    result = kvis(render_args(cavity, tmp_path / "m.mp4", "--size", "32x32", "--progress", "json"))

    assert result.returncode == 0, result.stderr
    assert "kvis: wrote" not in result.stderr
    assert "frames/s" not in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["stage"] == "done"


def test_sigint_message(cavity, tmp_path):
    command = kvis_command(render_args(cavity, tmp_path / "m.mp4", "--size", "1280x720", "--progress", "json"))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            # Interrupt once the job is under way, as a user pressing Ctrl-C would.
            for line in process.stdout:
                if json.loads(line)["stage"] in ("prepass", "render"):
                    break
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()

    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert last_line(stderr) == "kvis: error: interrupted by SIGINT (Ctrl-C)"


def test_multiline_log_prefixed(capsys):
    configure_logging(verbose=False, quiet=False, rank=0)
    logging.getLogger("vtk").error("ERROR: In vtkDataReader.cxx, line 3489\nError reading binary data!")

    lines = capsys.readouterr().err.splitlines()
    assert lines == ["kvis: error: ERROR: In vtkDataReader.cxx, line 3489",
                     "kvis: error: Error reading binary data!"]


def test_vtk_output_goes_through_logger(caplog):
    from vtkmodules.vtkCommonCore import vtkOutputWindow

    previous = vtkOutputWindow.GetInstance()
    vtkOutputWindow.SetInstance(vtkOutputWindow())
    try:
        route_vtk_output()
        with caplog.at_level(logging.WARNING, logger="vtk"):
            vtkOutputWindow.GetInstance().DisplayErrorText("Error reading binary data!\n")
    finally:
        vtkOutputWindow.SetInstance(previous)

    assert [record.getMessage() for record in caplog.records] == ["Error reading binary data!"]
    assert caplog.records[0].levelno == logging.ERROR


def test_inspect_unwritable_workdir(kvis, cavity, tmp_path, immutable_folder):
    archive = tmp_path / "VTK.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cavity, arcname="VTK")
    result = kvis(["inspect", archive, "--workdir", immutable_folder])

    assert_user_error(result, f"cannot write to folder {immutable_folder}:", "--workdir")
