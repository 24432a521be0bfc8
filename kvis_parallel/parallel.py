"""The MPI job: pre-pass, dynamic hand-out of time steps, ordered frames to one encoder.

Steps are numbered 0..n-1 in time order. The job runs in two phases, both
driven by rank 0 as a small dispatcher that hands out one step at a time:

1. Pre-pass. Ranks read their steps, extract the drawn surface, and report the
   finite range of the field and the bounds. One ``Allreduce`` combines them
   into a single colour range and camera for the whole movie. Surfaces that
   fit under the memory budget stay in memory, and the dispatcher gives such
   a step to the rank that keeps it when the step is near the front, so most
   steps are read once.
2. Render. Each rank renders whole frames, converts them to yuv420p and sends
   each frame to rank 0 as one numpy buffer, tagged with the step number.
   Rank 0 receives frames within a fixed reorder window, encodes them in time
   order and, with few ranks, renders its own share in between.

Frames travel with ``Issend``, the non-blocking form of ``Ssend``: a rank
renders its next frame while the last one waits for rank 0, and it holds at
most :data:`MAX_FRAMES_IN_FLIGHT` unreceived frames, which is the flow
control. Control messages (step requests, assignments, failure reports) use a
duplicate of the communicator, so they never match a frame's tag.

A failure on any rank is sent to rank 0, which names the rank, host, step file
and reason and ends the whole job with ``MPI_Abort``. If rank 0 does not
react within :data:`FAILURE_GRACE_S`, the failing rank reports and aborts
itself. A rank that dies without a word is seen by the launcher, which ends
the others (Hydra from the mpich wheel does).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mpi4py import MPI

from .errors import EXIT_BUG, EXIT_USER_ERROR, FieldError, UserError
from .progress import Progress, RankStats, RunSummary, StageClock, peak_rss_mb
from .scene import Scene
from .series import TimeSeries, TimeStep

logger = logging.getLogger(__name__)

ENCODER_MODES = ("auto", "dedicated", "shared")

# With this many ranks or more, "auto" gives rank 0 to the encoder alone, so
# it serves requests and receives frames without waiting for its own renders.
# NOTE: a first estimate, from render times of 50-100 ms per 720p frame on
# llvmpipe against about 5 ms to encode one; the benchmarks should set it.
DEDICATED_ENCODER_MIN_RANKS = 5

# Frames a render rank may have sent but not yet had received by rank 0.
MAX_FRAMES_IN_FLIGHT = 2

# Memory for rank 0's reorder window of yuv420p frames.
REORDER_WINDOW_BYTES = 256 * 2**20
MIN_REORDER_WINDOW = 2

# Fraction of the node's available memory that the ranks of a node may use,
# together, to keep surfaces from the pre-pass until they are rendered.
SURFACE_CACHE_FRACTION = 0.25

# Seconds a failing rank waits for rank 0 to end the job before ending it itself.
FAILURE_GRACE_S = 10.0

# Seconds between writing the error and calling MPI_Abort (see abort_job).
ABORT_OUTPUT_DELAY_S = 0.5

# Sleep between polls of an idle rank, doubling up to the maximum. Rank 0
# serves many ranks and encodes, so it may sleep longer than a waiting renderer.
POLL_SLEEP_MIN_S = 0.0002
POLL_SLEEP_MAX_S = 0.01
WORKER_SLEEP_MAX_S = 0.002

# Step requests each rank keeps open. Rank 0 answers only between its own
# frames in the shared mode, so with one open request a rank that renders as
# fast as rank 0 would often wait for its next step.
REQUESTS_AHEAD = 2

TAG_REQUEST = 1
TAG_ASSIGN = 2
TAG_FAILURE = 3
NO_MORE_STEPS = -1

# Fault injection for tests only: the rank that handles this step number in the
# render phase raises an error ("K"), or exits at once without a word ("K:exit").
FAIL_STEP_VARIABLE = "KVIS_TEST_FAIL_STEP"


@dataclass(frozen=True)
class RenderJob:
    """Everything a render needs, the same on every rank.

    ``scene.field`` must be resolved (see :func:`resolve_field`). ``cache_mb``
    is the memory this rank may use for pre-pass surfaces; None chooses it
    from the node's available memory, 0 turns the cache off.
    """

    series: TimeSeries
    scene: Scene
    output: Path
    frames_dir: Path | None = None
    poster: Path | None = None
    encoder: str = "auto"
    cache_mb: float | None = None


class JobFailure(Exception):
    """A failure of one rank, already described with its rank, host and step.

    ``kind`` is "user" (bad input, exit status 2) or "bug" (exit status 1).
    ``details`` contains the traceback of a bug.
    """

    def __init__(self, kind: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details

    @property
    def exit_status(self) -> int:
        return EXIT_USER_ERROR if self.kind == "user" else EXIT_BUG


@dataclass
class _Context:
    """This rank's communicators and the timers it fills in."""

    world: MPI.Comm
    control: MPI.Comm
    frames: MPI.Comm
    clock: StageClock = field(default_factory=StageClock)
    stats: RankStats | None = None
    surface_loader: object | None = None

    @property
    def rank(self) -> int:
        return self.world.Get_rank()

    @property
    def size(self) -> int:
        return self.world.Get_size()

    def frame_tag(self, step_index: int) -> int:
        """Return the message tag of a step's frame: the step number, wrapped at MPI_TAG_UB.

        The standard guarantees tags up to 32767 only. Frames in flight span at
        most the reorder window plus a few steps per rank, so wrapping stays
        unambiguous.
        """
        # NOTE: with a bound of 32767 that holds up to a few thousand ranks;
        # MPICH's bound is 2**29 - 1.
        return step_index % (self.world.Get_attr(MPI.TAG_UB) + 1)


