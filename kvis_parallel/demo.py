"""End-to-end demo behind ``make demo``: the curl upload workflow against a local server.

The demo starts ``tornado_app.py`` on a free port of 127.0.0.1 with a
temporary state folder and packs the bundled sample (``datasets/cavity/VTK``)
into a ``.tar.gz``. It uploads that with ``curl -f -F file=@VTK.tar.gz .../files``,
saves the movie under ``out/`` and stops the server. Then it prints the movie's
path, frame count and duration as read back with PyAV. Any failure ends with a message and
exit status 1.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "datasets" / "cavity" / "VTK"
OUTPUT = REPO / "out" / "cavity.mp4"
START_TIMEOUT_S = 60.0
RENDER_TIMEOUT_S = 600


class DemoError(Exception):
    """A demo step failed; the message names the step and the reason."""


def pack_sample(folder: Path, archive: Path) -> None:
    """Write ``folder`` into a gzip-compressed tar, as ``tar -czf VTK.tar.gz VTK`` does."""
    if not folder.is_dir():
        raise DemoError(f"sample data not found at {folder}; create it with datasets/make_foam_samples.sh")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


def start_server(state_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start the server on a free port of 127.0.0.1 and return it with its base URL."""
    command = [sys.executable, str(REPO / "tornado_app.py"), "--port", "0", "--address", "127.0.0.1",
               "--state-dir", str(state_dir)]
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    log.close()

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            raise DemoError(f"the server exited with status {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.1)
    stop_server(process)
    raise DemoError(f"the server did not start within {START_TIMEOUT_S:.0f} s:\n{log_path.read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def upload(url: str, archive: Path, movie: Path) -> None:
    """Run the contract command: ``curl -f -F file=@VTK.tar.gz URL/files > movie.mp4``."""
    curl = shutil.which("curl")
    if curl is None:
        raise DemoError("curl not found; install it (apt-get install curl)")
    movie.parent.mkdir(parents=True, exist_ok=True)
    with open(movie, "wb") as output:
        finished = subprocess.run([curl, "-sS", "-f", "-F", f"file=@{archive}", f"{url}/files"],
                                  stdout=output, stderr=subprocess.PIPE, timeout=RENDER_TIMEOUT_S)
    if finished.returncode != 0:
        movie.unlink(missing_ok=True)
        raise DemoError(f"curl failed with status {finished.returncode}: {finished.stderr.decode().strip()}")


def describe_movie(movie: Path) -> tuple[int, float, int, int]:
    """Decode the movie with PyAV and return (frames, duration in seconds, width, height)."""
    import av

    with av.open(str(movie)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
    if frames == 0:
        raise DemoError(f"{movie} contains no video frames")
    return frames, frames / rate if rate else float("nan"), width, height


def run_demo() -> Path:
    """Run every step and return the path of the movie."""
    with tempfile.TemporaryDirectory(prefix="kvis-demo-") as scratch:
        scratch_dir = Path(scratch)
        archive = scratch_dir / "VTK.tar.gz"
        pack_sample(SAMPLE, archive)
        print(f"packed {SAMPLE} into {archive} ({archive.stat().st_size} bytes)")

        log_path = scratch_dir / "server.log"
        process, url = start_server(scratch_dir / "state", log_path)
        print(f"server started at {url}")
        try:
            started = time.monotonic()
            upload(url, archive, OUTPUT)
            print(f"rendered in {time.monotonic() - started:.1f} s by the contract command "
                  f"curl -f -F file=@VTK.tar.gz {url}/files > {OUTPUT.name}")
        except (DemoError, subprocess.TimeoutExpired) as error:
            print(f"server log:\n{log_path.read_text()}", file=sys.stderr)
            raise DemoError(str(error)) from None
        finally:
            stop_server(process)
    return OUTPUT


def main() -> int:
    """Run the demo; print the movie's path and properties, or the failure."""
    try:
        movie = run_demo()
        frames, duration, width, height = describe_movie(movie)
    except DemoError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    print(f"movie: {movie}")
    print(f"{frames} frames, {duration:.2f} s, {width}x{height}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
