"""Server settings: command-line flags with environment-variable defaults.

Every option has a flag and a ``KVIS_*`` environment variable; a flag wins
over the variable, and the variable over the built-in default. Sizes accept
the suffixes K, M, G and T (powers of 1024), durations s, m, h and d.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_LAUNCHER = "mpiexec -n {ranks}"
DEFAULT_MAX_RANKS = 8

_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with; see ``docs/server.md``."""

    port: int = 8080
    address: str = ""
    ranks: int = 1
    launcher: str = DEFAULT_LAUNCHER
    python: str = sys.executable
    state_dir: Path = Path("kvis-state")
    token: str | None = None
    max_upload_bytes: int = 8 * 2**30
    max_running: int = 1
    backlog: int = 8
    job_timeout_s: float = 3600.0
    inspect_timeout_s: float = 120.0
    upload_idle_timeout_s: float = 120.0
    retention_s: float = 86400.0
    quota_bytes: int = 50 * 2**30
    cleanup_interval_s: float = 60.0
    max_members: int = 100_000
    max_extracted_bytes: int = 20 * 2**30
    max_ratio: float = 200.0
    log_level: str = "info"

    @property
    def listens_beyond_loopback(self) -> bool:
        """Whether the bind address can be reached from other machines."""
        return self.address not in ("127.0.0.1", "::1", "localhost")


def parse_size(text: str) -> int:
    """Parse a byte count such as ``500M`` or ``8G`` (powers of 1024).

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is not a whole number with an optional K, M, G or T suffix.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: give bytes with an optional K, M, G or T suffix, e.g. 8G")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def format_bytes(count: int) -> str:
    """Format a byte count in the largest binary unit that keeps it at 1 or more, e.g. ``1.5 MiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value /= 1024
    else:
        unit = "TiB"
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text} {unit}"


def parse_duration(text: str) -> float:
    """Parse a duration such as ``90``, ``30m`` or ``24h`` into seconds.

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is not a number with an optional s, m, h or d suffix.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: give seconds or a number with s, m, h or d, e.g. 30m")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[unit]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid whole number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: give 1 or more")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: give 0 (any free port) to 65535")
    return value


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """Return ``$XDG_STATE_HOME/kvis-server``, or ``~/.local/state/kvis-server``."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kvis-server"


def default_ranks() -> int:
    """Return the number of CPU cores, at most ``DEFAULT_MAX_RANKS``.

    Process start-up and the single encoder limit what more ranks gain on
    short movies, so the default stops at a few ranks. Set ``--ranks`` for
    larger nodes.
    """
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_RANKS))


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Build the argument parser, taking defaults from ``KVIS_*`` variables."""
    parser = argparse.ArgumentParser(
        prog="kvis-server",
        description="HTTP service that renders uploaded foamToVTK archives into MP4 movies.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def option(flag: str, variable: str, default: object, help: str, type=str) -> None:
        raw = environ.get(variable)
        value = default if raw in (None, "") else raw
        parser.add_argument(flag, default=value, type=type, help=f"{help} [env {variable}]")

    option("--port", "KVIS_PORT", "8080", "TCP port; 0 picks a free one", _port)
    option("--address", "KVIS_ADDRESS", "", "bind address; empty means all interfaces")
    option("--ranks", "KVIS_RANKS", str(default_ranks()), "MPI ranks per job", _positive_int)
    option("--launcher", "KVIS_LAUNCHER", DEFAULT_LAUNCHER,
           "command prefix that starts a job; placeholders {ranks}, {python}, {job}, {workdir}")
    option("--python", "KVIS_PYTHON", sys.executable, "Python interpreter the job runs")
    option("--state-dir", "KVIS_STATE_DIR", str(default_state_dir(environ)),
           "folder for uploads, job records and movies", Path)
    option("--token", "KVIS_TOKEN", None, "shared token required on writes and job reads")
    option("--max-upload", "KVIS_MAX_UPLOAD", "8G", "maximum request body size", parse_size)
    option("--max-running", "KVIS_MAX_RUNNING", "1", "jobs rendering at once", _positive_int)
    option("--backlog", "KVIS_BACKLOG", "8", "jobs waiting to run before new ones get 503", _positive_int)
    option("--job-timeout", "KVIS_JOB_TIMEOUT", "1h", "time limit per job", parse_duration)
    option("--inspect-timeout", "KVIS_INSPECT_TIMEOUT", "2m", "time limit for inspecting an upload",
           parse_duration)
    option("--upload-idle-timeout", "KVIS_UPLOAD_IDLE_TIMEOUT", "2m",
           "close an upload that sends no data for this long", parse_duration)
    option("--retention", "KVIS_RETENTION", "24h", "how long finished movies and uploads are kept",
           parse_duration)
    option("--quota", "KVIS_QUOTA", "50G", "state folder size above which the oldest results go",
           parse_size)
    option("--cleanup-interval", "KVIS_CLEANUP_INTERVAL", "1m", "how often retention and quota are checked",
           parse_duration)
    option("--max-members", "KVIS_MAX_MEMBERS", "100000", "maximum files and folders in an archive",
           _positive_int)
    option("--max-extracted", "KVIS_MAX_EXTRACTED", "20G", "maximum uncompressed archive size", parse_size)
    option("--max-ratio", "KVIS_MAX_RATIO", "200", "maximum uncompressed/compressed size ratio", float)
    option("--log-level", "KVIS_LOG_LEVEL", "info", "debug, info, warning or error")
    return parser


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and ``KVIS_*`` variables into :class:`Settings`.

    Exits with status 2 and a usage message when an option is invalid, like
    any argparse program.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)

    if args.max_ratio <= 1:
        parser.error(f"invalid --max-ratio {args.max_ratio}: give a number above 1")
    if args.log_level.lower() not in ("debug", "info", "warning", "error"):
        parser.error(f"invalid --log-level {args.log_level!r}: choose debug, info, warning or error")

    return Settings(
        port=args.port,
        address=args.address,
        ranks=args.ranks,
        launcher=args.launcher,
        python=args.python,
        state_dir=args.state_dir.expanduser().resolve(),
        token=args.token or None,
        max_upload_bytes=args.max_upload,
        max_running=args.max_running,
        backlog=args.backlog,
        job_timeout_s=args.job_timeout,
        inspect_timeout_s=args.inspect_timeout,
        upload_idle_timeout_s=max(args.upload_idle_timeout, 1.0),
        retention_s=args.retention,
        quota_bytes=args.quota,
        cleanup_interval_s=max(args.cleanup_interval, 0.1),
        max_members=args.max_members,
        max_extracted_bytes=args.max_extracted,
        max_ratio=args.max_ratio,
        log_level=args.log_level.lower(),
    )