# --- Set-up --------------------------------------------------------------------


def encoder_mode(requested: str, ranks: int) -> str:
    """Return "shared" (rank 0 also renders) or "dedicated" (rank 0 only encodes).

    Raises
    ------
    UserError
        If ``requested`` is not one of :data:`ENCODER_MODES`.
    """
    if requested not in ENCODER_MODES:
        raise UserError(f"invalid --encoder-rank {requested!r}: choose one of {', '.join(ENCODER_MODES)}")
    if ranks == 1:
        return "shared"
    if requested == "auto":
        return "dedicated" if ranks >= DEDICATED_ENCODER_MIN_RANKS else "shared"
    return requested


def reorder_window(ranks: int, frame_bytes: int) -> int:
    """Return how many frames rank 0 may hold out of order, within :data:`REORDER_WINDOW_BYTES`."""
    wanted = max(8, 4 * ranks)
    affordable = max(MIN_REORDER_WINDOW, REORDER_WINDOW_BYTES // max(1, frame_bytes))
    return min(wanted, affordable)


def default_cache_bytes(local_ranks: int) -> int:
    """Return this rank's share of :data:`SURFACE_CACHE_FRACTION` of the node's available memory."""
    available = _available_memory_bytes()
    return int(available * SURFACE_CACHE_FRACTION / max(1, local_ranks))


def _available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # NOTE: without /proc/meminfo (not Linux) the budget is a guess of 1 GiB per node.
    return 2**30


def resolve_field(series: TimeSeries, scene: Scene) -> Scene:
    """Return ``scene`` with ``field`` and ``association`` fixed for every step.

    Without a field, the first field of the first step that is not an id
    array is chosen. A given field must exist in the first or the last step:
    foamToVTK writes the initial time with fewer fields (damBreak has no ``p``
    at t = 0), and steps without the field are drawn in the NaN colour.

    Raises
    ------
    FieldError
        If the field is in neither the first nor the last step (the message
        lists the fields that exist), there is no field to choose, or a part
        is missing.
    StepReadError
        If the first or last step cannot be read.
    """
    from . import reader

    try:
        return reader.resolve_field(series.steps[0], scene)
    except FieldError:
        if scene.field is None or len(series.steps) == 1:
            raise
    return reader.resolve_field(series.steps[-1], scene)


# --- Failures ------------------------------------------------------------------


class SetupFailed(Exception):
    """Raised on ranks other than 0 when rank 0 failed to set the job up and has reported why."""

    def __init__(self, status: int) -> None:
        super().__init__(f"rank 0 failed to set up the job (exit status {status})")
        self.status = status


def share_from_root(context: _Context, make: Callable[[], object]) -> object:
    """Run ``make`` on rank 0 and broadcast its result to every rank.

    When ``make`` raises on rank 0, the exception propagates there and the
    other ranks raise :class:`SetupFailed` with the exit status, so that all
    ranks end cleanly and only rank 0 reports.
    """
    if context.rank != 0:
        failed, value = context.world.bcast(None, root=0)
        if failed:
            raise SetupFailed(value)
        return value

    try:
        value = make()
    except UserError:
        context.world.bcast((True, EXIT_USER_ERROR), root=0)
        raise
    except BaseException:
        context.world.bcast((True, EXIT_BUG), root=0)
        raise
    context.world.bcast((False, value), root=0)
    return value


def describe_failure(context: _Context, step: TimeStep | None, error: BaseException) -> str:
    """Return "rank r of n on HOST: time step LABEL (FILE): reason" for an error while handling ``step``.

    The rank is left out for a single process, and for rank 0 outside a step
    because such an error concerns the whole job. The file is left out when
    the reason already names it.
    """
    reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    parts = []
    if context.size > 1 and (step is not None or context.rank != 0):
        parts.append(f"rank {context.rank} of {context.size} on {MPI.Get_processor_name()}")
    if step is not None:
        step_file = str(step.first_file())
        parts.append(f"time step {step.label}" if step_file in reason else f"time step {step.label} ({step_file})")
    parts.append(reason)
    return ": ".join(parts)


def failure_from(context: _Context, step: TimeStep | None, error: BaseException) -> JobFailure:
    """Wrap ``error`` raised on this rank while handling ``step`` (None outside a step)."""
    if isinstance(error, JobFailure):
        return error
    kind = "user" if isinstance(error, UserError) else "bug"
    details = "" if kind == "user" else "".join(traceback.format_exception(error))
    return JobFailure(kind, describe_failure(context, step, error), details)


def report_failure_to_root(context: _Context, kind: str, message: str, details: str = "") -> None:
    """Send a failure to rank 0 and wait for it to end the job; end it here if it does not.

    Called on ranks other than 0. It does not return: either rank 0 aborts the
    job, or after :data:`FAILURE_GRACE_S` this rank writes the error itself and
    calls ``MPI_Abort``.
    """
    request = context.control.isend((kind, message, details), dest=0, tag=TAG_FAILURE)
    deadline = time.monotonic() + FAILURE_GRACE_S
    while time.monotonic() < deadline:
        request.Test()
        time.sleep(0.05)

    logger.error("rank 0 did not end the job within %.0f s; ending it from rank %d",
                 FAILURE_GRACE_S, context.rank)
    sys.stderr.write(f"kvis: error: {message}\n")
    abort_job(context.world, EXIT_USER_ERROR if kind == "user" else EXIT_BUG)


def abort_job(comm: MPI.Comm, status: int) -> None:
    """End every rank of ``comm`` with exit status ``status``; does not return.

    MPICH prints an "application called MPI_Abort" line on stderr. It is sent
    to /dev/null here so that the error line written before stays the last.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    # The launcher forwards this rank's output through pipes and stops reading
    # them once the abort reaches it, so the error line could be lost without
    # this pause. NOTE: a delay, not a guarantee; 0.5 s sufficed in repeated
    # runs with the mpich wheel's Hydra on a loaded machine.
    time.sleep(ABORT_OUTPUT_DELAY_S)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    comm.Abort(status)
    os._exit(status)


def _check_fault_injection(step_index: int) -> None:
    value = os.environ.get(FAIL_STEP_VARIABLE)
    if not value:
        return
    number, _, mode = value.partition(":")
    if int(number) != step_index:
        return
    if mode == "exit":
        os._exit(EXIT_BUG)
    raise RuntimeError(f"fault injected by {FAIL_STEP_VARIABLE}={value}")


# --- Dispatching steps -----------------------------------------------------------


class Dispatcher:
    """Rank 0's hand-out of step numbers: the lowest free step, or a nearby one already in memory.

    A rank that keeps a step's surface from the pre-pass gets that step when
    it is at most ``lookahead`` steps above the lowest free one. No step is
    ever handed out further ahead than that. So a frame that a rank waits to
    send is at most ``lookahead`` steps beyond the step rank 0 needs next,
    and a reorder window larger than ``lookahead`` can always receive it, so
    the protocol cannot deadlock (the callers keep ``lookahead`` below the window).
    """

    def __init__(self, steps: Sequence[int], cached: dict[int, Sequence[int]] | None = None,
                 lookahead: int = 0) -> None:
        self._steps = sorted(steps)
        self._assigned = dict.fromkeys(self._steps, False)
        self._lowest = 0
        self._cached = {rank: deque(sorted(held)) for rank, held in (cached or {}).items()}
        self.lookahead = lookahead
        self.owner: dict[int, int] = {}

    def _lowest_free(self) -> int:
        while self._lowest < len(self._steps) and self._assigned[self._steps[self._lowest]]:
            self._lowest += 1
        return self._steps[self._lowest] if self._lowest < len(self._steps) else NO_MORE_STEPS

    def peek(self, rank: int) -> int:
        """Return the step that :meth:`take` would give ``rank``, or :data:`NO_MORE_STEPS`."""
        lowest = self._lowest_free()
        held = self._cached.get(rank)
        while held and self._assigned[held[0]]:
            held.popleft()
        if held and held[0] <= lowest + self.lookahead:
            return held[0]
        return lowest

    def take(self, rank: int) -> int:
        """Assign the next step to ``rank`` and return it, or :data:`NO_MORE_STEPS`."""
        step = self.peek(rank)
        if step != NO_MORE_STEPS:
            self._assigned[step] = True
            self.owner[step] = rank
        return step


class _ControlServer:
    """Rank 0's side of the control messages: reply to step requests, raise reported failures."""

    def __init__(self, context: _Context, dispatcher: Dispatcher) -> None:
        self.context = context
        self.dispatcher = dispatcher
        self._endings: dict[int, int] = {}
        self._status = MPI.Status()
        self._reply = np.zeros(1, dtype=np.int64)

    @property
    def all_finished(self) -> bool:
        """Whether every other rank has received NO_MORE_STEPS for all its open requests."""
        finished = [rank for rank, count in self._endings.items() if count == REQUESTS_AHEAD]
        return len(finished) == self.context.size - 1

    def poll(self) -> bool:
        """Handle every waiting control message; return whether there was any."""
        handled = False
        control = self.context.control
        while control.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=self._status):
            handled = True
            source, tag = self._status.Get_source(), self._status.Get_tag()
            if tag == TAG_FAILURE:
                kind, message, details = control.recv(source=source, tag=TAG_FAILURE)
                raise JobFailure(kind, message, details)

            control.Recv([np.empty(1, dtype=np.int64), MPI.INT64_T], source=source, tag=TAG_REQUEST)
            step = self.dispatcher.take(source)
            if step == NO_MORE_STEPS:
                self._endings[source] = self._endings.get(source, 0) + 1
            self._reply[0] = step
            control.Send([self._reply, MPI.INT64_T], dest=source, tag=TAG_ASSIGN)
        return handled


