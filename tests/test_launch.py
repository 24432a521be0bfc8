"""Tests for launch/: the kvis-upload client, the kvis-render wrapper and the job scripts.

The client runs as a subprocess, as on a login node. It is tested against two
servers on 127.0.0.1. One is a small Tornado stand-in started in a thread,
whose behaviour each test sets (no job API, rejected chunked bodies, 503
responses, a broken download). The other is the real ``tornado_app.py``,
started as a subprocess.
Movies are checked by decoding them with PyAV.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import importlib.machinery
import importlib.util
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
UPLOAD = LAUNCH / "kvis-upload"
RENDER = LAUNCH / "kvis-render"
SHELL_SCRIPTS = (RENDER, LAUNCH / "slurm" / "kvis-render.sbatch", LAUNCH / "pjm" / "kvis-render.pjm")
CAVITY_VTK = REPO / "datasets" / "cavity" / "VTK"
CAVITY_STEPS = 11          # datasets/README.md: icoFoam cavity, 11 steps
SIZE = "160x120"
MPIEXEC = Path(sys.executable).parent / "mpiexec"

CLIENT_TIMEOUT_S = 240
SERVER_START_TIMEOUT_S = 60
STAND_IN_FRAMES = 3


# ------------------------------------------------------------------ helpers


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def leftover_partials(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".part"))


def run_upload(*arguments: str, timeout: float = CLIENT_TIMEOUT_S,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("KVIS_SERVER", "KVIS_TOKEN", "KVIS_MAIL_COMMAND")}
    environment.update(env or {})
    return subprocess.run([sys.executable, str(UPLOAD), *arguments], capture_output=True, text=True,
                          timeout=timeout, env=environment)


def load_upload_module():
    """Import launch/kvis-upload, which has no .py suffix, as a module."""
    loader = importlib.machinery.SourceFileLoader("kvis_upload", str(UPLOAD))
    spec = importlib.util.spec_from_loader("kvis_upload", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def require_mpiexec() -> None:
    """Skip the test when the environment has no mpiexec, unless KVIS_REQUIRE_ALL=1."""
    if MPIEXEC.exists():
        return
    if os.environ.get("KVIS_REQUIRE_ALL") == "1":
        pytest.fail(f"{MPIEXEC} is missing and KVIS_REQUIRE_ALL=1")
    pytest.skip(f"{MPIEXEC} is missing: pip install mpich")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def small_movie(tmp_path_factory) -> bytes:
    """A real 3-frame H.264 MP4, for the stand-in server to send."""
    path = tmp_path_factory.mktemp("movie") / "small.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(STAND_IN_FRAMES):
            image = np.full((32, 32, 3), index * 60, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


@pytest.fixture()
def mail_recorder(tmp_path) -> tuple[str, Path]:
    """Return a --mail-command template and the file where the 'mail' is written."""
    record = tmp_path / "mail.json"
    script = tmp_path / "record_mail.py"
    script.write_text(
        "import json, sys\n"
        f"with open({str(record)!r}, 'w') as out:\n"
        "    json.dump({'argv': sys.argv[1:], 'body': sys.stdin.read()}, out)\n")
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} -a {{file}} -s {{subject}} {{address}}"
    return template, record


# ------------------------------------------------------------------ stand-in server


class StandIn:
    """A kvis-like server in a thread whose responses each test sets.

    ``job_api``: whether /jobs exists; ``reject_chunked``: respond 411 to a
    chunked body before reading it; ``busy``: how many uploads get 503 with
    ``Retry-After: 1``; ``files_body``: what POST /files sends back;
    ``job_polls``: status reads before a job is done; ``slow_polls``: how
    many status reads wait 3 s before responding; ``break_download``: send
    half the movie on the first download, then close.
    """

    def __init__(self, movie: bytes) -> None:
        self.movie = movie
        self.job_api = True
        self.reject_chunked = False
        self.busy = 0
        self.files_body = (200, "video/mp4", movie)
        self.job_polls = STAND_IN_FRAMES
        self.upload_status = None
        self.break_download = False
        self.slow_polls = 0
        self.requests: list[dict] = []
        self.polls = 0
        self.port = 0
        self._loop = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            server = tornado.httpserver.HTTPServer(self.application())
            server.add_sockets(sockets)
            self._loop = tornado.ioloop.IOLoop.current()
            started.set()
            self._loop.start()
            server.stop()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert started.wait(10), "the stand-in server did not start within 10 s"

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
            self._thread.join(10)

    def application(self) -> tornado.web.Application:
        routes = [
            (r"/files", UploadHandler, {"stand_in": self}),
            (r"/jobs/(\w+)/movie.mp4", MovieHandler, {"stand_in": self}),
            (r"/jobs/(\w+)", JobHandler, {"stand_in": self}),
        ]
        if self.job_api:
            routes.insert(0, (r"/jobs", UploadHandler, {"stand_in": self}))
        return tornado.web.Application(routes)

    def record(self, handler: tornado.web.RequestHandler, **extra) -> dict:
        entry = {
            "method": handler.request.method,
            "path": handler.request.path,
            "query": {key: handler.get_query_argument(key) for key in handler.request.query_arguments},
            "headers": dict(handler.request.headers),
            **extra,
        }
        self.requests.append(entry)
        return entry

    def uploads(self) -> list[dict]:
        return [entry for entry in self.requests if entry["method"] == "POST"]


@tornado.web.stream_request_body
class UploadHandler(tornado.web.RequestHandler):
    def initialize(self, stand_in: StandIn) -> None:
        self.stand_in = stand_in
        self.body = io.BytesIO()

    def prepare(self) -> None:
        self.entry = self.stand_in.record(self)
        chunked = self.request.headers.get("Transfer-Encoding", "").lower() == "chunked"
        self.entry["chunked"] = chunked
        if self.request.method != "POST":
            return
        if self.stand_in.busy > 0:
            self.stand_in.busy -= 1
            self.set_header("Retry-After", "1")
            self.send_error(503, reason="queue full")
        elif self.stand_in.reject_chunked and chunked:
            self.set_status(411)
            self.finish("a Content-Length is required\n")
        elif self.stand_in.upload_status is not None:
            status, reason = self.stand_in.upload_status
            self.set_status(status)
            self.finish(reason + "\n")

    def data_received(self, chunk: bytes) -> None:
        self.body.write(chunk)

    def post(self) -> None:
        self.entry["body"] = self.body.getvalue()
        if self.request.path.endswith("/files"):
            status, content_type, body = self.stand_in.files_body
            self.set_status(status)
            self.set_header("Content-Type", content_type)
            self.finish(body)
            return
        self.set_status(202)
        self.set_header("Location", "/jobs/job1")
        self.finish({"id": "job1", "status": "queued"})


class JobHandler(tornado.web.RequestHandler):
    def initialize(self, stand_in: StandIn) -> None:
        self.stand_in = stand_in

    async def get(self, job_id: str) -> None:
        self.stand_in.record(self)
        if self.stand_in.slow_polls > 0:
            self.stand_in.slow_polls -= 1
            await asyncio.sleep(3)
        self.stand_in.polls += 1
        done = min(self.stand_in.polls, self.stand_in.job_polls)
        status = "done" if done >= self.stand_in.job_polls else "running"
        self.finish({"id": job_id, "status": status, "frames_done": done,
                     "frames_total": self.stand_in.job_polls, "fps": 2.5, "eta_s": 1.0, "error": None})

    def delete(self, job_id: str) -> None:
        self.stand_in.record(self)
        self.finish({"id": job_id, "status": "cancelled"})


class MovieHandler(tornado.web.RequestHandler):
    def initialize(self, stand_in: StandIn) -> None:
        self.stand_in = stand_in

    async def get(self, job_id: str) -> None:
        entry = self.stand_in.record(self)
        movie = self.stand_in.movie
        self.set_header("Content-Type", "video/mp4")
        if self.stand_in.break_download:
            self.stand_in.break_download = False
            entry["broken"] = True
            self.set_header("Content-Length", str(len(movie)))
            self.write(movie[: len(movie) // 2])
            await self.flush()
            self.request.connection.stream.close()
            return

        start = 0
        ranges = self.request.headers.get("Range", "")
        if ranges.startswith("bytes=") and ranges.endswith("-"):
            start = int(ranges[len("bytes="):-1])
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{len(movie) - 1}/{len(movie)}")
        self.finish(movie[start:])


@pytest.fixture()
def stand_in(small_movie):
    server = StandIn(small_movie)
    yield server
    server.stop()


def archive_names(body: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body)), mode="r:") as archive:
        return archive.getnames()


# ------------------------------------------------------------------ client against the stand-in


@pytest.mark.server
def test_upload_job_api_streams_chunked_tarball(stand_in, tmp_path):
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), "--field", "p", "--size", SIZE,
                        "--log", "--time-format", "t={time:.2f}", "--token", "secret", str(CAVITY_VTK.parent))

    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == stand_in.movie
    assert leftover_partials(tmp_path) == []

    upload = stand_in.uploads()[0]
    assert upload["path"] == "/jobs"
    assert upload["chunked"] is True
    assert upload["headers"]["Authorization"] == "Bearer secret"
    assert upload["query"] == {"field": "p", "size": SIZE, "log": "1", "time_format": "t={time:.2f}"}
    names = archive_names(upload["body"])
    assert "VTK/cavity_100.vtk" in names
    assert "VTK/movingWall/movingWall_0.vtk" in names


@pytest.mark.server
def test_upload_prints_job_progress(stand_in, tmp_path):
    stand_in.start()
    result = run_upload("--server", stand_in.url, "-o", str(tmp_path / "movie.mp4"), str(CAVITY_VTK))

    assert result.returncode == 0, result.stderr
    assert f"running: 1/{STAND_IN_FRAMES} frames, 2.5 frames/s, ETA 1 s" in result.stderr
    assert f"done: {STAND_IN_FRAMES} frames" in result.stderr
    assert "job job1 queued" in result.stderr


@pytest.mark.server
def test_upload_quiet_deletes_job(stand_in, tmp_path):
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), "--quiet", "--delete-job", str(CAVITY_VTK))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert output.read_bytes() == stand_in.movie
    assert (stand_in.requests[-1]["method"], stand_in.requests[-1]["path"]) == ("DELETE", "/jobs/job1")


@pytest.mark.server
def test_upload_falls_back_to_files_without_chunks(stand_in, tmp_path):
    stand_in.job_api = False
    stand_in.reject_chunked = True
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), "--fps", "5", "--verbose", str(CAVITY_VTK))

    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == stand_in.movie
    # GET /jobs finds no job API, so the archive is never sent to POST /jobs.
    assert "GET /jobs returned 404" in result.stderr
    steps = [(entry["path"], entry["chunked"]) for entry in stand_in.uploads()]
    assert steps == [("/files", True), ("/files", False)]
    assert "the server has no job API" in result.stderr
    assert "the server rejected a chunked upload (HTTP 411" in result.stderr

    final = stand_in.uploads()[-1]
    assert int(final["headers"]["Content-Length"]) == len(final["body"])
    assert final["query"] == {"fps": "5"}
    assert "VTK/cavity_0.vtk" in archive_names(final["body"])
    # Expect: 100-continue lets a streaming handler reject before any body byte is sent.
    assert "POST /files?fps=5: HTTP 411 after 0 body bytes" in result.stderr


@pytest.mark.server
def test_upload_sends_ready_archive(stand_in, tmp_path):
    archive = tmp_path / "VTK.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(CAVITY_VTK, arcname="case/VTK")
    stand_in.start()
    result = run_upload("--server", stand_in.url, "-o", str(tmp_path / "movie.mp4"), str(archive))

    assert result.returncode == 0, result.stderr
    upload = stand_in.uploads()[0]
    assert upload["chunked"] is False
    assert upload["body"] == archive.read_bytes()


@pytest.mark.server
def test_upload_retries_503_with_retry_after(stand_in, tmp_path):
    stand_in.busy = 2
    stand_in.start()
    started = time.monotonic()
    result = run_upload("--server", stand_in.url, "-o", str(tmp_path / "movie.mp4"), str(CAVITY_VTK))

    assert result.returncode == 0, result.stderr
    assert len(stand_in.uploads()) == 3
    assert result.stderr.count("HTTP 503: queue full") == 2
    # Retry-After: 1 on each 503, so at least two seconds pass.
    assert time.monotonic() - started >= 2.0


@pytest.mark.server
def test_upload_retries_timed_out_status_read(stand_in, tmp_path):
    stand_in.slow_polls = 1
    stand_in.start()
    result = run_upload("--server", stand_in.url, "-o", str(tmp_path / "movie.mp4"), "--timeout", "1",
                        str(CAVITY_VTK))

    assert result.returncode == 0, result.stderr
    assert "reading the status of job job1 failed: GET /jobs/job1 failed: timed out; attempt 2 of 10" in result.stderr


@pytest.mark.server
def test_upload_rejects_html_instead_of_movie(stand_in, tmp_path):
    stand_in.job_api = False
    stand_in.files_body = (200, "text/html", b"<html><title>Proxy login</title></html>")
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), str(CAVITY_VTK))

    assert result.returncode == 1
    assert "not an MP4 movie" in result.stderr
    assert not output.exists()
    assert leftover_partials(tmp_path) == []


@pytest.mark.server
def test_upload_4xx_fails_fast_and_mails_reason(stand_in, tmp_path, mail_recorder):
    template, record = mail_recorder
    stand_in.upload_status = (400, "field 'nosuch' not found; fields: p, U")
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), "--field", "nosuch",
                        "--mail", "user@example.org", "--mail-command", template, str(CAVITY_VTK))

    assert result.returncode == 2
    assert "HTTP 400: field 'nosuch' not found; fields: p, U" in result.stderr
    assert len(stand_in.uploads()) == 1
    assert not output.exists()
    mail = json.loads(record.read_text())
    assert mail["argv"] == ["-s", "kvis: rendering cavity failed", "user@example.org"]
    assert "field 'nosuch' not found" in mail["body"]


@pytest.mark.server
def test_upload_401_names_token_option(stand_in, tmp_path):
    stand_in.upload_status = (401, "missing or wrong token: send the header 'Authorization: Bearer <token>'")
    stand_in.start()
    result = run_upload("--server", stand_in.url, "-o", str(tmp_path / "movie.mp4"), str(CAVITY_VTK))

    assert result.returncode == 2
    assert "kvis-upload: error:" in result.stderr
    assert "give the token with --token or KVIS_TOKEN" in result.stderr
    assert "Authorization: Bearer" not in result.stderr


@pytest.mark.server
def test_upload_missing_mail_command_is_error(stand_in, tmp_path):
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), "--mail", "user@example.org",
                        "--mail-command", "no-such-mailer-kvis -s {subject} {address}", str(CAVITY_VTK))

    assert result.returncode == 1
    assert "'no-such-mailer-kvis' not found" in result.stderr
    assert "kvis-upload: error: the movie is saved as" in result.stderr
    assert output.exists()


@pytest.mark.server
def test_upload_resumes_broken_download(stand_in, tmp_path):
    stand_in.break_download = True
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), str(CAVITY_VTK))

    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == stand_in.movie
    downloads = [entry for entry in stand_in.requests if entry["path"].endswith("movie.mp4")]
    assert len(downloads) == 2
    assert downloads[1]["headers"]["Range"] == f"bytes={len(stand_in.movie) // 2}-"


@pytest.mark.server
def test_upload_mails_movie(stand_in, tmp_path, mail_recorder):
    template, record = mail_recorder
    stand_in.start()
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", stand_in.url, "-o", str(output), "--mail", "user@example.org",
                        "--mail-command", template, str(CAVITY_VTK))

    assert result.returncode == 0, result.stderr
    mail = json.loads(record.read_text())
    assert mail["argv"] == ["-a", str(output), "-s", "kvis: movie of cavity", "user@example.org"]
    assert str(output) in mail["body"]


@pytest.mark.server
def test_upload_sigterm_cancels_job(stand_in, tmp_path):
    stand_in.job_polls = 10_000
    stand_in.start()
    command = [sys.executable, str(UPLOAD), "--server", stand_in.url, "-o", str(tmp_path / "movie.mp4"),
               str(CAVITY_VTK)]
    client = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while stand_in.polls == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        client.send_signal(signal.SIGTERM)
        _, stderr = client.communicate(timeout=60)
    finally:
        client.kill()
        client.wait(10)

    assert client.returncode == 1
    assert "stopped by signal" in stderr
    assert [entry["method"] for entry in stand_in.requests if entry["path"] == "/jobs/job1"][-1] == "DELETE"


def test_upload_gives_up_when_server_stays_down(tmp_path):
    port = free_port()
    result = run_upload("--server", f"http://127.0.0.1:{port}", "--max-attempts", "2", "-o",
                        str(tmp_path / "movie.mp4"), str(CAVITY_VTK), timeout=60)

    assert result.returncode == 1
    assert "failed after 2 attempts" in result.stderr
    assert "Connection refused" in result.stderr


@pytest.mark.parametrize("layout, expected_status, expected_message", [
    ("missing", 2, "is not a folder or an archive"),
    ("no_vtk", 2, "no foamToVTK output"),
    ("two_vtk", 2, "several VTK folders"),
    ("no_output_folder", 2, "does not exist: create it first"),
    ("bad_param", 2, "invalid --param"),
    ("bad_mail_command", 2, "invalid --mail-command"),
])
def test_upload_user_errors(tmp_path, layout, expected_status, expected_message):
    case = tmp_path / "case"
    (case / "system").mkdir(parents=True)
    output = tmp_path / "movie.mp4"
    extra: list[str] = []
    if layout == "missing":
        case = tmp_path / "nowhere"
    elif layout == "two_vtk":
        (case / "a" / "VTK").mkdir(parents=True)
        (case / "b" / "VTK").mkdir(parents=True)
    elif layout == "no_output_folder":
        case = CAVITY_VTK
        output = tmp_path / "missing" / "movie.mp4"
    elif layout == "bad_param":
        case, extra = CAVITY_VTK, ["--param", "crf"]
    elif layout == "bad_mail_command":
        case, extra = CAVITY_VTK, ["--mail", "a@b", "--mail-command", "mailx 'unclosed"]

    # Port 9 (discard) is never contacted: each case fails before any request.
    result = run_upload("--server", "http://127.0.0.1:9", "-o", str(output), *extra, str(case), timeout=60)

    assert result.returncode == expected_status
    assert expected_message in result.stderr


def test_upload_finds_vtk_below_case(tmp_path):
    module = load_upload_module()
    nested = tmp_path / "job_42" / "case" / "VTK"
    nested.mkdir(parents=True)

    assert module.find_vtk_folder(str(tmp_path)) == str(nested)
    assert module.find_vtk_folder(str(nested)) == str(nested)
    assert module.case_name(str(nested)) == "case"


def test_upload_mail_command_arguments():
    module = load_upload_module()
    template = "mailx -a {file} -s {subject} {address}"

    with_file = module.build_mail_command(template, "me@x.org", "kvis; rm -rf ~", "/tmp/m.mp4")
    without_file = module.build_mail_command(template, "me@x.org", "failed {address}", None)

    assert with_file == ["mailx", "-a", "/tmp/m.mp4", "-s", "kvis; rm -rf ~", "me@x.org"]
    assert without_file == ["mailx", "-s", "failed {address}", "me@x.org"]


@pytest.mark.parametrize("header, expected", [
    ("3", 3.0),
    (None, None),
    ("soon", None),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
])
def test_upload_retry_after_parsing(header, expected):
    module = load_upload_module()

    assert module.parse_retry_after(header) == expected


def test_upload_movie_check(small_movie, tmp_path):
    module = load_upload_module()
    cases = {
        "complete": small_movie,
        "truncated": small_movie[:-100],
        "html": b"<html><title>502 Bad Gateway</title></html>",
        "empty": b"",
        "no moov": small_movie[:32],
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = tmp_path / (name.replace(" ", "_") + ".mp4")
        paths[name].write_bytes(content)

    module.check_movie(str(paths["complete"]))
    for name, message in [("truncated", "incomplete"), ("html", "not an MP4 movie"), ("empty", "empty file"),
                          ("no moov", "incomplete")]:
        with pytest.raises(module.InvalidMovie, match=message):
            module.check_movie(str(paths[name]))


def test_upload_parses_as_python36():
    source = UPLOAD.read_text()

    ast.parse(source, feature_version=(3, 6))
    assert source.startswith("#!/usr/bin/env python3\n")
    assert os.access(UPLOAD, os.X_OK)
    for newer in ("from __future__ import annotations", "dataclasses", "removeprefix", "removesuffix",
                  "capture_output", "shlex.join", "text=True"):
        assert newer not in source, f"{newer} needs a Python newer than 3.6"


def test_upload_help_runs_from_shebang():
    result = subprocess.run([str(UPLOAD), "--help"], capture_output=True, text=True, timeout=30)

    assert result.returncode == 0
    assert "--mail-command" in result.stdout


# ------------------------------------------------------------------ kvis-render wrapper


def wrapper_environment(tmp_path: Path, gpus: int | None, cores: int, extra: dict[str, str]) -> dict[str, str]:
    """Return a minimal environment whose PATH starts with a fake nproc and nvidia-smi."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    (tools / "nproc").write_text(f"#!/bin/sh\necho {cores}\n")
    # A fake nvidia-smi always comes first on PATH, so a real one cannot change the result.
    listing = "".join(f"echo 'GPU {index}: Test GPU (UUID: GPU-{index})'\n" for index in range(gpus or 0))
    (tools / "nvidia-smi").write_text("#!/bin/sh\n" + listing)
    for tool in tools.iterdir():
        tool.chmod(0o755)

    dump = tmp_path / "print_env.py"
    dump.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "rank = os.environ.get('PMI_RANK', 'single')\n"
        "with open(os.path.join(os.environ['ENV_DUMP_DIR'], rank + '.json'), 'w') as out:\n"
        "    json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, out)\n")
    dump.chmod(0o755)
    return {"PATH": f"{tools}:/usr/bin:/bin", "KVIS_PYTHON": str(dump), "ENV_DUMP_DIR": str(tmp_path), **extra}


