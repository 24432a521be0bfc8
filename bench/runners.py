"""Run one tool on one workload as a separate process tree and measure it.

Three tools make an H.264 MP4 from the same files, field, colour range and
frame size:

- ``kvis`` with N ranks: ``mpiexec -n N python -m kvis_parallel render ...``;
- ``paraview``: ``pvbatch bench/peers/paraview_movie.py`` (PNG frames, under
  ``xvfb-run -a`` when there is no display), then ``ffmpeg -c:v libx264``;
- ``pyvista``: ``python bench/peers/pyvista_movie.py`` (``open_movie`` loop).

The wall time runs from starting the first process to the exit of the last,
so start-up, imports and the encoder's flush all count. Peak memory comes from
``wait4``: the largest resident set of any process in the tree.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .workloads import REPO_ROOT, Workload

logger = logging.getLogger(__name__)

PEERS_DIR = Path(__file__).resolve().parent / "peers"
TOOLS = ("kvis", "paraview", "pyvista")
PEERS = ("paraview", "pyvista")


@dataclass(frozen=True)
class Encoding:
    """libx264 settings shared by every tool, so the encoders do the same work."""

    fps: int = 10
    crf: int = 23
    preset: str = "veryfast"


@dataclass(frozen=True)
class RunSpec:
    """One tool configuration: the tool and, for kvis, its number of ranks."""

    tool: str
    ranks: int = 1

    @property
    def label(self) -> str:
        return f"kvis-{self.ranks}" if self.tool == "kvis" else self.tool


@dataclass
class RunResult:
    """Measurements of one run. ``summary`` is the tool's own JSON summary, if it wrote one."""

    workload: str
    size: str
    tool: str
    ranks: int
    repetition: int
    warmup: bool
    oversubscribed: bool
    ok: bool
    wall_s: float = float("nan")
    frames: int = 0
    peak_rss_mb: float = float("nan")
    cpu_s: float = float("nan")
    error: str | None = None
    summary: dict | None = None
    steps_wall_s: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return RunSpec(self.tool, self.ranks).label

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.ok and self.wall_s > 0 else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RunResult:
        return cls(**values)


def missing_reason(tool: str) -> str | None:
    """Return why ``tool`` cannot run here (with the install hint), or None when it can."""
    if tool == "kvis":
        if importlib.util.find_spec("kvis_parallel.__main__") is None:
            return "kvis_parallel has no command-line entry point (kvis_parallel/__main__.py) yet"
        if _mpiexec() is None:
            return "mpiexec not found; install the mpich wheel (pip install mpich)"
        return None

    if tool == "paraview":
        if shutil.which("pvbatch") is None:
            return "pvbatch not found; install ParaView with: apt-get install -y paraview"
        if shutil.which("ffmpeg") is None:
            return "ffmpeg not found; install it with: apt-get install -y ffmpeg"
        if not os.environ.get("DISPLAY") and shutil.which("xvfb-run") is None:
            return "no display and no xvfb-run for pvbatch; install it with: apt-get install -y xvfb"
        return None

    if tool == "pyvista":
        for module, package in (("pyvista", "pyvista"), ("imageio", "imageio"),
                                ("imageio_ffmpeg", "imageio-ffmpeg")):
            if importlib.util.find_spec(module) is None:
                return f"{module} not importable; install it with: pip install {package}"
        return None

    raise ValueError(f"unknown tool {tool!r}; known tools: {', '.join(TOOLS)}")