def wait_with_sleep(requests: Sequence[MPI.Request]) -> None:
    """Wait for ``requests`` to complete, sleeping between tests.

    MPICH's blocking waits poll without sleeping, which takes a core from
    the renderers and the encoder when ranks share a node's cores.
    """
    sleep = POLL_SLEEP_MIN_S
    while not MPI.Request.Testall(list(requests)):
        time.sleep(sleep)
        sleep = min(sleep * 2, WORKER_SLEEP_MAX_S)


def _assigned_steps(context: _Context) -> Iterator[int]:
    """Yield the steps rank 0 assigns to this rank, keeping REQUESTS_AHEAD requests open.

    Once the steps run out, rank 0 replies NO_MORE_STEPS to every open
    request. All these replies are received before returning, so that none is
    left to be mistaken for a reply in the next phase.
    """
    request = np.zeros(1, dtype=np.int64)
    reply = np.zeros(1, dtype=np.int64)
    for _ in range(REQUESTS_AHEAD):
        context.control.Send([request, MPI.INT64_T], dest=0, tag=TAG_REQUEST)

    endings = 0
    while endings < REQUESTS_AHEAD:
        with context.clock.measure("wait"):
            wait_with_sleep([context.control.Irecv([reply, MPI.INT64_T], source=0, tag=TAG_ASSIGN)])
        step = int(reply[0])
        if step == NO_MORE_STEPS:
            endings += 1
            continue
        # Request another step now, so a reply is waiting when this one is done.
        context.control.Send([request, MPI.INT64_T], dest=0, tag=TAG_REQUEST)
        yield step


