"""The HTTP service end to end: a real server subprocess, real curl, real MPI render jobs.

Data stays small: the bundled cavity sample rendered at 160x120 unless a test
is about the default settings. Every wait is bounded, and every server and job
process a test starts is stopped at teardown.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "datasets" / "cavity" / "VTK"
PYTHON = sys.executable
START_TIMEOUT_S = 60.0
# A launcher that runs real mpiexec ranks which only sleep: the job stays
# "running" until it is cancelled, timed out or killed.
SLEEP_LAUNCHER = f"mpiexec -n {{ranks}} {PYTHON} -c 'import time; time.sleep(300)'"


class ServerProcess:
    """A ``tornado_app.py`` child on 127.0.0.1 with its own state folder and log."""

    def __init__(self, state_dir: Path, log_path: Path, *arguments: str, env: dict[str, str] | None = None):
        self.state_dir = state_dir
        self.log_path = log_path
        self.arguments = arguments
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> ServerProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [PYTHON, str(REPO / "tornado_app.py"), "--port", "0", "--address", "127.0.0.1",
                   "--state-dir", str(self.state_dir), *self.arguments]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                            env=self.env, start_new_session=True)

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log()[offset:])
            if match:
                self.url = match.group(1)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with status {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start within {START_TIMEOUT_S} s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 40.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """Send one request with urllib; returns (status, headers, body) for any status."""
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, headers, body = self.request(method, path, **kwargs)
        if headers.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(body)
        return status, body.decode(errors="replace")

    def wait_for_job(self, job_id: str, statuses: tuple[str, ...], timeout: float = 120.0,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, record = self.json("GET", f"/jobs/{job_id}", headers=headers)
            if status == 200 and record["status"] in statuses:
                return record
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach {statuses} within {timeout} s: {record}\n{self.log()}")


def curl(*arguments: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """Run curl quietly with errors shown; returns the completed process (bytes output)."""
    return subprocess.run(["curl", "-sS", *arguments], capture_output=True, timeout=timeout)


def curl_status(url: str, output: Path, *arguments: str, timeout: float = 180.0) -> tuple[int, dict[str, str]]:
    """POST with curl, body to ``output``; returns (HTTP status, response headers)."""
    header_file = output.with_name(output.name + ".headers")
    finished = curl("-o", str(output), "-D", str(header_file), "-w", "%{http_code}", *arguments, url,
                    timeout=timeout)
    headers: dict[str, str] = {}
    if header_file.exists():
        for line in header_file.read_text(errors="replace").splitlines():
            name, separator, value = line.partition(":")
            if separator:
                headers[name.strip().lower()] = value.strip()
    return int(finished.stdout.decode() or 0), headers


def pack(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def tar_with_member(archive: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """Write a .tar.gz with the sample plus one crafted member (absolute path, .., link)."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(SAMPLE, arcname="VTK")
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return archive


def movie_properties(path: Path) -> tuple[int, int, int]:
    """Decode a movie with PyAV and return (frames, width, height)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Return (pid, command line) of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append((int(entry.name), command))
    return found


def wait_until_gone(text: str, timeout: float = 30.0) -> list[tuple[int, str]]:
    """Wait until no process mentions ``text``; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = processes_mentioning(text)
        if not alive:
            return []
        time.sleep(0.2)
    return processes_mentioning(text)