RENDER_ENV_CASES = [
    # (name, GPUs that nvidia-smi lists, cores, environment, expected settings)
    ("cpu node, cores / local ranks", None, 48, {"MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "4"},
     {"LP_NUM_THREADS": "12", "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow",
      "VTK_DEFAULT_EGL_DEVICE_INDEX": None}),
    ("slurm cpus per task", None, 48, {"SLURM_CPUS_PER_TASK": "6", "SLURM_LOCALID": "0"},
     {"LP_NUM_THREADS": "6"}),
    ("omp threads", None, 48, {"OMP_NUM_THREADS": "3"}, {"LP_NUM_THREADS": "3"}),
    ("slurm task list", None, 48, {"SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "4(x2),3",
                                   "SLURM_NODEID": "2"}, {"LP_NUM_THREADS": "16"}),
    ("more ranks than cores", None, 2, {"OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "8"},
     {"LP_NUM_THREADS": "1"}),
    ("user threads kept", None, 48, {"LP_NUM_THREADS": "7", "OMP_NUM_THREADS": "3"}, {"LP_NUM_THREADS": "7"}),
    ("display set", None, 48, {"DISPLAY": ":0"}, {"VTK_DEFAULT_OPENGL_WINDOW": None}),
    ("user window kept", None, 48, {"VTK_DEFAULT_OPENGL_WINDOW": "vtkOSOpenGLRenderWindow"},
     {"VTK_DEFAULT_OPENGL_WINDOW": "vtkOSOpenGLRenderWindow"}),
    ("nvidia-smi gpus", 2, 48, {"OMPI_COMM_WORLD_LOCAL_RANK": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"},
     {"VTK_DEFAULT_EGL_DEVICE_INDEX": "1", "LP_NUM_THREADS": "12"}),
    ("kvis gpus count", None, 48, {"SLURM_LOCALID": "6", "KVIS_GPUS": "4"}, {"VTK_DEFAULT_EGL_DEVICE_INDEX": "2"}),
    ("kvis gpus list", 8, 48, {"SLURM_LOCALID": "1", "KVIS_GPUS": "2,3"}, {"VTK_DEFAULT_EGL_DEVICE_INDEX": "3"}),
    ("cuda visible devices", 8, 48, {"PMI_LOCAL_RANK": "4", "CUDA_VISIBLE_DEVICES": "0,1,2"},
     {"VTK_DEFAULT_EGL_DEVICE_INDEX": "1"}),
    ("pjm rank on node", None, 48, {"PLE_RANK_ON_NODE": "5", "KVIS_GPUS": "4"}, {"VTK_DEFAULT_EGL_DEVICE_INDEX": "1"}),
    ("hydra before slurm", 4, 48, {"MPI_LOCALRANKID": "2", "SLURM_LOCALID": "0"},
     {"VTK_DEFAULT_EGL_DEVICE_INDEX": "2"}),
    ("user device kept", 4, 48, {"MPI_LOCALRANKID": "3", "VTK_DEFAULT_EGL_DEVICE_INDEX": "0"},
     {"VTK_DEFAULT_EGL_DEVICE_INDEX": "0"}),
    ("no local rank", 4, 48, {}, {"VTK_DEFAULT_EGL_DEVICE_INDEX": None, "LP_NUM_THREADS": "48"}),
]


@pytest.mark.parametrize("name, gpus, cores, environment, expected", RENDER_ENV_CASES,
                         ids=[case[0] for case in RENDER_ENV_CASES])
def test_render_wrapper_environment(tmp_path, name, gpus, cores, environment, expected):
    env = wrapper_environment(tmp_path, gpus, cores, environment)
    result = subprocess.run([str(RENDER), "VTK", "-o", "movie.mp4", "--field", "p"], env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    dumped = json.loads((tmp_path / "single.json").read_text())
    assert dumped["argv"] == ["-m", "kvis_parallel", "render", "VTK", "-o", "movie.mp4", "--field", "p"]
    for variable, value in expected.items():
        assert dumped["env"].get(variable) == value, variable


def test_render_wrapper_passes_module_arguments_on(tmp_path):
    env = wrapper_environment(tmp_path, None, 4, {})
    result = subprocess.run([str(RENDER), "-m", "kvis_parallel", "inspect", "VTK", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    dumped = json.loads((tmp_path / "single.json").read_text())
    assert dumped["argv"] == ["-m", "kvis_parallel", "inspect", "VTK", "--json"]


def test_render_wrapper_rejects_itself_as_python(tmp_path):
    env = wrapper_environment(tmp_path, None, 4, {"KVIS_PYTHON": str(RENDER)})
    result = subprocess.run([str(RENDER), "VTK"], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "runs kvis-render again" in result.stderr


def test_render_wrapper_rejects_bad_gpu_setting(tmp_path):
    env = wrapper_environment(tmp_path, None, 4, {"SLURM_LOCALID": "0", "KVIS_GPUS": "two"})
    result = subprocess.run([str(RENDER), "VTK"], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "invalid KVIS_GPUS=two" in result.stderr


@pytest.mark.mpi
def test_render_wrapper_sets_each_rank_under_mpiexec(tmp_path):
    require_mpiexec()
    env = wrapper_environment(tmp_path, 2, 8, {})
    result = subprocess.run([str(MPIEXEC), "-n", "2", str(RENDER), "VTK"], env=env, capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    for rank in (0, 1):
        dumped = json.loads((tmp_path / f"{rank}.json").read_text())["env"]
        assert dumped["VTK_DEFAULT_EGL_DEVICE_INDEX"] == str(rank)
        assert dumped["LP_NUM_THREADS"] == "4"


@pytest.mark.mpi
def test_render_wrapper_renders_cavity_with_two_ranks(tmp_path):
    require_mpiexec()
    output = tmp_path / "movie.mp4"
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    env["KVIS_PYTHON"] = sys.executable
    result = subprocess.run([str(MPIEXEC), "-n", "2", str(RENDER), str(CAVITY_VTK), "-o", str(output),
                             "--size", SIZE], env=env, capture_output=True, text=True, timeout=240)

    assert result.returncode == 0, result.stderr
    assert decoded_frames(output) == CAVITY_STEPS


# ------------------------------------------------------------------ job scripts


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=[path.name for path in SHELL_SCRIPTS])
def test_shell_scripts_pass_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("KVIS_REQUIRE_ALL") == "1":
            pytest.fail("shellcheck is not installed and KVIS_REQUIRE_ALL=1")
        pytest.skip("shellcheck is not installed: apt-get install shellcheck")

    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout


def fake_launcher(tmp_path: Path, name: str) -> dict[str, str]:
    """Return an environment whose PATH starts with a ``name`` that prints its arguments."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    launcher = tools / name
    launcher.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    launcher.chmod(0o755)
    return {"PATH": f"{tools}:/usr/bin:/bin", "HOME": str(tmp_path), "KVIS_HOME": str(REPO)}


def test_slurm_template_runs_wrapper_with_srun(tmp_path):
    env = fake_launcher(tmp_path, "srun")
    env.update(SLURM_NTASKS="8", SLURM_JOB_NUM_NODES="1", SLURM_CPUS_PER_TASK="2")
    result = subprocess.run(["bash", str(SHELL_SCRIPTS[1]), "case/VTK", "movie.mp4", "--field", "p"], env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["--cpus-per-task=2", "--cpu-bind=cores", str(RENDER), "case/VTK",
                                              "-o", "movie.mp4", "--field", "p"]


def test_pjm_template_runs_wrapper_with_mpiexec(tmp_path):
    env = fake_launcher(tmp_path, "mpiexec")
    env.update(PJM_MPI_PROC="12", PJM_O_WORKDIR=str(tmp_path), KVIS_INPUT="case/VTK",
               KVIS_OPTIONS="--field p --size 640x480")
    result = subprocess.run(["bash", str(SHELL_SCRIPTS[2])], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["-n", "12", str(RENDER), "case/VTK", "-o", "movie.mp4",
                                              "--field", "p", "--size", "640x480"]


# ------------------------------------------------------------------ client against the real server


def start_real_server(port: int, state_dir: Path, log_path: Path, *extra: str,
                      env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "tornado_app.py"), "--port", str(port), "--address", "127.0.0.1",
               "--state-dir", str(state_dir), "--ranks", "1", *extra]
    log = open(log_path, "w")
    try:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    finally:
        log.close()


def wait_until_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with status {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the server did not answer /healthz within {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()}")


def stop_real_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real_server")
    port = free_port()
    log_path = folder / "server.log"
    process = start_real_server(port, folder / "state", log_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, process, log_path)
        yield url
    finally:
        stop_real_server(process)


@pytest.mark.server
@pytest.mark.slow
def test_real_server_upload_makes_movie(real_server, tmp_path):
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", real_server, "-o", str(output), "--field", "p", "--size", SIZE,
                        str(CAVITY_VTK.parent))

    assert result.returncode == 0, result.stderr
    assert decoded_frames(output) == CAVITY_STEPS
    assert f"done: {CAVITY_STEPS} frames" in result.stderr
    assert "uploaded " in result.stderr
    assert leftover_partials(tmp_path) == []


@pytest.mark.server
@pytest.mark.slow
def test_real_server_invalid_option_fails_fast(real_server, tmp_path, mail_recorder):
    template, record = mail_recorder
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", real_server, "-o", str(output), "--colormap", "nosuch", "--verbose",
                        "--mail", "user@example.org", "--mail-command", template, str(CAVITY_VTK), timeout=60)

    assert result.returncode == 2
    assert "HTTP 400: " in result.stderr
    assert "nosuch" in result.stderr
    # The server rejects the options before the body, so no archive is sent.
    assert "HTTP 400 after 0 body bytes" in result.stderr
    assert not output.exists()
    mail = json.loads(record.read_text())
    assert "nosuch" in mail["body"]
    assert "-a" not in mail["argv"]


@pytest.mark.server
@pytest.mark.slow
def test_real_server_unknown_field_fails(real_server, tmp_path, mail_recorder):
    template, record = mail_recorder
    output = tmp_path / "movie.mp4"
    result = run_upload("--server", real_server, "-o", str(output), "--field", "nosuch", "--size", SIZE,
                        "--mail", "user@example.org", "--mail-command", template, str(CAVITY_VTK))

    # NOTE: exit status 2 needs the job's error kind in GET /jobs/<id>; without it a failed job gives 1.
    assert result.returncode != 0
    assert "field 'nosuch' not found" in result.stderr
    assert not output.exists()
    assert "field 'nosuch' not found" in json.loads(record.read_text())["body"]


@pytest.mark.server
@pytest.mark.slow
def test_real_server_started_after_client(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    output = tmp_path / "movie.mp4"
    command = [sys.executable, str(UPLOAD), "--server", url, "-o", str(output), "--size", SIZE,
               "--max-attempts", "30", "--retry-time", "120", str(CAVITY_VTK)]
    client = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        time.sleep(3)
        server = start_real_server(port, tmp_path / "state", tmp_path / "server.log")
        _, stderr = client.communicate(timeout=CLIENT_TIMEOUT_S)
    finally:
        client.kill()
        client.wait(10)
        if server is not None:
            stop_real_server(server)

    assert client.returncode == 0, stderr
    assert "Connection refused; attempt 2 of 30" in stderr
    assert decoded_frames(output) == CAVITY_STEPS


@pytest.mark.server
@pytest.mark.mpi
@pytest.mark.slow
def test_real_server_runs_jobs_through_wrapper(tmp_path):
    require_mpiexec()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    launcher = f"{shlex.quote(str(MPIEXEC))} -n {{ranks}}"
    server = start_real_server(port, tmp_path / "state", log_path, "--python", str(RENDER), "--launcher", launcher,
                               "--ranks", "2", env={"KVIS_PYTHON": sys.executable, "KVIS_RENDER_VERBOSE": "1"})
    try:
        wait_until_healthy(url, server, log_path)
        output = tmp_path / "movie.mp4"
        result = run_upload("--server", url, "-o", str(output), "--size", SIZE, str(CAVITY_VTK))
    finally:
        stop_real_server(server)

    assert result.returncode == 0, result.stderr + log_path.read_text()
    assert decoded_frames(output) == CAVITY_STEPS
    render_logs = "".join(path.read_text() for path in (tmp_path / "state").rglob("render.log"))
    assert "kvis-render: local rank 0 of 2" in render_logs
    assert "kvis-render: local rank 1 of 2" in render_logs