def _serve_until_done(server: _ControlServer, work_here: Callable[[], bool],
                      done: Callable[[], bool], clock: StageClock) -> None:
    """Run rank 0's loop: handle control messages and do local work until ``done()``."""
    sleep = POLL_SLEEP_MIN_S
    while not done():
        busy = server.poll()
        busy = work_here() or busy
        if busy:
            sleep = POLL_SLEEP_MIN_S
            continue
        with clock.measure("wait"):
            time.sleep(sleep)
        sleep = min(sleep * 2, POLL_SLEEP_MAX_S)


# --- Pre-pass --------------------------------------------------------------------


@dataclass
class _PrepassResult:
    """Ranges, bounds and problem steps that one rank found in the pre-pass."""

    low: float = np.inf
    high: float = -np.inf
    low_positive: float = np.inf
    bounds: np.ndarray = field(default_factory=lambda: np.array([np.inf, -np.inf] * 3))
    empty_steps: list[str] = field(default_factory=list)
    nan_steps: list[str] = field(default_factory=list)

    def add(self, label: str, values: np.ndarray | None, bounds: Sequence[float] | None) -> None:
        if bounds is None:
            self.empty_steps.append(label)
        else:
            self.bounds[0::2] = np.minimum(self.bounds[0::2], bounds[0::2])
            self.bounds[1::2] = np.maximum(self.bounds[1::2], bounds[1::2])

        if values is None:
            return
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            self.nan_steps.append(label)
            return
        self.low = min(self.low, float(finite.min()))
        self.high = max(self.high, float(finite.max()))
        positive = finite[finite > 0]
        if positive.size:
            self.low_positive = min(self.low_positive, float(positive.min()))


