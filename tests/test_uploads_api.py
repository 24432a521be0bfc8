"""HTTP tests for ``POST /uploads`` and rendering from an upload id.

Each test talks plain HTTP (urllib) to a real ``tornado_app.py`` started as a
subprocess on a free 127.0.0.1 port with its own state folder and one rank.
Movies are checked by decoding them with PyAV.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from local_server import REPO, Server, start_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

CAVITY_VTK = REPO / "datasets" / "cavity" / "VTK"
CAVITY_STEPS = 11          # datasets/README.md: icoFoam cavity, times 0 to 0.5 s
CAVITY_LAST_TIME = 0.5
JOB_TIMEOUT_S = 240
HTTP_TIMEOUT_S = 60


# ------------------------------------------------------------------ helpers


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
    """Send one HTTP request and return the response, including error statuses."""
    all_headers = {"Accept": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as reply:
            return Response(reply.status, dict(reply.headers), reply.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read())


def multipart_body(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """Encode one file as multipart/form-data, and return the body and its Content-Type."""
    boundary = f"kvis-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/gzip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + data + tail, f"multipart/form-data; boundary={boundary}"


def post_upload(server: Server, data: bytes, filename: str = "VTK.tar.gz") -> Response:
    body, content_type = multipart_body("file", filename, data)
    return request("POST", f"{server.url}/uploads", body, {"Content-Type": content_type})


def make_tar_gz(source: Path, arcname: str) -> bytes:
    """Pack ``source`` as ``arcname`` into a .tar.gz, like ``tar -czf`` on a login node."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(source, arcname=arcname)
    return buffer.getvalue()