def kill_processes_mentioning(text: str) -> None:
    """Kill leftovers of a failed test, so no process outlives the test run."""
    for pid, _ in processes_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def peak_rss_kib(pid: int) -> int:
    """Return a process's peak resident set size (VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

SMALL = "size=160x120"


@pytest.fixture(scope="module")
def sample_steps() -> int:
    from kvis_parallel.series import discover_series

    return len(discover_series(SAMPLE).steps)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SAMPLE.is_dir():
        pytest.fail(f"sample data missing at {SAMPLE}; run datasets/make_foam_samples.sh")
    return pack(SAMPLE, tmp_path_factory.mktemp("archive") / "VTK.tar.gz")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with a state folder under tmp_path; stop them and any job they left."""
    servers: list[ServerProcess] = []
    state_dir = tmp_path / "state"

    def start(*arguments: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(state_dir, tmp_path / "server.log", *arguments, env=env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    kill_processes_mentioning(str(state_dir))


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server("--ranks", "2")


def test_contract_command(server: ServerProcess, archive: Path, tmp_path: Path, sample_steps: int) -> None:
    movie = tmp_path / "movie.mp4"
    with open(movie, "wb") as output:
        finished = subprocess.run(["curl", "-f", "-F", f"file=@{archive}", f"{server.url}/files"],
                                  stdout=output, stderr=subprocess.PIPE, timeout=240)
    assert finished.returncode == 0, finished.stderr.decode()
    assert movie_properties(movie)[0] == sample_steps


def test_files_response_headers(server: ServerProcess, archive: Path, tmp_path: Path) -> None:
    movie = tmp_path / "movie.mp4"
    status, headers = curl_status(f"{server.url}/files?{SMALL}", movie, "-F", f"file=@{archive}")
    assert status == 200
    assert headers["content-type"] == "video/mp4"
    assert int(headers["content-length"]) == movie.stat().st_size
    assert headers["content-disposition"] == 'attachment; filename="movie.mp4"'


@pytest.mark.parametrize("content_type", [None, "application/gzip", "application/octet-stream"])
def test_files_raw_body(server: ServerProcess, archive: Path, tmp_path: Path, sample_steps: int,
                        content_type: str | None) -> None:
    movie = tmp_path / "movie.mp4"
    extra = ["-H", f"Content-Type: {content_type}"] if content_type else []
    status, _ = curl_status(f"{server.url}/files?{SMALL}", movie, "--data-binary", f"@{archive}", *extra)
    assert status == 200, movie.read_text(errors="replace")
    assert movie_properties(movie) == (sample_steps, 160, 120)


def test_files_raw_tar_body(server: ServerProcess, tmp_path: Path, sample_steps: int) -> None:
    plain = tmp_path / "VTK.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(SAMPLE, arcname="sample/VTK")
    movie = tmp_path / "movie.mp4"
    status, _ = curl_status(f"{server.url}/files?{SMALL}", movie, "--data-binary", f"@{plain}",
                            "-H", "Content-Type: application/x-tar")
    assert status == 200, movie.read_text(errors="replace")
    assert movie_properties(movie)[0] == sample_steps


def test_files_query_options(server: ServerProcess, archive: Path, tmp_path: Path, sample_steps: int) -> None:
    import av

    movie = tmp_path / "movie.mp4"
    query = "field=U&size=200x96&fps=5&colormap=coolwarm_r&view=%2Bz&title=-o%20x&log=0"
    status, _ = curl_status(f"{server.url}/files?{query}", movie, "-F", f"file=@{archive}")
    assert status == 200, movie.read_text(errors="replace")
    assert movie_properties(movie) == (sample_steps, 200, 96)
    with av.open(str(movie)) as container:
        assert container.streams.video[0].average_rate == 5


def test_form_fields_as_options(server: ServerProcess, archive: Path, tmp_path: Path) -> None:
    movie = tmp_path / "movie.mp4"
    status, _ = curl_status(f"{server.url}/files", movie, "-F", "size=176x144", "-F", f"file=@{archive}")
    assert status == 200, movie.read_text(errors="replace")
    assert movie_properties(movie)[1:] == (176, 144)


def bad_archives(folder: Path) -> dict[str, tuple[Path, str]]:
    """Build each kind of bad upload; returns name -> (file, expected words in the reason)."""
    cases: dict[str, tuple[Path, str]] = {}
    folder.mkdir()

    not_gzip = folder / "notes.txt"
    not_gzip.write_text("these are not the files you are looking for\n" * 100)
    cases["not gzip"] = (not_gzip, "not a tar archive")

    whole = pack(SAMPLE, folder / "whole.tar.gz").read_bytes()
    truncated = folder / "truncated.tar.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    cases["truncated"] = (truncated, "truncated")

    empty = folder / "empty.tar.gz"
    empty.write_bytes(b"")
    cases["empty"] = (empty, "empty")

    no_steps_folder = folder / "case"
    no_steps_folder.mkdir()
    (no_steps_folder / "README").write_text("no VTK here\n")
    cases["no time steps"] = (pack(no_steps_folder, folder / "nosteps.tar.gz"), "time step")

    absolute = tarfile.TarInfo(str(folder / "absolute-escape.txt"))
    absolute.size = 5
    cases["absolute path"] = (tar_with_member(folder / "absolute.tar.gz", absolute, b"owned"), "absolute")

    dotdot = tarfile.TarInfo("VTK/../../dotdot-escape.txt")
    dotdot.size = 5
    cases["dot-dot member"] = (tar_with_member(folder / "dotdot.tar.gz", dotdot, b"owned"), "..")

    link = tarfile.TarInfo("VTK/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases["symlink"] = (tar_with_member(folder / "symlink.tar.gz", link), "link")
    return cases


def test_bad_archives_rejected(server: ServerProcess, tmp_path: Path) -> None:
    cases = bad_archives(tmp_path / "bad")
    for name, (path, words) in cases.items():
        reply = tmp_path / f"{path.name}.reply"
        status, headers = curl_status(f"{server.url}/files?{SMALL}", reply, "-F", f"file=@{path}")
        reason = reply.read_text()
        assert status == 400, f"{name}: {status} {reason}"
        assert words in reason, f"{name}: {reason}"
        assert reason.count("\n") == 1, f"{name}: the reason is not one line: {reason!r}"
        assert headers["content-type"].startswith("text/plain"), name

    escaped = [path for path in tmp_path.rglob("*escape.txt")] + list(tmp_path.parent.glob("*escape.txt"))
    assert escaped == []
    assert not (server.state_dir.parent / "dotdot-escape.txt").exists()
    assert list((server.state_dir / "incoming").iterdir()) == []
    assert list((server.state_dir / "jobs").iterdir()) == []
    assert server.json("GET", "/healthz")[1]["ok"] is True


def test_curl_fails_on_bad_archive(server: ServerProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    finished = curl("-f", "-F", f"file=@{bad}", f"{server.url}/files")
    assert finished.returncode == 22
    assert finished.stdout == b""


def test_unknown_field_lists_fields(server: ServerProcess, archive: Path, tmp_path: Path) -> None:
    reply = tmp_path / "reply"
    status, headers = curl_status(f"{server.url}/files?{SMALL}&field=nope", reply, "-F", f"file=@{archive}")
    reason = reply.read_text()
    assert status == 400
    assert "nope" in reason
    assert "p (" in reason
    assert "U (" in reason
    assert "--field" not in reason
    assert str(server.state_dir) not in reason
    assert "x-kvis-job" in headers


@pytest.mark.parametrize("query, words", [
    ("size=abc", "invalid option size:"),
    ("colormap=rainbowish", "colormap"),
    ("fps=0", "fps"),
    ("range=5,1", "range"),
    ("output=%2Fetc%2Fx.mp4", "unknown option 'output'"),
    ("edges=perhaps", "edges"),
])
def test_invalid_option_rejected_before_upload(server: ServerProcess, archive: Path, tmp_path: Path,
                                               query: str, words: str) -> None:
    reply = tmp_path / "reply"
    status, _ = curl_status(f"{server.url}/files?{query}", reply, "-F", f"file=@{archive}")
    assert status == 400
    assert words in reply.read_text()
    assert list((server.state_dir / "jobs").iterdir()) == []


def test_json_errors_when_accepted(server: ServerProcess, tmp_path: Path) -> None:
    status, headers, body = server.request("POST", "/files?size=abc", body=b"x",
                                           headers={"Accept": "application/json"})
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert "invalid option size:" in error
    assert "--size" not in error
    assert "kvis render --help" not in error


@pytest.mark.parametrize("curl_options", [[], ["-H", "Expect:"], ["-H", "Transfer-Encoding: chunked"]],
                         ids=["expect-continue", "no-expect", "chunked"])
def test_oversized_upload_rejected(start_server, tmp_path: Path, curl_options: list[str]) -> None:
    server = start_server("--max-upload", "1M")
    big = tmp_path / "big.tar.gz"
    with open(big, "wb") as file:
        file.write(os.urandom(3 * 2**20))
    reply = tmp_path / "reply"
    status, _ = curl_status(f"{server.url}/files", reply, "-F", f"file=@{big}", *curl_options)
    assert status == 413
    assert "upload too large" in reply.read_text()
    assert "(1 MiB)" in reply.read_text()
    assert server.json("GET", "/healthz")[0] == 200
    assert list((server.state_dir / "incoming").iterdir()) == []


def test_small_limit_message_in_kib(start_server, tmp_path: Path) -> None:
    server = start_server("--max-upload", "100K")
    status, _, body = server.request("POST", "/files", body=bytes(200_000),
                                     headers={"Content-Type": "application/gzip"})
    assert status == 413
    assert "(100 KiB)" in body.decode()
    assert "(0 MiB)" not in body.decode()


def stream_upload(url: str, total_bytes: int, chunk_bytes: int = 1 << 20) -> tuple[int, bytes]:
    """POST a multipart body of ``total_bytes`` zeros generated chunk by chunk; returns (status, body)."""
    parsed = urllib.parse.urlsplit(url)
    boundary = "kvisStreamBoundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.tar\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
    connection.putrequest("POST", parsed.path)
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + total_bytes + len(tail)))
    connection.endheaders()
    connection.send(head)
    chunk = bytes(chunk_bytes)
    sent = 0
    while sent < total_bytes:
        piece = chunk[: min(chunk_bytes, total_bytes - sent)]
        connection.send(piece)
        sent += len(piece)
    connection.send(tail)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_large_upload_memory_flat(start_server, archive: Path, tmp_path: Path) -> None:
    server = start_server("--max-upload", "1G")
    # Warm the server up with one real request so imports and buffers are counted before.
    assert curl_status(f"{server.url}/files?{SMALL}", tmp_path / "warm.mp4", "-F", f"file=@{archive}")[0] == 200
    before = peak_rss_kib(server.pid)

    status, body = stream_upload(f"{server.url}/files", 400 * 2**20)
    after = peak_rss_kib(server.pid)
    print(f"server peak RSS before {before / 1024:.1f} MiB, after a 400 MiB upload {after / 1024:.1f} MiB")

    # 400 MiB of zeros is no tar archive: the server streamed it, tried it and rejected it.
    assert status == 400, body
    assert b"not a tar archive" in body or b"empty" in body, body
    assert after - before < 40 * 1024, f"peak RSS grew by {(after - before) / 1024:.1f} MiB"
    assert list((server.state_dir / "incoming").iterdir()) == []


def test_concurrent_uploads_not_mixed(start_server, archive: Path, tmp_path: Path, sample_steps: int) -> None:
    server = start_server("--max-running", "1", "--backlog", "1", "--ranks", "1")
    requests = [("p", 160, 120), ("U", 176, 144), ("p", 192, 128), ("U", 208, 112), ("p", 224, 96)]

    def upload(index: int) -> tuple[int, dict[str, str], Path]:
        field, width, height = requests[index]
        movie = tmp_path / f"movie{index}.mp4"
        status, headers = curl_status(f"{server.url}/files?field={field}&size={width}x{height}", movie,
                                      "-F", f"file=@{archive}")
        return status, headers, movie

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(upload, range(len(requests))))

    rendered = 0
    for (field, width, height), (status, headers, movie) in zip(requests, results):
        assert status in (200, 503), f"{status}: {movie.read_text(errors='replace')}"
        if status == 503:
            assert int(headers["retry-after"]) > 0
            continue
        rendered += 1
        assert movie_properties(movie) == (sample_steps, width, height)
        job_id = headers["x-kvis-job"]
        assert server.json("GET", f"/jobs/{job_id}")[1]["options"] == {"field": field,
                                                                        "size": f"{width}x{height}"}
    assert rendered >= 2


def test_client_disconnect_cancels_job(start_server, archive: Path) -> None:
    server = start_server("--launcher", SLEEP_LAUNCHER, "--ranks", "2")
    client = subprocess.Popen(["curl", "-sS", "-f", "-F", f"file=@{archive}", f"{server.url}/files"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        jobs: list[dict] = []
        while time.monotonic() < deadline and not any(job["status"] == "running" for job in jobs):
            jobs = server.json("GET", "/jobs")[1]["jobs"]
            time.sleep(0.1)
        assert jobs and jobs[0]["status"] == "running"
        assert len(processes_mentioning(str(server.state_dir))) >= 3  # mpiexec and two ranks
    finally:
        client.kill()
        client.wait(timeout=10)

    record = server.wait_for_job(jobs[0]["id"], ("cancelled",), timeout=30)
    assert record["error"] == "the client disconnected"
    assert wait_until_gone(str(server.state_dir / "jobs")) == []


@pytest.mark.parametrize("pid_recorded", [True, False], ids=["pid-recorded", "pid-missing"])
def test_restart_keeps_finished_fails_running(start_server, archive: Path, tmp_path: Path,
                                              pid_recorded: bool) -> None:
    first = start_server("--ranks", "2")
    status, accepted = first.json("POST", f"/jobs?{SMALL}", body=archive.read_bytes(),
                                  headers={"Content-Type": "application/gzip"})
    assert status == 202
    done = first.wait_for_job(accepted["id"], ("done",))
    first.stop()

    second = start_server("--launcher", SLEEP_LAUNCHER, "--ranks", "2")
    status, sleeping = second.json("POST", "/jobs", body=archive.read_bytes())
    assert status == 202
    second.wait_for_job(sleeping["id"], ("running",))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(processes_mentioning(sleeping["id"])) < 3:
        time.sleep(0.1)
    second.stop(signal.SIGKILL)
    assert len(processes_mentioning(sleeping["id"])) >= 3, "mpiexec and both ranks should outlive the server"
    if not pid_recorded:
        # As if the server died between starting the job and recording its process id.
        record_path = second.state_dir / "jobs" / sleeping["id"] / "job.json"
        record = json.loads(record_path.read_text())
        record["pid"] = record["pid_start_ticks"] = None
        record_path.write_text(json.dumps(record))

    third = start_server("--ranks", "2")
    assert third.json("GET", f"/jobs/{done['id']}")[1]["status"] == "done"
    status, _, movie = third.request("GET", f"/jobs/{done['id']}/movie.mp4")
    assert status == 200
    assert movie[4:8] == b"ftyp"
    failed = third.json("GET", f"/jobs/{sleeping['id']}")[1]
    assert failed["status"] == "failed"
    assert "server restarted while the job was running" in failed["error"]
    assert wait_until_gone(sleeping["id"]) == []


def test_token_required(start_server, archive: Path, tmp_path: Path) -> None:
    token = "s3cret-token-value"
    server = start_server("--token", token, env={"KVIS_TOKEN": "ignored-because-the-flag-wins"})
    reply = tmp_path / "reply"

    assert curl_status(f"{server.url}/files?{SMALL}", reply, "-F", f"file=@{archive}")[0] == 401
    assert curl_status(f"{server.url}/files?{SMALL}", reply, "-F", f"file=@{archive}",
                       "-H", "Authorization: Bearer wrong")[0] == 401
    assert curl_status(f"{server.url}/files?{SMALL}", reply, "--data-binary", f"@{archive}")[0] == 401
    assert server.request("GET", "/jobs")[0] == 401
    assert server.request("GET", "/healthz")[0] == 200

    status, headers = curl_status(f"{server.url}/files?{SMALL}", reply, "-F", f"file=@{archive}",
                                  "-H", f"Authorization: Bearer {token}")
    assert status == 200
    status, _ = curl_status(f"{server.url}/files?{SMALL}", reply, "-F", f"token={token}", "-F", f"file=@{archive}")
    assert status == 200
    status, _ = curl_status(f"{server.url}/files?{SMALL}&token={token}", reply, "--data-binary", f"@{archive}")
    assert status == 200

    job_id = headers["x-kvis-job"]
    assert server.request("GET", f"/jobs/{job_id}/movie.mp4")[0] == 401
    assert server.request("GET", f"/jobs/{job_id}/movie.mp4",
                          headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert token not in server.log()


def test_token_from_environment(start_server, tmp_path: Path) -> None:
    server = start_server(env={"KVIS_TOKEN": "from-env"})
    assert server.request("GET", "/jobs")[0] == 401
    assert server.request("GET", "/jobs", headers={"Authorization": "Bearer from-env"})[0] == 200


def test_movie_range_requests(server: ServerProcess, archive: Path) -> None:
    status, accepted = server.json("POST", f"/jobs?{SMALL}", body=archive.read_bytes())
    assert status == 202
    record = server.wait_for_job(accepted["id"], ("done",))
    movie_url = record["movie"]
    size = record["movie_bytes"]

    status, headers, body = server.request("GET", movie_url, headers={"Range": "bytes=0-99"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 0-99/{size}"
    assert len(body) == 100
    status, _, body = server.request("GET", movie_url, headers={"Range": f"bytes={size + 10}-"})
    assert status == 416
    assert body.decode() == f"requested range not satisfiable: movie.mp4 has {size} bytes; " \
                            f"ask for a range within bytes=0-{size - 1}\n"
    status, _, body = server.request("GET", movie_url, headers={"Range": f"bytes={size + 10}-",
                                                                "Accept": "application/json"})
    assert status == 416
    assert json.loads(body)["status"] == 416
    status, headers, _ = server.request("GET", record["poster"])
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"


def test_job_accepted_with_location(server: ServerProcess, archive: Path) -> None:
    status, headers, body = server.request("POST", f"/jobs?{SMALL}", body=archive.read_bytes())
    assert status == 202
    accepted = json.loads(body)
    assert headers["Location"] == f"/jobs/{accepted['id']}"
    assert accepted["status"] in ("queued", "running")
    record = server.wait_for_job(accepted["id"], ("done",))
    assert record["frames_done"] == record["frames_total"]
    listed = server.json("GET", "/jobs")[1]["jobs"]
    assert [job["id"] for job in listed] == [accepted["id"]]


def test_upload_then_two_jobs(server: ServerProcess, archive: Path, sample_steps: int) -> None:
    status, upload = server.json("POST", "/uploads", body=archive.read_bytes())
    assert status == 201, upload
    assert upload["summary"]["steps"] == sample_steps
    assert {field["name"] for field in upload["summary"]["fields"]} >= {"p", "U"}

    movies = {}
    for field in ("p", "U"):
        status, accepted = server.json("POST", f"/jobs?upload={upload['id']}&field={field}&{SMALL}")
        assert status == 202, accepted
        record = server.wait_for_job(accepted["id"], ("done",))
        movies[field] = server.request("GET", record["movie"])[2]
    assert movies["p"] != movies["U"]
    assert server.json("GET", f"/uploads/{upload['id']}")[0] == 200


@pytest.mark.parametrize("endpoint", ["/jobs", "/files"])
@pytest.mark.parametrize("upload_id", ["0123456789abcdef", "..%2f..%2fetc", "not-an-id"])
def test_unknown_upload_is_404(server: ServerProcess, endpoint: str, upload_id: str) -> None:
    status, reply = server.json("POST", f"{endpoint}?upload={upload_id}", headers={"Accept": "application/json"})
    assert status == 404
    assert "not found" in reply["error"]
    assert list((server.state_dir / "jobs").iterdir()) == []
    assert server.json("GET", "/healthz")[1]["uploads_in_progress"] == 0


@pytest.mark.parametrize("query, words", [
    ("field=nope", ["field 'nope' not found", "p (cell", "U ("]),
    ("field=p&component=y", ["no y component", "component=mag"]),
    ("parts=internal,lid", ["part 'lid' not found", "movingWall"]),
])
def test_upload_job_checks_field_at_once(server: ServerProcess, archive: Path, query: str,
                                         words: list[str]) -> None:
    status, upload = server.json("POST", "/uploads", body=archive.read_bytes())
    assert status == 201, upload
    status, reply = server.json("POST", f"/jobs?upload={upload['id']}&{query}&{SMALL}",
                                headers={"Accept": "application/json"})
    assert status == 400, reply
    for word in words:
        assert word in reply["error"]
    assert list((server.state_dir / "jobs").iterdir()) == []


def test_user_error_kind_without_rank_prefix(server: ServerProcess, archive: Path) -> None:
    status, accepted = server.json("POST", f"/jobs?field=nope&{SMALL}", body=archive.read_bytes())
    assert status == 202, accepted
    record = server.wait_for_job(accepted["id"], ("failed",))
    assert record["error_kind"] == "user"
    assert "nope" in record["error"]
    assert not record["error"].startswith("rank 0 of")
    assert not list((server.state_dir / "jobs" / accepted["id"]).glob("input"))


def test_job_time_limit_kills_group(start_server, archive: Path, tmp_path: Path) -> None:
    server = start_server("--launcher", SLEEP_LAUNCHER, "--ranks", "2", "--job-timeout", "3")
    status, accepted = server.json("POST", "/jobs", body=archive.read_bytes())
    assert status == 202
    record = server.wait_for_job(accepted["id"], ("failed",), timeout=60)
    assert "time limit of 3 s" in record["error"]
    assert wait_until_gone(accepted["id"]) == []

    reply = tmp_path / "reply"
    assert curl_status(f"{server.url}/files", reply, "-F", f"file=@{archive}")[0] == 504


def test_delete_cancels_running_job(start_server, archive: Path) -> None:
    server = start_server("--launcher", SLEEP_LAUNCHER, "--ranks", "1")
    accepted = server.json("POST", "/jobs", body=archive.read_bytes())[1]
    server.wait_for_job(accepted["id"], ("running",))
    status, headers, body = server.request("DELETE", f"/jobs/{accepted['id']}")
    record = json.loads(body)
    assert status == 200
    assert headers["X-Kvis-Job"] == accepted["id"]
    assert record["status"] == "cancelled"
    assert record["error_kind"] is None
    assert record["error"] == f"cancelled by DELETE /jobs/{accepted['id']}"
    assert record["stage"] != "error"
    assert server.wait_for_job(accepted["id"], ("cancelled",), timeout=30)["status"] == "cancelled"
    assert wait_until_gone(accepted["id"]) == []
    assert not (server.state_dir / "jobs" / accepted["id"] / "input").exists()

    status, record = server.json("DELETE", f"/jobs/{accepted['id']}")
    assert (status, record["status"]) == (200, "deleted")
    assert not (server.state_dir / "jobs" / accepted["id"]).exists()
    assert server.json("DELETE", f"/jobs/{accepted['id']}")[0] == 404


def test_second_server_on_state_dir_exits(start_server, archive: Path) -> None:
    first = start_server("--launcher", SLEEP_LAUNCHER, "--ranks", "1")
    accepted = first.json("POST", "/jobs", body=archive.read_bytes())[1]
    first.wait_for_job(accepted["id"], ("running",))

    second = subprocess.run(
        [PYTHON, str(REPO / "tornado_app.py"), "--port", "0", "--address", "127.0.0.1",
         "--state-dir", str(first.state_dir)],
        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert second.returncode == 2, second.stderr
    assert f"state folder {first.state_dir} is in use by another kvis server (PID {first.pid})" in second.stderr
    assert "give each server its own --state-dir" in second.stderr

    record = first.json("GET", f"/jobs/{accepted['id']}")[1]
    assert record["status"] == "running"
    assert processes_mentioning(accepted["id"]) != []


def test_job_killed_by_signal_not_bug(start_server, archive: Path) -> None:
    server = start_server("--launcher", "sh -c 'kill -KILL $$'")
    accepted = server.json("POST", "/jobs", body=archive.read_bytes())[1]
    record = server.wait_for_job(accepted["id"], ("failed",), timeout=60)
    assert "renderer killed by signal 9 (SIGKILL)" in record["error"]
    assert record["error_kind"] is None


def test_bogus_launcher_reason_names_error(start_server, archive: Path) -> None:
    server = start_server("--launcher", "mpiexec --no-such-option -n {ranks}")
    accepted = server.json("POST", "/jobs", body=archive.read_bytes())[1]
    record = server.wait_for_job(accepted["id"], ("failed",), timeout=60)
    assert "launcher command exited with status" in record["error"]
    assert "unrecognized argument" in record["error"]
    assert "-----" not in record["error"]
    assert "--help" not in record["error"]


def test_job_header_on_job_responses(server: ServerProcess, archive: Path) -> None:
    status, headers, body = server.request("POST", f"/jobs?{SMALL}", body=archive.read_bytes())
    job_id = json.loads(body)["id"]
    assert status == 202
    assert headers["X-Kvis-Job"] == job_id
    record = server.wait_for_job(job_id, ("done",))

    for path in (f"/jobs/{job_id}", record["movie"], record["poster"]):
        status, headers, _ = server.request("GET", path)
        assert status == 200, path
        assert headers.get("X-Kvis-Job") == job_id, path


def two_case_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(SAMPLE, arcname="a/VTK")
        tar.add(SAMPLE, arcname="b/VTK")
    return path


def archive_without_steps(path: Path) -> Path:
    data = b"no VTK files here\n"
    member = tarfile.TarInfo("case/readme.txt")
    member.size = len(data)
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data))
    return path


@pytest.mark.parametrize("endpoint", ["/jobs", "/uploads", "/files"])
def test_archive_errors_name_archive_paths(server: ServerProcess, tmp_path: Path, endpoint: str) -> None:
    cases = {
        "two cases": (two_case_archive(tmp_path / "two.tar.gz"), ["a/VTK, b/VTK", "put only one of them"]),
        "no steps": (archive_without_steps(tmp_path / "none.tar.gz"), ["no time steps found under the archive"]),
    }
    for name, (path, words) in cases.items():
        status, reply = server.json("POST", endpoint, body=path.read_bytes(),
                                    headers={"Accept": "application/json"})
        assert status == 400, (name, reply)
        for word in words:
            assert word in reply["error"], (name, reply)
        assert str(server.state_dir) not in reply["error"], (name, reply)
        assert "INPUT" not in reply["error"], (name, reply)


@pytest.mark.parametrize("endpoint, words", [
    ("/uploads", ["the request body is empty; send the archive with curl -F file=@VTK.tar.gz or --data-binary"]),
    ("/jobs", ["the request body is empty", "upload=<id>"]),
    ("/files", ["the request body is empty", "upload=<id>"]),
])
def test_empty_body_explained(server: ServerProcess, endpoint: str, words: list[str]) -> None:
    status, reply = server.json("POST", endpoint, body=b"", headers={"Accept": "application/json"})
    assert status == 400, reply
    for word in words:
        assert word in reply["error"]


def test_wrong_form_field_named(server: ServerProcess, archive: Path, tmp_path: Path) -> None:
    reply = tmp_path / "reply"
    status, _ = curl_status(f"{server.url}/jobs", reply, "-F", f"other=@{archive}")
    assert status == 400
    assert "missing form field 'file' (got 'other')" in reply.read_text()


def test_method_not_allowed_has_allow(server: ServerProcess) -> None:
    for path, allowed in (("/files", "POST"), ("/healthz", "GET"), ("/uploads", "POST")):
        status, headers, body = server.request("PUT", path, body=b"x")
        assert status == 405, path
        assert headers["Allow"] == allowed, path
        assert body.decode().count("\n") == 1, body
        assert f"use {allowed}" in body.decode(), body


def test_view_plus_as_space_hint(server: ServerProcess) -> None:
    status, reply = server.json("POST", "/jobs?view=+z", headers={"Accept": "application/json"})
    assert status == 400
    assert "URL-encode + as %2B (view=%2Bz)" in reply["error"]


def test_uploads_reject_render_options(server: ServerProcess, archive: Path, tmp_path: Path) -> None:
    status, reply = server.json("POST", "/uploads?field=nope", body=archive.read_bytes(),
                                headers={"Accept": "application/json"})
    assert status == 400
    assert "render options go with POST /jobs?upload=<id>" in reply["error"]
    assert "field=nope" in reply["error"]

    form_reply = tmp_path / "reply"
    status, _ = curl_status(f"{server.url}/uploads", form_reply, "-F", "field=p", "-F", f"file=@{archive}")
    assert status == 400
    assert "render options go with POST /jobs?upload=<id>" in form_reply.read_text()
    assert list((server.state_dir / "uploads").iterdir()) == []


def test_upload_component_checks_default_field(server: ServerProcess, archive: Path) -> None:
    status, upload = server.json("POST", "/uploads", body=archive.read_bytes())
    assert status == 201, upload
    status, reply = server.json("POST", f"/jobs?upload={upload['id']}&component=x",
                                headers={"Accept": "application/json"})
    assert status == 400, reply
    assert "the default field 'p'" in reply["error"]
    assert list((server.state_dir / "jobs").iterdir()) == []


def test_queue_full_answers_503(start_server, archive: Path) -> None:
    server = start_server("--launcher", SLEEP_LAUNCHER, "--ranks", "1", "--backlog", "1")
    first = server.json("POST", "/jobs", body=archive.read_bytes())
    second = server.json("POST", "/jobs", body=archive.read_bytes())
    status, headers, body = server.request("POST", "/jobs", body=archive.read_bytes())
    assert (first[0], second[0]) == (202, 202)
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert b"queue is full" in body
    health = server.json("GET", "/healthz")[1]
    assert health["jobs"] == {"running": 1, "queued": 1}


def test_retention_deletes_old_movies(start_server, archive: Path) -> None:
    server = start_server("--retention", "1", "--cleanup-interval", "0.2")
    accepted = server.json("POST", f"/jobs?{SMALL}", body=archive.read_bytes())[1]
    server.wait_for_job(accepted["id"], ("done",))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.request("GET", f"/jobs/{accepted['id']}")[0] != 404:
        time.sleep(0.2)
    assert server.request("GET", f"/jobs/{accepted['id']}")[0] == 404
    assert not (server.state_dir / "jobs" / accepted["id"]).exists()


def test_quota_deletes_oldest_movies(start_server, archive: Path) -> None:
    server = start_server("--quota", "1K", "--cleanup-interval", "0.2")
    accepted = server.json("POST", f"/jobs?{SMALL}", body=archive.read_bytes())[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.request("GET", f"/jobs/{accepted['id']}")[0] != 404:
        time.sleep(0.1)
    assert not (server.state_dir / "jobs" / accepted["id"]).exists()
    assert f"job {accepted['id']} done" in server.log()
    assert "over its quota" in server.log()


def test_inputs_deleted_when_job_ends(server: ServerProcess, archive: Path) -> None:
    accepted = server.json("POST", f"/jobs?{SMALL}", body=archive.read_bytes())[1]
    server.wait_for_job(accepted["id"], ("done",))
    folder = server.state_dir / "jobs" / accepted["id"]
    assert not (folder / "input").exists()
    assert (folder / "movie.mp4").is_file()
    assert json.loads((folder / "job.json").read_text())["status"] == "done"


@pytest.mark.parametrize("path", ["/nothing", "/jobs/0123456789abcdef", "/jobs/../etc/passwd",
                                  "/static/../settings.py"])
def test_unknown_paths_404(server: ServerProcess, path: str) -> None:
    finished = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", server.url + path)
    assert finished.stdout.decode() in ("404", "403")


def test_index_page_served(server: ServerProcess) -> None:
    from kvis_parallel.server.app import STATIC_DIR

    status, headers, body = server.request("GET", "/")
    if not (STATIC_DIR / "index.html").exists():
        assert status == 404
        return
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert body == (STATIC_DIR / "index.html").read_bytes()


def test_sigterm_cancels_running_jobs(start_server, archive: Path) -> None:
    server = start_server("--launcher", SLEEP_LAUNCHER, "--ranks", "2")
    accepted = server.json("POST", "/jobs", body=archive.read_bytes())[1]
    server.wait_for_job(accepted["id"], ("running",))
    server.stop(signal.SIGTERM)
    assert server.process is not None and server.process.returncode == 0
    assert wait_until_gone(accepted["id"]) == []

    record = json.loads((server.state_dir / "jobs" / accepted["id"] / "job.json").read_text())
    assert record["status"] == "cancelled"
    assert "server stopped" in record["error"]


def test_renderer_crash_is_500_with_job_id(start_server, archive: Path, tmp_path: Path) -> None:
    crash = "{python} -c 'import sys; print(\"Traceback: boom\", file=sys.stderr); sys.exit(1)'"
    server = start_server("--launcher", crash)
    reply = tmp_path / "reply"
    status, headers = curl_status(f"{server.url}/files", reply, "-F", f"file=@{archive}")
    reason = reply.read_text()
    assert status == 500
    job_id = headers["x-kvis-job"]
    assert job_id in reason
    assert "internal error" in reason
    assert f"job {job_id}" in server.log()
    record = server.json("GET", f"/jobs/{job_id}")[1]
    assert record["status"] == "failed"
    assert record["error_kind"] == "bug"


def test_disconnect_mid_upload_cleans_up(server: ServerProcess) -> None:
    parsed = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.putrequest("POST", "/files")
    connection.putheader("Content-Type", "application/gzip")
    connection.putheader("Content-Length", str(50 * 2**20))
    connection.endheaders()
    connection.send(bytes(2**20))

    incoming = server.state_dir / "incoming"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not list(incoming.iterdir()):
        time.sleep(0.05)
    assert list(incoming.iterdir()), "the upload should be streaming to a file"
    connection.close()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and list(incoming.iterdir()):
        time.sleep(0.05)
    assert list(incoming.iterdir()) == []
    health = server.json("GET", "/healthz")[1]
    assert health["jobs"] == {"running": 0, "queued": 0}
    assert health["uploads_in_progress"] == 0


def test_oversized_stream_memory_flat(start_server, tmp_path: Path) -> None:
    server = start_server("--max-upload", "64M")
    assert server.request("GET", "/healthz")[0] == 200
    before = peak_rss_kib(server.pid)

    # curl -T - streams stdin with chunked encoding, so neither side keeps the body in memory.
    reply = tmp_path / "reply"
    client = subprocess.Popen(["curl", "-sS", "-T", "-", "-X", "POST", "-o", str(reply), "-w", "%{http_code}",
                               "-H", "Content-Type: application/gzip", f"{server.url}/files"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdin is not None
    chunk = bytes(2**20)
    sent = 0
    try:
        for _ in range(400):
            client.stdin.write(chunk)
            sent += len(chunk)
        client.stdin.close()
    except BrokenPipeError:
        pass
    status, _ = client.communicate(timeout=60)
    after = peak_rss_kib(server.pid)
    print(f"sent {sent / 2**20:.0f} MiB; server peak RSS before {before / 1024:.1f} MiB, "
          f"after {after / 1024:.1f} MiB")

    assert status.decode() == "413"
    assert "upload too large" in reply.read_text()
    assert after - before < 40 * 1024, f"peak RSS grew by {(after - before) / 1024:.1f} MiB"
    assert server.json("GET", "/healthz")[1]["uploads_in_progress"] == 0
    assert list((server.state_dir / "incoming").iterdir()) == []


def test_stalled_upload_closed(start_server) -> None:
    server = start_server("--upload-idle-timeout", "1")
    parsed = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.putrequest("POST", "/files")
    connection.putheader("Content-Length", str(10 * 2**20))
    connection.endheaders()
    connection.send(bytes(2**16))

    started = time.monotonic()
    reply = connection.sock.recv(4096)
    waited = time.monotonic() - started
    connection.close()
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b"upload timed out" in reply
    assert waited < 10
    assert list((server.state_dir / "incoming").iterdir()) == []
    assert server.json("GET", "/healthz")[1]["uploads_in_progress"] == 0
    assert "no data for" in server.log()


def test_trickled_body_closed(start_server) -> None:
    server = start_server("--upload-idle-timeout", "2")
    parsed = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.putrequest("POST", "/files")
    connection.putheader("Content-Type", "application/gzip")
    connection.putheader("Content-Length", str(2**20))
    connection.endheaders()

    # One byte a second never leaves the connection idle for 2 s, but it is
    # far below the minimum rate, so it must not hold a queue place.
    started = time.monotonic()
    reply = b""
    connection.sock.settimeout(1.0)
    while time.monotonic() - started < 20 and not reply:
        try:
            connection.sock.sendall(b"x")
            reply = connection.sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
    connection.close()
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 10
    assert server.json("GET", "/healthz")[1]["uploads_in_progress"] == 0
    assert list((server.state_dir / "incoming").iterdir()) == []


def test_trickled_headers_closed(start_server) -> None:
    server = start_server("--upload-idle-timeout", "2")
    parsed = urllib.parse.urlsplit(server.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=1.0) as sock:
        sock.sendall(b"POST /files HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 20 and not closed:
            try:
                sock.sendall(b"X")
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed
        assert time.monotonic() - started < 10


def raw_exchange(server: ServerProcess, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection and return everything until the server closes it."""
    parsed = urllib.parse.urlsplit(server.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_multipart_without_boundary_leaves_nothing(server: ServerProcess) -> None:
    request = (b"POST /files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Content-Type: multipart/form-data\r\nContent-Length: 3\r\n\r\nabc")
    for _ in range(5):
        reply = raw_exchange(server, request)
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert b"no boundary" in reply
    assert list((server.state_dir / "incoming").iterdir()) == []


def test_oversized_part_headers_rejected(server: ServerProcess, archive: Path) -> None:
    boundary = "kvisXYZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
            f"X-Padding: {'a' * 40_000}\r\n\r\n").encode() + archive.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, _, reply = server.request("POST", "/files", body=body,
                                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 400
    assert b"headers exceed" in reply
    assert list((server.state_dir / "jobs").iterdir()) == []


def test_static_errors_are_one_line(server: ServerProcess) -> None:
    reply = raw_exchange(server, b"GET /static/..%2f..%2fapp.py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"<html>" not in body
    assert body.count(b"\n") == 1


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def current_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


BAD_REQUESTS = {
    "no boundary": b"POST /files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Type: multipart/form-data\r\nContent-Length: 3\r\n\r\nabc",
    "no file field": b"POST /files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 61\r\n\r\n"
                     b"--B\r\nContent-Disposition: form-data; name=field\r\n\r\np\r\n--B--\r\n",
    "not an archive": b"POST /files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Type: application/gzip\r\nContent-Length: 10\r\n\r\n0123456789",
    "bad chunk": b"POST /files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nab\r\n0\r\n\r\n",
    "bad option": b"POST /files?size=99999x99999 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: 0\r\n\r\n",
    "unknown upload": b"POST /jobs?upload=0123456789abcdef HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Length: 0\r\n\r\n",
    "too large": b"POST /files HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 99999999999\r\n\r\n",
}


def test_bad_requests_leak_nothing(start_server) -> None:
    server = start_server("--max-upload", "1M")
    for request in BAD_REQUESTS.values():
        raw_exchange(server, request)
    fds_before, rss_before = open_fds(server.pid), current_rss_kib(server.pid)

    rounds = 30
    for _ in range(rounds):
        for name, request in BAD_REQUESTS.items():
            reply = raw_exchange(server, request)
            assert re.match(rb"HTTP/1.1 4\d\d ", reply), (name, reply[:200])
            assert b"Traceback" not in reply
    assert b"missing form field 'file'" in raw_exchange(server, BAD_REQUESTS["no file field"])
    time.sleep(0.5)
    fds_after, rss_after = open_fds(server.pid), current_rss_kib(server.pid)
    print(f"{rounds * len(BAD_REQUESTS)} bad requests: fds {fds_before} -> {fds_after}, "
          f"RSS {rss_before} -> {rss_after} KiB")

    assert fds_after <= fds_before
    assert rss_after - rss_before < 8 * 1024
    assert list((server.state_dir / "incoming").iterdir()) == []
    assert list((server.state_dir / "jobs").iterdir()) == []
    assert server.json("GET", "/healthz")[1]["uploads_in_progress"] == 0
    assert "Traceback" not in server.log()


def test_sigterm_mid_upload_is_503(start_server) -> None:
    server = start_server()
    parsed = urllib.parse.urlsplit(server.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10.0) as sock:
        sock.sendall(b"POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip\r\n"
                     b"Content-Length: 10000000\r\n\r\n" + bytes(2**20))
        incoming = server.state_dir / "incoming"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not list(incoming.iterdir()):
            time.sleep(0.05)

        server.stop()
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 503 "), reply[:300]
    assert b"server is stopping" in reply
    assert b"Retry-After: 60" in reply
    assert list(incoming.iterdir()) == []


def many_files_archive(path: Path, count: int) -> Path:
    """Write the sample plus ``count`` one-byte files, an archive that takes seconds to extract."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(SAMPLE, arcname="VTK")
        for index in range(count):
            info = tarfile.TarInfo(f"junk/{index // 1000}/{index}.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def test_disconnect_during_extraction_cleans_up(start_server, tmp_path: Path) -> None:
    server = start_server("--max-running", "1", "--backlog", "1")
    body = many_files_archive(tmp_path / "many.tar.gz", 20_000).read_bytes()
    parsed = urllib.parse.urlsplit(server.url)
    incoming = server.state_dir / "incoming"
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30.0) as sock:
        sock.sendall(b"POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(incoming.glob("*/input")):
            time.sleep(0.01)
        assert list(incoming.glob("*/input")), "extraction should have started"

    # The queue place stays taken until the extraction ends, so clients that
    # disconnect cannot pile up extractions.
    in_progress = server.json("GET", "/healthz")[1]["uploads_in_progress"]
    if list(incoming.glob("*/input")):
        assert in_progress == 1

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and list(incoming.iterdir()):
        time.sleep(0.1)
    assert list(incoming.iterdir()) == []
    assert list((server.state_dir / "jobs").iterdir()) == []
    assert server.json("GET", "/healthz")[1]["uploads_in_progress"] == 0
    assert "disconnected during extraction" in server.log()