class SurfaceCache:
    """Surfaces kept from the pre-pass for the render phase, within a byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._surfaces: dict[int, object] = {}

    def offer(self, step_index: int, surface: object) -> bool:
        """Keep ``surface`` if it fits in the remaining budget; return whether it was kept."""
        size = surface.GetActualMemorySize() * 1024
        if self.used_bytes + size > self.budget_bytes:
            return False
        self._surfaces[step_index] = surface
        self.used_bytes += size
        return True

    def pop(self, step_index: int) -> object | None:
        """Remove and return the surface of ``step_index``, or None if it is not kept.

        Surfaces of lower steps are dropped too: the dispatcher gives a rank
        a step above one it holds only after another rank took that one.
        """
        for older in [step for step in self._surfaces if step < step_index]:
            self._discard(older)
        return self._discard(step_index)

    def _discard(self, step_index: int) -> object | None:
        surface = self._surfaces.pop(step_index, None)
        if surface is not None:
            self.used_bytes -= surface.GetActualMemorySize() * 1024
        return surface

    @property
    def steps(self) -> list[int]:
        return sorted(self._surfaces)


def _timed_surface_loader(clock: StageClock) -> object:
    """Return a reader.SurfaceLoader that adds its file reading time to the "read" stage."""
    from . import reader

    class TimedSurfaceLoader(reader.SurfaceLoader):
        def read_parts(self, step: TimeStep, parts: Sequence[str]) -> object:
            with clock.measure("read"):
                return super().read_parts(step, parts)

    return TimedSurfaceLoader()


def _timed_frame_renderer(clock: StageClock, *args: object, **kwargs: object) -> object:
    """Return a render.FrameRenderer that adds its pixel read-back time to the "readback" stage."""
    from . import render

    class TimedFrameRenderer(render.FrameRenderer):
        def read_pixels(self) -> np.ndarray:
            with clock.measure("readback"):
                return super().read_pixels()

    return TimedFrameRenderer(*args, **kwargs)


class _StepLoader:
    """Read steps into surfaces on this rank, timing reading and surface extraction apart.

    One loader serves both phases of a rank, so the reader's reuse of an
    unchanged mesh's surface carries over from the pre-pass to rendering.
    """

    def __init__(self, job: RenderJob, context: _Context) -> None:
        from . import reader

        self.reader = reader
        self.job = job
        self.context = context
        if context.surface_loader is None:
            context.surface_loader = _timed_surface_loader(context.clock)

    def load(self, step_index: int) -> object:
        step = self.job.series.steps[step_index]
        clock = self.context.clock
        read_before = clock.seconds["read"]
        started = time.perf_counter()

        # A step without the field is drawn in the NaN colour; resolve_field
        # has checked that the field exists in the series.
        surface = self.context.surface_loader.load(step, self.job.scene, missing_field="nan")

        elapsed = time.perf_counter() - started
        clock.add("geometry", max(0.0, elapsed - (clock.seconds["read"] - read_before)))
        self.context.stats.steps_read += 1
        return surface

    def scalars(self, surface: object) -> np.ndarray | None:
        from vtkmodules.util.numpy_support import vtk_to_numpy

        name = self.reader.SCALARS_NAME
        array = surface.GetPointData().GetArray(name) or surface.GetCellData().GetArray(name)
        return None if array is None else vtk_to_numpy(array)


def _prepass_steps(job: RenderJob) -> list[int]:
    count = len(job.series.steps)
    if job.scene.range is None:
        return list(range(count))
    # NOTE: with --range only the first and last steps give the camera bounds;
    # a mesh that moves outside both of them can leave the frame.
    return sorted({0, count - 1})


def run_prepass(job: RenderJob, context: _Context, cache: SurfaceCache, reads_on_root: bool,
                progress: Progress) -> tuple[_PrepassResult, dict[int, list[int]]]:
    """Read the pre-pass steps on all ranks and combine their ranges and bounds.

    Returns
    -------
    (result, held)
        The combined result (same on every rank) and, on rank 0, the steps
        each rank keeps in memory.
    """
    steps = _prepass_steps(job)
    loader = _StepLoader(job, context)
    local = _PrepassResult()

    def read_step(step_index: int) -> None:
        surface = loader.load(step_index)
        step = job.series.steps[step_index]
        local.add(step.label, loader.scalars(surface), loader.reader.step_bounds(surface))
        cache.offer(step_index, surface)

    def handle(step_index: int) -> None:
        _run_step(context, job.series.steps[step_index], lambda: read_step(step_index))

    if context.rank == 0:
        _prepass_on_root(context, Dispatcher(steps), handle, reads_on_root, len(steps), progress)
    else:
        for step_index in _assigned_steps(context):
            handle(step_index)

    combined = _combine_prepass(context, local)
    cached = context.world.gather(cache.steps, root=0)
    held = {rank: steps_of_rank for rank, steps_of_rank in enumerate(cached or []) if steps_of_rank}
    return combined, held


def _prepass_on_root(context: _Context, dispatcher: Dispatcher, handle: Callable[[int], None],
                     reads_here: bool, total: int, progress: Progress) -> None:
    server = _ControlServer(context, dispatcher)
    progress.stage("prepass", total)

    def work_here() -> bool:
        # Rank 0 counts hand-outs, not completions, so the count runs ahead by
        # the steps that other ranks are still reading.
        progress.advance(len(dispatcher.owner))
        if not reads_here:
            return False
        step_index = dispatcher.take(0)
        if step_index == NO_MORE_STEPS:
            return False
        handle(step_index)
        return True

    _serve_until_done(server, work_here, lambda: server.all_finished and dispatcher.peek(0) == NO_MORE_STEPS,
                      context.clock)
    progress.advance(total)


def _combine_prepass(context: _Context, local: _PrepassResult) -> _PrepassResult:
    mins = np.array([local.low, -local.high, local.low_positive,
                     *local.bounds[0::2], *(-local.bounds[1::2])], dtype=np.float64)
    context.world.Allreduce(MPI.IN_PLACE, [mins, MPI.DOUBLE], op=MPI.MIN)

    labels = context.world.gather((local.empty_steps, local.nan_steps), root=0)
    combined = _PrepassResult(low=mins[0], high=-mins[1], low_positive=mins[2])
    combined.bounds[0::2] = mins[3:6]
    combined.bounds[1::2] = -mins[6:9]
    if labels is not None:
        for empty, nan in labels:
            combined.empty_steps.extend(empty)
            combined.nan_steps.extend(nan)
    return combined


def colour_range(job: RenderJob, result: _PrepassResult) -> tuple[float, float]:
    """Return the colour range: ``--range`` or the finite extremes over all steps.

    Raises
    ------
    UserError
        If no step has a finite value, or ``--log`` is set and none is positive.
    """
    scene = job.scene
    if scene.range is not None:
        return scene.range
    if not np.isfinite(result.low):
        raise UserError(f"field {scene.field!r} has no finite value in any time step; "
                        "give the colour range with --range MIN,MAX")
    if not scene.log:
        return float(result.low), float(result.high)
    if not np.isfinite(result.low_positive):
        raise UserError(f"--log needs values above zero but field {scene.field!r} has none; "
                        "drop --log or give a positive --range MIN,MAX")
    return float(result.low_positive), float(result.high)


def _report_prepass(result: _PrepassResult, field_name: str | None) -> None:
    for label in result.nan_steps:
        logger.warning("time step %s has no finite value of %s (or lacks the field): it is drawn in the NaN colour",
                       label, field_name)
    for label in result.empty_steps:
        logger.warning("time step %s has no geometry in the chosen parts or slice", label)


# --- Rendering -------------------------------------------------------------------


def _run_step(context: _Context, step: TimeStep, action: Callable[[], None]) -> None:
    """Run ``action`` for ``step``; a failure names the rank and the step.

    On rank 0 the failure is raised as :class:`JobFailure`; on other ranks it
    is sent to rank 0, which ends the job.
    """
    try:
        action()
    except Exception as error:  # noqa: BLE001  every failure must reach rank 0
        failure = failure_from(context, step, error)
        if context.rank == 0:
            raise failure from error
        report_failure_to_root(context, failure.kind, str(failure), failure.details)


class _FrameMaker:
    """Load, render, save images of, and convert one step on this rank."""

    def __init__(self, job: RenderJob, context: _Context, cache: SurfaceCache,
                 camera: object, scalar_range: tuple[float, float]) -> None:
        from . import images

        self.images = images
        self.job = job
        self.context = context
        self.cache = cache
        self.loader = _StepLoader(job, context)
        self.renderer = _timed_frame_renderer(context.clock, job.scene, camera, scalar_range,
                                              field_name=job.scene.field)
        self.poster_step = poster_step(len(job.series.steps))
        self.frame_folder = None if job.frames_dir is None else images.FrameFolderWriter(job.frames_dir)

    def make(self, step_index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Return the yuv420p frame of ``step_index``, written into ``out`` when given."""
        from . import encode

        _check_fault_injection(step_index)
        step = self.job.series.steps[step_index]
        surface = self.cache.pop(step_index)
        if surface is None:
            surface = self.loader.load(step_index)

        clock = self.context.clock
        readback_before = clock.seconds["readback"]
        started = time.perf_counter()
        rgb = self.renderer.render(surface, step.time, index=step_index, label=step.label)
        elapsed = time.perf_counter() - started
        clock.add("render", max(0.0, elapsed - (clock.seconds["readback"] - readback_before)))
        self._save_images(step_index, rgb)

        with self.context.clock.measure("convert"):
            planes = encode.rgb_to_yuv420p(rgb)
        self.context.stats.frames += 1
        if out is None:
            return planes
        out[...] = planes
        return out

    def _save_images(self, step_index: int, rgb: np.ndarray) -> None:
        if self.frame_folder is not None:
            self.frame_folder.write(rgb, step_index)
        if self.job.poster is not None and step_index == self.poster_step:
            self.images.save_poster(rgb, self.job.poster)

    def close(self) -> None:
        self.renderer.close()


