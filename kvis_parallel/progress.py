"""Progress for people and programs, stage timing, and the end-of-run summary.

Three reporters share one interface: a bar on stderr for a terminal, one JSON
object per line on stdout for programs (``--progress json``, read by the
server), and a silent one. Only rank 0 of an MPI job creates a visible
reporter. The other ranks time their stages with :class:`StageClock` and send
their :class:`RankStats` to rank 0 at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import IO, Any

logger = logging.getLogger(__name__)

_IMPORTED = time.monotonic()

# "setup" is the time from the process's start to its render phase that no
# other stage counts: interpreter, imports, MPI start-up, finding the steps,
# and creating the render window.
STAGES = ("setup", "read", "geometry", "render", "readback", "convert", "send", "encode", "wait")
PROGRESS_MODES = ("bar", "json", "none")

# Seconds between two progress updates of the same stage; the last update of a
# stage is always written so a reader sees frames_done == frames_total.
MIN_UPDATE_INTERVAL_S = 0.2


class StageClock:
    """Seconds spent in each stage of one process, summed over time steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``; unknown stage names raise ``KeyError``."""
        self.seconds[stage] += seconds


def process_age_s() -> float:
    """Return the seconds since this process started, or since this module was imported.

    Linux gives the start time in ``/proc/self/stat``. Elsewhere, or when it
    cannot be read, the import of this module is the closest known point.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            # Field 22, counted after the parenthesised command name, which may contain spaces.
            fields = stat.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, IndexError, ValueError, AttributeError):
        return time.monotonic() - _IMPORTED


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # Linux reports KiB, macOS reports bytes.
    if sys.platform == "darwin":
        return peak / 2**20
    return peak / 2**10


@dataclass
class RankStats:
    """Work and resource use of one rank during a render, for the summary."""

    rank: int
    host: str = field(default_factory=socket.gethostname)
    frames: int = 0
    steps_read: int = 0
    cached_steps: int = 0
    peak_rss_mb: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


@dataclass
class RunSummary:
    """The end-of-run summary: printed for people, written as JSON by ``--summary``."""

    frames: int
    ranks: int
    wall_s: float
    encoder: str = "shared"
    size: tuple[int, int] = (0, 0)
    output: str = ""
    per_rank: list[RankStats] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def stages(self) -> dict[str, float]:
        """Seconds per stage, summed over ranks."""
        totals = dict.fromkeys(STAGES, 0.0)
        for stats in self.per_rank:
            for stage, seconds in stats.stages.items():
                totals[stage] = totals.get(stage, 0.0) + seconds
        return totals

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as the JSON object that ``--summary FILE`` writes."""
        per_rank = []
        for stats in self.per_rank:
            entry = asdict(stats)
            entry["peak_rss_mb"] = round(stats.peak_rss_mb, 1)
            entry["stages"] = {stage: round(seconds, 4) for stage, seconds in stats.stages.items()}
            per_rank.append(entry)

        return {
            "frames": self.frames,
            "ranks": self.ranks,
            "wall_s": round(self.wall_s, 4),
            "fps": round(self.fps, 3),
            "encoder": self.encoder,
            "size": list(self.size),
            "output": self.output,
            "stages": {stage: round(seconds, 4) for stage, seconds in self.stages.items()},
            "per_rank": per_rank,
        }

    def format_text(self) -> str:
        """Return a few lines for a person: totals, stage times and memory per rank."""
        lines = [
            f"{self.frames} frames in {self.wall_s:.2f} s ({self.fps:.2f} frames/s) "
            f"on {self.ranks} rank{'s' if self.ranks != 1 else ''}, encoder {self.encoder}",
            "stage seconds summed over ranks: "
            + ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in self.stages.items()),
        ]
        for stats in self.per_rank:
            lines.append(
                f"  rank {stats.rank} on {stats.host}: {stats.frames} frames, "
                f"{stats.steps_read} steps read, peak RSS {stats.peak_rss_mb:.0f} MiB"
            )
        return "\n".join(lines)


class Progress:
    """A reporter that shows nothing; the base of the visible ones."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.stage_name = ""
        self.stage_started = self.started
        self.total = 0
        self.done = 0
        self._last_update = 0.0

    def stage(self, name: str, total: int) -> None:
        """Start stage ``name`` ("discover", "prepass" or "render") of ``total`` items."""
        self._end_stage()
        self.stage_name = name
        self.stage_started = time.monotonic()
        self.total = total
        self.done = 0
        self._last_update = self.stage_started
        self._show(force=True)

    def advance(self, done: int) -> None:
        """Record that ``done`` items of the current stage are finished."""
        if done == self.done:
            return
        self.done = done
        now = time.monotonic()
        if done >= self.total or now - self._last_update >= MIN_UPDATE_INTERVAL_S:
            self._last_update = now
            self._show(force=done >= self.total)

    def finish(self, summary: RunSummary) -> None:
        """End the run successfully with ``summary``."""
        self._end_stage()

    def fail(self, kind: str, message: str) -> None:
        """End the run with an error; ``kind`` is "user" or "bug"."""
        self._end_stage()

    def rates(self) -> tuple[float, float, float | None]:
        """Return (elapsed seconds since the run began, items/s in this stage, ETA in s or None)."""
        now = time.monotonic()
        stage_elapsed = now - self.stage_started
        rate = self.done / stage_elapsed if stage_elapsed > 0 and self.done else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        return now - self.started, rate, eta

    def _show(self, force: bool) -> None:
        pass

    def _end_stage(self) -> None:
        pass