def _mpiexec() -> str | None:
    # The mpich wheel installs its mpiexec next to the interpreter; mpi4py is
    # built against that MPI, so prefer it over any system mpiexec.
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def commands(spec: RunSpec, workload: Workload, size: str, encoding: Encoding,
             run_dir: Path, files_list: Path, kvis_options: Sequence[str] = ()) -> list[list[str]]:
    """Build the command lines one run executes, in order; ``kvis_options`` go to kvis only."""
    movie = run_dir / "movie.mp4"
    summary = run_dir / "summary.json"
    range_option = f"--range={workload.range_text}"

    if spec.tool == "kvis":
        return [[
            _mpiexec(), "-n", str(spec.ranks), sys.executable, "-m", "kvis_parallel", "render",
            str(workload.input_dir), "-o", str(movie), "--size", size,
            "--field", workload.field, "--association", workload.association, range_option,
            "--parts", "internal", "--fps", str(encoding.fps), "--crf", str(encoding.crf),
            "--preset", encoding.preset, "--summary", str(summary), *kvis_options,
        ]]

    common = ["--files-from", str(files_list), "--field", workload.field,
              "--association", workload.association, range_option, "--size", size,
              "--dims", str(workload.dims), "--summary", str(summary)]

    if spec.tool == "pyvista":
        return [[sys.executable, str(PEERS_DIR / "pyvista_movie.py"), *common, "-o", str(movie),
                 "--fps", str(encoding.fps), "--crf", str(encoding.crf), "--preset", encoding.preset]]

    frames = run_dir / "frames"
    pvbatch = ["pvbatch", str(PEERS_DIR / "paraview_movie.py"), *common, "--frames", str(frames)]
    if not os.environ.get("DISPLAY"):
        width, height = size.split("x")
        pvbatch = ["xvfb-run", "-a", "-s", f"-screen 0 {width}x{height}x24", *pvbatch]
    ffmpeg = ["ffmpeg", "-v", "error", "-y", "-framerate", str(encoding.fps),
              "-i", str(frames / "frame.%04d.png"), "-c:v", "libx264", "-preset", encoding.preset,
              "-crf", str(encoding.crf), "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(movie)]
    return [pvbatch, ffmpeg]


def execute(spec: RunSpec, workload: Workload, size: str, encoding: Encoding, run_dir: Path,
            files_list: Path, *, repetition: int, warmup: bool, cores: int,
            timeout_s: float, kvis_options: Sequence[str] = (),
            kvis_env: dict[str, str] | None = None) -> RunResult:
    """Run one tool configuration to a finished MP4 and return what was measured.

    ``kvis_options`` are extra command-line options and ``kvis_env`` extra
    environment variables for kvis runs only (for experiments such as
    ``--encoder-rank dedicated`` or ``LP_NUM_THREADS=2``). A failing run is
    returned with ``ok=False`` and the reason, never raised, so one broken
    tool does not end the benchmark.
    """
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    result = RunResult(workload=workload.name, size=size, tool=spec.tool, ranks=spec.ranks,
                       repetition=repetition, warmup=warmup, oversubscribed=spec.ranks > cores,
                       ok=False)

    total = 0.0
    cpu = 0.0
    peak_kb = 0
    options = kvis_options if spec.tool == "kvis" else ()
    env = {**os.environ, **(kvis_env or {})} if spec.tool == "kvis" else None
    for index, command in enumerate(commands(spec, workload, size, encoding, run_dir, files_list, options)):
        name = Path(command[0]).name if index else spec.tool
        try:
            wall, usage, status = run_measured(command, run_dir / f"log-{index}.txt", timeout_s, env)
        except OSError as error:
            result.error = f"could not start {command[0]}: {error}"
            return result
        total += wall
        cpu += usage.ru_utime + usage.ru_stime
        max_rss_kb = usage.ru_maxrss
        peak_kb = max(peak_kb, max_rss_kb)
        result.steps_wall_s[name] = wall
        if status != 0:
            result.error = f"{' '.join(command[:3])}... exited with status {status}: {_log_tail(run_dir / f'log-{index}.txt')}"
            return result

    result.wall_s = total
    result.cpu_s = cpu
    result.peak_rss_mb = peak_kb / 1024
    result.summary = _read_json(run_dir / "summary.json")
    result.frames, problem = check_movie(run_dir / "movie.mp4", workload.steps)
    result.ok = problem is None
    result.error = problem
    return result


def run_measured(command: Sequence[str], log_path: Path, timeout_s: float,
                 env: dict[str, str] | None = None) -> tuple[float, resource.struct_rusage, int]:
    """Run ``command`` and return its wall time (s), resource usage and exit status.

    The usage covers the process and every descendant it waited for: CPU
    seconds are summed over them, and ``ru_maxrss`` (KiB) is the largest peak
    of any one of them.

    The process gets its own session so that a timeout ends the whole tree
    (mpiexec's ranks, Xvfb) and nothing is left running.
    """
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT,
                                   env=env)
        timer = threading.Timer(timeout_s, _kill_group, args=(process.pid,))
        timer.start()
        try:
            # wait4 (Linux) adds the usage of every descendant the child reaped.
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)

    return wall, usage, process.returncode


def _kill_group(pid: int) -> None:
    logger.warning("run timed out; ending process group %d", pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_movie(path: Path, expected_frames: int) -> tuple[int, str | None]:
    """Open the MP4 and return its frame count and a problem (None when it is a complete H.264 movie)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, f"no movie written at {path}"

    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, IndexError) as error:
        return 0, f"movie {path} cannot be read: {error}"

    if codec != "h264":
        return frames, f"movie codec is {codec}, expected h264"
    if frames != expected_frames:
        return frames, f"movie has {frames} frames, expected {expected_frames}"
    return frames, None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _log_tail(path: Path, characters: int = 400) -> str:
    text = path.read_text(errors="replace").strip()
    return text[-characters:].replace("\n", " | ")
