"""Unit tests of the server's pure parts: multipart parsing, settings, the launcher command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from kvis_parallel.errors import UserError
from kvis_parallel.server.jobs import Job, StateFolderInUse, StateStore, write_json_atomically
from kvis_parallel.server.launcher import (RunResult, build_command, error_message, render_arguments, strip_rank_zero,
                                           to_http_advice)
from kvis_parallel.server.settings import format_bytes, parse_duration, parse_settings, parse_size
from kvis_parallel.server.summary import check_options_against_summary
from kvis_parallel.server.uploads import MultipartParser, UploadError, UploadReceiver, parse_part_headers

BOUNDARY = b"----kvisBoundary42"


def multipart_body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    body = b"preamble to ignore\r\n"
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += b"--" + BOUNDARY + b"\r\n"
        body += f"Content-Disposition: {disposition}\r\n".encode()
        body += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


def receive(tmp_path: Path, body: bytes, chunk: int) -> UploadReceiver:
    receiver = UploadReceiver(tmp_path / "upload", f"multipart/form-data; boundary={BOUNDARY.decode()}")
    for start in range(0, len(body), chunk):
        receiver.feed(body[start:start + chunk])
    receiver.finish()
    return receiver


# Data that contains the delimiter's prefix, CRLFs and dashes, to catch a
# parser that cuts the file part at a near-match.
TRICKY = b"\r\n--" + BOUNDARY[:-1] + b"X\r\n\r\n--\x00" * 50 + bytes(range(256)) * 20


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 1 << 20])
def test_multipart_file_any_chunking(tmp_path: Path, chunk: int) -> None:
    body = multipart_body([("token", None, b"secret"), ("file", "VTK.tar.gz", TRICKY), ("field", None, b"p")])
    receiver = receive(tmp_path, body, chunk)
    assert (tmp_path / "upload").read_bytes() == TRICKY
    assert receiver.fields == {"token": "secret", "field": "p"}
    assert receiver.filename == "VTK.tar.gz"
    assert receiver.has_file


def test_multipart_truncated_body(tmp_path: Path) -> None:
    body = multipart_body([("file", "a.tgz", b"x" * 100)])
    receiver = UploadReceiver(tmp_path / "upload", f"multipart/form-data; boundary={BOUNDARY.decode()}")
    receiver.feed(body[:-10])
    with pytest.raises(UploadError, match="truncated"):
        receiver.finish()


@pytest.mark.parametrize("parts, message", [
    ([("field", None, b"p")], "missing form field 'file'"),
    ([("file", "a.tgz", b"")], "empty"),
])
def test_multipart_archive_check(tmp_path: Path, parts, message: str) -> None:
    receiver = receive(tmp_path, multipart_body(parts), 10)
    with pytest.raises(UploadError, match=message):
        receiver.check_archive()


def test_multipart_two_files_rejected(tmp_path: Path) -> None:
    body = multipart_body([("file", "a", b"1"), ("file", "b", b"2")])
    with pytest.raises(UploadError, match="more than one 'file'"):
        receive(tmp_path, body, 1000)


def test_multipart_oversized_field_rejected(tmp_path: Path) -> None:
    body = multipart_body([("title", None, b"t" * 70_000), ("file", "a", b"1")])
    with pytest.raises(UploadError, match="longer than"):
        receive(tmp_path, body, 4096)


def test_multipart_large_file_other_name(tmp_path: Path) -> None:
    body = multipart_body([("other", "VTK.tar.gz", b"x" * 70_000)])
    with pytest.raises(UploadError, match=r"missing form field 'file' \(got 'other'\)"):
        receive(tmp_path, body, 4096)


def test_raw_body_empty_rejected(tmp_path: Path) -> None:
    receiver = UploadReceiver(tmp_path / "upload", "application/gzip")
    receiver.finish()
    with pytest.raises(UploadError, match="the request body is empty; send the archive with curl -F file=@"):
        receiver.check_archive()


@pytest.mark.parametrize("options, words", [
    ({"component": "x"}, ["the default field 'p'", "no x component", "field= with a vector field (U)"]),
    ({"component": "z"}, ["the default field 'p'"]),
])
def test_component_checked_against_default_field(options: dict[str, str], words: list[str]) -> None:
    with pytest.raises(UserError) as raised:
        check_options_against_summary(options, SUMMARY)
    for word in words:
        assert word in str(raised.value)


def test_view_space_hints_url_encoding() -> None:
    with pytest.raises(UserError, match=r"URL-encode \+ as %2B \(view=%2Bz\)"):
        render_arguments({"view": " z"})


def test_raw_body_written_as_is(tmp_path: Path) -> None:
    receiver = UploadReceiver(tmp_path / "upload", "application/x-www-form-urlencoded")
    receiver.feed(b"abc")
    receiver.feed(b"def")
    receiver.finish()
    receiver.check_archive()
    assert not receiver.is_multipart
    assert (tmp_path / "upload").read_bytes() == b"abcdef"


def test_part_headers_without_name_rejected() -> None:
    with pytest.raises(UploadError, match="Content-Disposition"):
        parse_part_headers(b"Content-Type: text/plain")


def test_parser_ignores_epilogue() -> None:
    seen: list[bytes] = []
    parser = MultipartParser(BOUNDARY, lambda name, filename: None, lambda name, data: seen.append(data),
                             lambda name: None)
    parser.feed(multipart_body([("a", None, b"1")]) + b"trailing junk --" + BOUNDARY)
    parser.close()
    assert b"".join(seen) == b"1"


@pytest.mark.parametrize("text, expected", [("512", 512), ("64K", 65536), ("8G", 8 * 2**30), ("1.5M", 1572864)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [("90", 90.0), ("30m", 1800.0), ("24h", 86400.0), ("2d", 172800.0)])
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "ten", "5x"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_settings_flag_beats_environment(tmp_path: Path) -> None:
    environ = {"KVIS_PORT": "9000", "KVIS_RANKS": "3", "KVIS_MAX_UPLOAD": "1G", "KVIS_TOKEN": "t",
               "KVIS_STATE_DIR": str(tmp_path)}
    settings = parse_settings(["--port", "9100"], environ)
    assert settings.port == 9100
    assert settings.ranks == 3
    assert settings.max_upload_bytes == 2**30
    assert settings.token == "t"
    assert settings.state_dir == tmp_path


def test_settings_defaults(tmp_path: Path) -> None:
    settings = parse_settings([], {"XDG_STATE_HOME": str(tmp_path)})
    assert settings.port == 8080
    assert settings.address == ""
    assert settings.listens_beyond_loopback
    assert settings.max_running == 1
    assert settings.launcher == "mpiexec -n {ranks}"
    assert settings.state_dir == tmp_path / "kvis-server"


def test_render_arguments_use_equals_form() -> None:
    arguments = render_arguments({"title": "-o /etc/passwd", "log": "yes", "edges": "0", "time_format": "{time}"})
    assert arguments == ["--title=-o /etc/passwd", "--log", "--time-format={time}"]


@pytest.mark.parametrize("options, message", [
    ({"output": "x.mp4"}, "unknown option 'output'"),
    ({"poster": "/tmp/x.jpg"}, "unknown option 'poster'"),
    ({"log": "maybe"}, "invalid option log"),
    ({"title": "a\x00b"}, "NUL"),
])
def test_render_arguments_rejected(options: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        render_arguments(options)


def test_build_command_substitutes_each_argument(tmp_path: Path) -> None:
    command = build_command("srun -n {ranks} --job-name=kvis-{job} --chdir {workdir}", "/opt/py", 4,
                            "abc", tmp_path, ["render", "in"])
    assert command == ["srun", "-n", "4", "--job-name=kvis-abc", "--chdir", str(tmp_path),
                       "/opt/py", "-m", "kvis_parallel", "render", "in"]


def test_build_command_uses_mpiexec_beside_python(tmp_path: Path) -> None:
    (tmp_path / "mpiexec").write_text("")
    command = build_command("mpiexec -n {ranks}", str(tmp_path / "python"), 2, "abc", tmp_path, [])
    assert command[0] == str(tmp_path / "mpiexec")


@pytest.mark.parametrize("template, position", [
    ("nice -n 5 mpiexec -n {ranks}", 3),
    ("timeout 1h mpirun -np {ranks}", 2),
])
def test_build_command_mpiexec_after_wrapper(tmp_path: Path, template: str, position: int) -> None:
    for name in ("mpiexec", "mpirun"):
        (tmp_path / name).write_text("")
    command = build_command(template, str(tmp_path / "python"), 2, "abc", tmp_path, [])
    assert command[position] == str(tmp_path / template.split()[position])
    assert command[0] == template.split()[0]


def test_build_command_replaces_first_mpiexec_only(tmp_path: Path) -> None:
    (tmp_path / "mpiexec").write_text("")
    command = build_command("mpiexec -n {ranks} mpiexec", str(tmp_path / "python"), 2, "abc", tmp_path, [])
    assert command[:4] == [str(tmp_path / "mpiexec"), "-n", "2", "mpiexec"]


@pytest.mark.parametrize("result, reason", [
    (RunResult(-9, ["kvis: colour range of 'p' over 11 steps: 0 .. 1"]), "renderer killed by signal 9 (SIGKILL)"),
    (RunResult(1, ["kvis: colour range of 'p'", "kvis: error: rank 1 of 2 on h: boom"]), "rank 1 of 2 on h: boom"),
    (RunResult(-9, [], error={"stage": "error", "message": "out of memory"}), "out of memory"),
    (RunResult(1, ["[mpiexec] unrecognized argument bogus", "-----", "Type 'mpiexec --help' for usage."]),
     "launcher command exited with status 1: [mpiexec] unrecognized argument bogus"),
    (RunResult(127, ["-----", "nothing useful here"]), "launcher command exited with status 127: nothing useful here"),
    (RunResult(1, []), "launcher command exited with status 1"),
])
def test_failure_reason_table(result: RunResult, reason: str) -> None:
    assert result.failure_reason == reason


def test_killed_by_signal_only_negative() -> None:
    assert RunResult(-15, []).killed_by_signal == 15
    assert RunResult(1, []).killed_by_signal is None


@pytest.mark.parametrize("message, expected", [
    ("several folders contain time steps: /s/in/a/VTK, /s/in/b/VTK; give one of them as INPUT",
     "several folders contain time steps: a/VTK, b/VTK; put only one of them in the archive"),
    ("no time steps found under /s/in: expected foamToVTK output", "no time steps found under the archive: expected"),
    ("field 'q' not found; fields that exist: p (choose with --field)", "(choose with field=)"),
    ("give a positive --range MIN,MAX or drop --log", "give a positive range=MIN,MAX or drop log=1"),
    ("use --component mag", "use component=mag"),
    ("invalid size; see 'kvis render --help'", "see the render options in docs/server.md"),
    ("Type 'mpiexec --help' for usage.", "Type 'mpiexec --help' for usage."),
])
def test_http_advice_table(message: str, expected: str) -> None:
    rewritten = to_http_advice(message, Path("/s/in"))
    assert expected in rewritten
    assert "/s/in" not in rewritten


def test_error_message_prefers_kvis_line() -> None:
    lines = ["Traceback ...", "kvis: error: field 'x' not found", "mpiexec noise"]
    assert error_message(lines) == "field 'x' not found"


def test_store_marks_interrupted_jobs_failed(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    running = Job(id="0123456789abcdef", status="running")
    finished = Job(id="fedcba9876543210", status="done")
    for job in (running, finished):
        store.add_job(job)
    store.close()

    reopened = StateStore(tmp_path)
    interrupted = reopened.open()
    assert [job.id for job in interrupted] == [running.id]
    assert reopened.jobs[running.id].status == "failed"
    assert "restarted while the job was running" in reopened.jobs[running.id].error
    assert reopened.jobs[finished.id].status == "done"


def test_store_lock_rejects_second_store(tmp_path: Path) -> None:
    first = StateStore(tmp_path)
    first.open()
    with pytest.raises(StateFolderInUse) as raised:
        StateStore(tmp_path).open()
    assert f"PID {os.getpid()}" in str(raised.value)
    assert "give each server its own --state-dir" in str(raised.value)

    first.close()
    StateStore(tmp_path).open()


def test_write_json_atomically_replaces(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    write_json_atomically(path, {"a": 1})
    write_json_atomically(path, {"a": 2})
    assert path.read_text().count('"a": 2') == 1
    assert [item.name for item in tmp_path.iterdir()] == ["job.json"]


@pytest.mark.parametrize("count, expected", [
    (0, "0 B"), (1000, "1000 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (100_000, "97.7 KiB"),
    (2**20, "1 MiB"), (64 * 2**20, "64 MiB"), (8 * 2**30, "8 GiB"), (3 * 2**40, "3 TiB"),
])
def test_format_bytes_picks_unit(count: int, expected: str) -> None:
    assert format_bytes(count) == expected


@pytest.mark.parametrize("kind, message, expected", [
    ("user", "rank 0 of 4 on node7: field 'x' not found", "field 'x' not found"),
    ("user", "rank 2 of 4 on node7: time step 0.1 (a.vtk): truncated", "rank 2 of 4 on node7: time step 0.1 (a.vtk): truncated"),
    ("bug", "rank 0 of 4 on node7: bug in kvis: KeyError: 'x'", "rank 0 of 4 on node7: bug in kvis: KeyError: 'x'"),
    ("user", "no time steps found", "no time steps found"),
])
def test_client_message_rank_zero_prefix(kind: str, message: str, expected: str) -> None:
    result = RunResult(returncode=2 if kind == "user" else 1, stderr_tail=[],
                       error={"stage": "error", "kind": kind, "message": message})
    assert result.client_message == expected


def test_strip_rank_zero_only_at_start() -> None:
    assert strip_rank_zero("rank 10 of 16 on n1: bad") == "rank 10 of 16 on n1: bad"
    assert strip_rank_zero("x: rank 0 of 2 on n1: bad") == "x: rank 0 of 2 on n1: bad"


@pytest.mark.parametrize("status, kind, expected", [
    ("failed", "user", "user"), ("failed", "bug", "bug"), ("failed", "timeout", None),
    ("failed", "restart", None), ("cancelled", "cancelled", None), ("done", None, None),
])
def test_job_public_error_kind(status: str, kind: str | None, expected: str | None) -> None:
    assert Job(id="0123456789abcdef", status=status, error_kind=kind).to_public()["error_kind"] == expected


SUMMARY = {
    "layout": "foam-legacy", "steps": 3, "parts": ["internal", "movingWall", "fixedWalls"],
    "fields": [
        {"name": "p", "association": "cell", "components": 1, "range": [0, 1]},
        {"name": "U", "association": "cell", "components": 3, "range": [0, 1]},
        {"name": "U", "association": "point", "components": 3, "range": [0, 1]},
    ],
}


@pytest.mark.parametrize("options", [
    {}, {"field": "p"}, {"field": "U", "component": "z"}, {"field": "U", "association": "point"},
    {"parts": "movingWall", "field": "only_on_patches"}, {"parts": "internal", "field": "p"},
])
def test_summary_accepts_valid_options(options: dict[str, str]) -> None:
    check_options_against_summary(options, SUMMARY)


@pytest.mark.parametrize("options, words", [
    ({"field": "T"}, ["field 'T' not found", "p (cell, 1 component)", "U (cell, 3 components)"]),
    ({"field": "p", "association": "point"}, ["not point data", "cell"]),
    ({"field": "p", "component": "x"}, ["1 component(s)", "no x component", "component=mag"]),
    ({"parts": "internal,lid"}, ["part 'lid' not found", "movingWall"]),
])
def test_summary_rejects_invalid_options(options: dict[str, str], words: list[str]) -> None:
    with pytest.raises(UserError) as raised:
        check_options_against_summary(options, SUMMARY)
    for word in words:
        assert word in str(raised.value)


def test_summary_without_internal_mesh() -> None:
    summary = {"parts": ["top", "bottom"], "fields": [{"name": "T", "association": "point", "components": 1}]}
    check_options_against_summary({"field": "T"}, summary)
    with pytest.raises(UserError, match="field 'p' not found"):
        check_options_against_summary({"field": "p"}, summary)
