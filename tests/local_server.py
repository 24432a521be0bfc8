"""Start and stop a real kvis server (``tornado_app.py``) on a free loopback port, for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT_S = 60


@dataclass
class Server:
    """A server process started by :func:`start_server`, its base URL and its log file."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server, and kill it when it does not exit within 15 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(state_dir: Path, *extra_args: str) -> Server:
    """Start ``tornado_app.py`` on a free loopback port and wait until /healthz responds."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = state_dir.parent / f"server-{port}.log"

    # KVIS_* variables of the caller (a token, a launcher) must not change the server under test.
    env = {name: value for name, value in os.environ.items() if not name.startswith("KVIS_")}
    # mpiexec from the mpich wheel sits next to the interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    command = [
        sys.executable, str(REPO / "tornado_app.py"),
        "--port", str(port), "--address", "127.0.0.1",
        "--ranks", "1", "--state-dir", str(state_dir), *extra_args,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with status {process.returncode} during start-up:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)

    server.stop()
    pytest.fail(f"server did not respond to /healthz within {SERVER_START_TIMEOUT_S} s:\n{server.log_tail()}")