class JsonProgress(Progress):
    """One JSON object per line on ``stream``, flushed per line."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream

    def _write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, allow_nan=False) + "\n")
        self.stream.flush()

    def _record(self, stage: str) -> dict[str, Any]:
        elapsed, rate, eta = self.rates()
        return {
            "stage": stage,
            "frames_done": self.done,
            "frames_total": self.total,
            "elapsed_s": round(elapsed, 3),
            "fps": round(rate, 3),
            "eta_s": round(eta, 3) if eta is not None and math.isfinite(eta) else None,
        }

    def _show(self, force: bool) -> None:
        self._write(self._record(self.stage_name))

    def finish(self, summary: RunSummary) -> None:
        record = self._record("done")
        record["frames_done"] = record["frames_total"] = summary.frames
        record["fps"] = round(summary.fps, 3)
        record["eta_s"] = 0.0
        record["summary"] = summary.to_dict()
        self._write(record)

    def fail(self, kind: str, message: str) -> None:
        self._write({"stage": "error", "kind": kind, "message": message})


class BarProgress(Progress):
    """A one-line bar on a terminal, redrawn in place."""

    WIDTH = 28

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self._drawn = False

    def _show(self, force: bool) -> None:
        _, rate, eta = self.rates()
        filled = int(self.WIDTH * self.done / self.total) if self.total else 0
        bar = "#" * filled + "." * (self.WIDTH - filled)
        unit = "frames" if self.stage_name == "render" else "steps"
        eta_text = _format_duration(eta) if eta is not None else "--:--"
        line = (f"{self.stage_name:<8} [{bar}] {self.done}/{self.total} {unit} "
                f"{rate:5.1f} {unit}/s ETA {eta_text}")
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _end_stage(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def default_progress_mode(stream: IO[str]) -> str:
    """Return "bar" when ``stream`` is a terminal and "none" otherwise."""
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "none"


def make_progress(mode: str, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> Progress:
    """Create the reporter for ``mode``: "bar" (stderr), "json" (stdout) or "none".

    Raises
    ------
    ValueError
        If ``mode`` is not one of :data:`PROGRESS_MODES`.
    """
    if mode == "json":
        return JsonProgress(stdout or sys.stdout)
    if mode == "bar":
        return BarProgress(stderr or sys.stderr)
    if mode == "none":
        return Progress()
    raise ValueError(f"unknown progress mode {mode!r}; choose one of {', '.join(PROGRESS_MODES)}")