def wait_for_job(server: Server, job_id: str) -> dict:
    """Poll GET /jobs/<id> until the job ends, and return its last status object."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        reply = request("GET", f"{server.url}/jobs/{job_id}")
        assert reply.status == 200, f"GET /jobs/{job_id}: {reply.status} {reply.body[:300]!r}"
        job = reply.json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish within {JOB_TIMEOUT_S} s:\n{server.log_tail()}")


def decode_movie(data: bytes) -> tuple[int, int, int]:
    """Decode an MP4 and return (frames, width, height)."""
    frames = 0
    width = height = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            frames += 1
            width, height = frame.width, frame.height
    return frames, width, height


def render_from_upload(server: Server, upload_id: str, **options: str) -> tuple[dict, bytes]:
    """Start a job from an upload, wait for it and return its status and movie bytes."""
    query = urllib.parse.urlencode({"upload": upload_id, **options})
    reply = request("POST", f"{server.url}/jobs?{query}")
    assert reply.status == 202, f"POST /jobs?{query}: {reply.status} {reply.body[:300]!r}"
    job_id = reply.json()["id"]
    assert reply.headers.get("Location", "").endswith(f"/jobs/{job_id}")

    job = wait_for_job(server, job_id)
    assert job["status"] == "done", f"job {job_id} ended {job['status']}: {job.get('error')}\n{server.log_tail()}"

    movie = request("GET", f"{server.url}/jobs/{job_id}/movie.mp4", headers={"Accept": "video/mp4"})
    assert movie.status == 200
    assert movie.headers.get("Content-Type", "").startswith("video/mp4")
    return job, movie.body


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("uploads-api") / "state")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cavity_archive() -> bytes:
    return make_tar_gz(CAVITY_VTK, "VTK")


@pytest.fixture(scope="module")
def cavity_upload(server: Server, cavity_archive: bytes) -> dict:
    reply = post_upload(server, cavity_archive)
    assert reply.status in (200, 201), f"POST /uploads: {reply.status} {reply.body[:300]!r}"
    return reply.json()


# ------------------------------------------------------------------ tests


def test_upload_returns_id_and_summary(cavity_upload: dict) -> None:
    assert isinstance(cavity_upload["id"], str)
    assert cavity_upload["id"]
    summary = cavity_upload["summary"]
    assert summary["steps"] == CAVITY_STEPS
    assert summary["first_time"] == pytest.approx(0.0)
    assert summary["last_time"] == pytest.approx(CAVITY_LAST_TIME)
    assert summary["parts"][0] == "internal"
    assert set(summary["parts"]) == {"internal", "fixedWalls", "movingWall"}


def test_upload_summary_lists_fields(cavity_upload: dict) -> None:
    fields = cavity_upload["summary"]["fields"]
    by_name = {(field["name"], field["association"]): field for field in fields}
    names = {name for name, _ in by_name}
    assert {"p", "U"} <= names

    for (name, association), field in by_name.items():
        assert association in ("point", "cell"), f"{name}: association {association!r}"
        assert len(field["range"]) == 2
    for field in fields:
        low, high = field["range"]
        assert low <= high, f"{field['name']}: range {field['range']}"
    pressure = next(field for field in fields if field["name"] == "p")
    velocity = next(field for field in fields if field["name"] == "U")
    assert pressure["components"] == 1
    assert velocity["components"] == 3


@pytest.fixture(scope="module")
def pressure_render(server: Server, cavity_upload: dict) -> tuple[dict, bytes]:
    return render_from_upload(server, cavity_upload["id"], field="p", size="160x120", fps="10")


def test_render_upload_twice_different_fields(
    server: Server, cavity_upload: dict, pressure_render: tuple[dict, bytes]
) -> None:
    pressure_job, pressure_movie = pressure_render
    velocity_job, velocity_movie = render_from_upload(
        server, cavity_upload["id"], field="U", colormap="plasma", size="160x120", fps="10"
    )

    assert pressure_job["id"] != velocity_job["id"]
    assert decode_movie(pressure_movie) == (CAVITY_STEPS, 160, 120)
    assert decode_movie(velocity_movie) == (CAVITY_STEPS, 160, 120)
    assert pressure_movie != velocity_movie
    assert pressure_job["frames_total"] == CAVITY_STEPS
    assert pressure_job["frames_done"] == CAVITY_STEPS

    poster = request("GET", f"{server.url}/jobs/{velocity_job['id']}/poster.jpg", headers={"Accept": "image/jpeg"})
    assert poster.status == 200
    assert poster.body[:2] == b"\xff\xd8", "poster is not a JPEG"


def test_movie_supports_range_requests(server: Server, pressure_render: tuple[dict, bytes]) -> None:
    job, movie = pressure_render
    reply = request("GET", f"{server.url}/jobs/{job['id']}/movie.mp4", headers={"Range": "bytes=0-99"})
    assert reply.status == 206
    assert reply.body == movie[:100]


def test_upload_id_unknown_is_404(server: Server) -> None:
    unknown = "0123456789abcdef"  # the form of an upload id, but never issued
    reply = request("GET", f"{server.url}/uploads/{unknown}")
    assert reply.status == 404, f"GET /uploads/{unknown}: {reply.status} {reply.body[:300]!r}"

    reply = request("POST", f"{server.url}/jobs?upload={unknown}&field=p&size=160x120")
    assert reply.status == 404, f"POST /jobs: {reply.status} {reply.body[:300]!r}"
    assert unknown.encode() in reply.body

    reply = request("POST", f"{server.url}/jobs?upload=no-such-upload&field=p&size=160x120")
    assert reply.status == 404, f"POST /jobs: {reply.status} {reply.body[:300]!r}"


def test_unknown_field_is_rejected(server: Server, cavity_upload: dict) -> None:
    query = urllib.parse.urlencode({"upload": cavity_upload["id"], "field": "no_such_field", "size": "160x120"})
    reply = request("POST", f"{server.url}/jobs?{query}")

    # NOTE: the server may check the field against the upload's summary (400 at once) or leave
    # it to the renderer (202, then a failed job). Either way the reason names the field.
    if reply.status == 202:
        job = wait_for_job(server, reply.json()["id"])
        assert job["status"] == "failed"
        assert "no_such_field" in job["error"]
        return
    assert reply.status == 400, f"{reply.status} {reply.body[:300]!r}"
    assert b"no_such_field" in reply.body


def _not_gzip() -> bytes:
    return b"this is not an archive\n" * 20


def _truncated(archive: bytes) -> bytes:
    return archive[: len(archive) // 2]


def _tar_without_vtk() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"hello\n"
        info = tarfile.TarInfo("notes/readme.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _gzip_of_text() -> bytes:
    return gzip.compress(b"plain text, not a tar file\n" * 50)


@pytest.mark.parametrize(
    "case",
    ["not gzip", "truncated", "gzip of text", "no VTK files"],
)
def test_bad_archive_is_400(server: Server, cavity_archive: bytes, case: str) -> None:
    data = {
        "not gzip": _not_gzip,
        "truncated": lambda: _truncated(cavity_archive),
        "gzip of text": _gzip_of_text,
        "no VTK files": _tar_without_vtk,
    }[case]()
    reply = post_upload(server, data, filename="bad.tar.gz")
    assert reply.status == 400, f"{case}: {reply.status} {reply.body[:300]!r}"
    assert reply.body.strip(), f"{case}: 400 without a reason"


def test_expired_upload_is_404(tmp_path: Path, cavity_archive: bytes) -> None:
    retention_s = 1.0
    short_lived = start_server(tmp_path / "state", "--retention", "1s", "--cleanup-interval", "0.2s")
    try:
        reply = post_upload(short_lived, cavity_archive)
        assert reply.status in (200, 201), f"POST /uploads: {reply.status} {reply.body[:300]!r}"
        upload_id = reply.json()["id"]

        # Retention counts from the upload's last use. The sleep leaves the cleanup several intervals to run.
        time.sleep(retention_s + 2.0)
        reply = request("GET", f"{short_lived.url}/uploads/{upload_id}")
        assert reply.status == 404, f"GET /uploads/{upload_id}: {reply.status} {reply.body[:300]!r}"

        reply = request("POST", f"{short_lived.url}/jobs?upload={upload_id}&field=p&size=160x120")
        assert reply.status == 404, f"POST /jobs: {reply.status} {reply.body[:300]!r}"
        assert b"expired" in reply.body
    finally:
        short_lived.stop()