def poster_step(count: int) -> int:
    """Return the step shown on the poster: the middle one."""
    return count // 2


def _render_on_worker(context: _Context, maker: _FrameMaker) -> None:
    in_flight: deque[tuple[MPI.Request, np.ndarray]] = deque()
    for step_index in _assigned_steps(context):
        step = maker.job.series.steps[step_index]
        frame: list[np.ndarray] = []
        _run_step(context, step, lambda: frame.append(maker.make(step_index)))

        with context.clock.measure("send"):
            # A bounded number of frames in flight is the flow control: a rank
            # never runs more than MAX_FRAMES_IN_FLIGHT frames ahead of rank 0.
            while len(in_flight) >= MAX_FRAMES_IN_FLIGHT:
                wait_with_sleep([in_flight.popleft()[0]])
            request = context.frames.Issend([frame[0], MPI.BYTE], dest=0, tag=context.frame_tag(step_index))
            in_flight.append((request, frame[0]))

    with context.clock.measure("send"):
        wait_with_sleep([request for request, _ in in_flight])


class _FrameCollector:
    """Rank 0's reorder window: receive frames, encode them in step order."""

    def __init__(self, context: _Context, total: int, shape: tuple[int, int], window: int,
                 writer: object, progress: Progress) -> None:
        self.context = context
        self.total = total
        self.shape = shape
        self.window = window
        self.writer = writer
        self.progress = progress
        self.next_step = 0
        self.ready: dict[int, np.ndarray] = {}
        self._free: list[np.ndarray] = []
        self._allocated = 0
        self._status = MPI.Status()

    @property
    def done(self) -> bool:
        return self.next_step >= self.total

    def can_hold(self, step_index: int) -> bool:
        return step_index < self.next_step + self.window and self._allocated - len(self._free) < self.window

    def buffer(self) -> np.ndarray:
        """Return a free frame buffer; at most ``window`` buffers ever exist."""
        if self._free:
            return self._free.pop()
        self._allocated += 1
        return np.empty(self.shape, dtype=np.uint8)

    def store(self, step_index: int, frame: np.ndarray) -> None:
        self.ready[step_index] = frame

    def poll(self) -> bool:
        """Receive waiting frames that fit in the window and encode what is in order."""
        received = False
        for step_index in range(self.next_step, min(self.total, self.next_step + self.window)):
            if step_index in self.ready:
                continue
            tag = self.context.frame_tag(step_index)
            if not self.context.frames.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=self._status):
                continue
            frame = self.buffer()
            self.context.frames.Recv([frame, MPI.BYTE], source=self._status.Get_source(), tag=tag)
            self.ready[step_index] = frame
            received = True
        return self.encode_ready() or received

    def encode_ready(self) -> bool:
        encoded = False
        while self.next_step in self.ready:
            frame = self.ready.pop(self.next_step)
            with self.context.clock.measure("encode"):
                self.writer.write_yuv420p(frame)
            self._free.append(frame)
            self.next_step += 1
            encoded = True
        if encoded:
            self.progress.advance(self.next_step)
        return encoded


