"""Fixtures shared by the test modules: sample data, movie decoding, running the CLI.

VTK is not imported here. :func:`configure_offscreen` runs at import, before
any test module imports VTK, so that no test process tries to open an X
display.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kvis_parallel.offscreen import configure_offscreen

_USER_THREADS = os.environ.get("LP_NUM_THREADS")
configure_offscreen()
# The thread count chosen for this one process must not pass to the kvis
# subprocesses, where each MPI rank chooses its own from the ranks per node.
if _USER_THREADS is None:
    os.environ.pop("LP_NUM_THREADS", None)

REPOSITORY = Path(__file__).resolve().parents[1]
DATASETS = REPOSITORY / "datasets"
CAVITY = DATASETS / "cavity" / "VTK"
DAM_BREAK = DATASETS / "damBreak" / "VTK"

# The MPI launcher next to the Python that runs the tests (the mpich wheel's).
MPIEXEC = Path(sys.executable).parent / "mpiexec"

# Seconds any single kvis subprocess may take in the tests before it counts as hung.
RUN_TIMEOUT_S = 120

if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))


@dataclass
class Movie:
    """A movie decoded with PyAV: stream properties and RGB frames in presentation order."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    duration_s: float
    frames: list[np.ndarray]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger back after each test.

    ``cli.main`` run in-process replaces the root handlers with one bound to
    that test's captured stderr. Left in place, later tests would log into a
    closed stream and print "--- Logging error ---" on the real stderr.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def read_movie(path: Path) -> Movie:
    """Decode every frame of ``path`` into ``(H, W, 3)`` uint8 RGB arrays."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        duration = float(stream.duration * stream.time_base) if stream.duration else float("nan")
        return Movie(
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=Fraction(stream.average_rate),
            duration_s=duration,
            frames=frames,
        )


@pytest.fixture
def movie_frames() -> Callable[[Path], Movie]:
    """Return :func:`read_movie`, which decodes a movie file for checks."""
    return read_movie


def require(condition: bool, reason: str) -> None:
    """Skip the test when ``condition`` is false, or fail it under ``KVIS_REQUIRE_ALL=1`` (CI)."""
    if condition:
        return
    if os.environ.get("KVIS_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def cavity() -> Path:
    """The legacy-layout icoFoam cavity sample (11 steps)."""
    require(CAVITY.is_dir(), f"sample data {CAVITY} is missing; run datasets/make_foam_samples.sh")
    return CAVITY


@pytest.fixture
def dam_break() -> Path:
    """The XML-layout interFoam damBreak sample (8 steps, irregular indices)."""
    require(DAM_BREAK.is_dir(), f"sample data {DAM_BREAK} is missing; run datasets/make_foam_samples.sh")
    return DAM_BREAK


@pytest.fixture
def synthetic_series(tmp_path: Path) -> Callable[..., Path]:
    """Return a function that writes a synthetic foamToVTK series and returns its VTK folder.

    Keyword arguments go to ``datasets.synthetic.write_series``; the default
    is a small 2-D case of 200 cells and 4 steps.
    """
    from datasets import synthetic

    def write(name: str = "case", **options: object) -> Path:
        options = {"cells": 200, "steps": 4, "dims": 2, **options}
        return synthetic.write_series(tmp_path / name, **options)

    return write


@pytest.fixture
def vtk_errors():
    """Collect what VTK prints through its output window; fail the test if it printed anything."""
    from vtkmodules.vtkCommonCore import vtkOutputWindow, vtkStringOutputWindow

    output = vtkStringOutputWindow()
    previous = vtkOutputWindow.GetInstance()
    vtkOutputWindow.SetInstance(output)
    yield output
    vtkOutputWindow.SetInstance(previous)
    assert output.GetOutput() == "", f"VTK printed: {output.GetOutput()}"


def kvis_command(args: Sequence[str | os.PathLike], ranks: int | None = None) -> list[str]:
    """Return the argument list that runs ``python -m kvis_parallel ARGS``, under mpiexec with ``ranks``."""
    command = [sys.executable, "-m", "kvis_parallel", *map(str, args)]
    if ranks is None:
        return command
    require(MPIEXEC.exists(), f"{MPIEXEC} is missing; install the mpich wheel")
    return [str(MPIEXEC), "-n", str(ranks), *command]


def run_kvis(args: Sequence[str | os.PathLike], ranks: int | None = None, timeout: float = RUN_TIMEOUT_S,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the kvis CLI in a subprocess and return it, with stdout and stderr as text.

    The command runs in its own process group. After ``timeout`` seconds the
    whole group (mpiexec, its proxies and every rank) is killed and
    ``subprocess.TimeoutExpired`` is raised, so a hung job fails the test and
    leaves no processes behind.
    """
    command = kvis_command(args, ranks)
    full_env = {**os.environ, **(env or {})}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=full_env, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        finally:
            _kill_group_leftovers(process.pid)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_group_leftovers(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def kvis() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Return :func:`run_kvis`, which runs the CLI (optionally under mpiexec) with a timeout."""
    return run_kvis


def last_line(text: str) -> str:
    """Return the last non-empty line of ``text``."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