def _render_on_root(job: RenderJob, context: _Context, held: dict[int, list[int]],
                    maker: _FrameMaker | None, progress: Progress) -> None:
    from . import encode

    total = len(job.series.steps)
    width, height = job.scene.even_size()
    shape = (height * 3 // 2, width)
    window = reorder_window(context.size, width * height * 3 // 2)
    # The window must exceed the look-ahead for the deadlock argument in Dispatcher.
    dispatcher = Dispatcher(range(total), held, lookahead=min(context.size, window - 1))
    server = _ControlServer(context, dispatcher)
    logger.debug("reorder window %d frames, encoder %s", window, "shared" if maker else "dedicated")

    progress.stage("render", total)
    with encode.MovieWriter(job.output, width, height, job.scene.fps, job.scene.crf, job.scene.preset) as writer:
        collector = _FrameCollector(context, total, shape, window, writer, progress)

        def work_here() -> bool:
            received = collector.poll()
            if maker is None:
                return received
            step_index = dispatcher.peek(0)
            if step_index == NO_MORE_STEPS or not collector.can_hold(step_index):
                return received
            dispatcher.take(0)
            frame = collector.buffer()
            _run_step(context, job.series.steps[step_index], lambda: maker.make(step_index, out=frame))
            collector.store(step_index, frame)
            collector.encode_ready()
            return True

        _serve_until_done(server, work_here, lambda: collector.done and server.all_finished, context.clock)


def render_frames(job: RenderJob, context: _Context, cache: SurfaceCache, held: dict[int, list[int]],
                  camera: object, scalar_range: tuple[float, float], renders_on_root: bool,
                  progress: Progress) -> None:
    """Render every step on the ranks and encode the movie on rank 0."""
    maker = None
    if context.rank != 0 or renders_on_root:
        maker = _FrameMaker(job, context, cache, camera, scalar_range)
    try:
        if context.rank == 0:
            _render_on_root(job, context, held, maker, progress)
        else:
            _render_on_worker(context, maker)
    finally:
        if maker is not None:
            maker.close()


# --- The whole job ---------------------------------------------------------------


def make_context(comm: MPI.Comm | None = None) -> _Context:
    """Duplicate ``comm`` (COMM_WORLD by default) into control and frame communicators."""
    world = comm if comm is not None else MPI.COMM_WORLD
    context = _Context(world=world, control=world.Dup(), frames=world.Dup())
    context.stats = RankStats(rank=world.Get_rank(), host=MPI.Get_processor_name())
    return context


def local_rank_count(comm: MPI.Comm) -> tuple[int, int]:
    """Return (this rank's index on its node, number of ranks on its node)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def run_render(job: RenderJob, context: _Context, progress: Progress) -> RunSummary | None:
    """Render ``job`` on every rank of ``context``; return the summary on rank 0.

    Call it on every rank. A failure on a rank other than 0 is reported to
    rank 0 and ends the job (see :func:`report_failure_to_root`). On rank 0 a
    failure raises, and the caller ends the job with :func:`abort_job` when
    there are several ranks.

    Raises
    ------
    UserError
        For bad input found on rank 0.
    JobFailure
        On rank 0, for a failure reported by another rank.
    """
    started = time.monotonic()
    mode = encoder_mode(job.encoder, context.size)
    renders_on_root = mode == "shared"
    _, local_ranks = local_rank_count(context.world)
    budget = default_cache_bytes(local_ranks) if job.cache_mb is None else int(job.cache_mb * 2**20)
    if context.rank == 0 and not renders_on_root:
        budget = 0
    cache = SurfaceCache(budget)

    result, held = run_prepass(job, context, cache, renders_on_root, progress)
    context.stats.cached_steps = len(cache.steps)
    scalar_range, camera = _range_and_camera(job, context, result)

    render_frames(job, context, cache, held, camera, scalar_range, renders_on_root, progress)
    return _gather_summary(job, context, time.monotonic() - started, mode)


def _range_and_camera(job: RenderJob, context: _Context, result: _PrepassResult) -> tuple:
    from . import camera as camera_module
    from .render import plot_aspect

    if context.rank == 0:
        _report_prepass(result, job.scene.field)
    scalar_range = colour_range(job, result)
    if context.rank == 0:
        logger.info("colour range of %s: %g to %g", job.scene.field, *scalar_range)

    aspect = plot_aspect(*job.scene.even_size())
    camera = camera_module.fit_camera(tuple(result.bounds), job.scene.view, job.scene.zoom, aspect)
    return scalar_range, camera


def _gather_summary(job: RenderJob, context: _Context, wall_s: float, mode: str) -> RunSummary | None:
    context.stats.peak_rss_mb = peak_rss_mb()
    context.stats.stages = dict(context.clock.seconds)
    per_rank = context.world.gather(context.stats, root=0)
    if context.rank != 0:
        return None
    return RunSummary(
        frames=len(job.series.steps), ranks=context.size, wall_s=wall_s, encoder=mode,
        size=job.scene.even_size(), output=str(job.output), per_rank=per_rank,
    )
