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
   Rank 0 receives frames within a fixed reorder window and, with few ranks,
   renders its own share. A thread of rank 0 converts rank 0's frames and
   encodes every frame in time order (see :mod:`.collect`).

Frames travel with ``Issend``, the non-blocking form of ``Ssend``: a rank
renders its next frame while the last one waits for rank 0, and it holds at
most :data:`MAX_FRAMES_IN_FLIGHT` unreceived frames, which is the flow
control.

The pieces live in their own modules: :mod:`.dispatch` (hand-out and control
messages), :mod:`.prepass` (ranges, bounds and kept surfaces), :mod:`.collect`
(the reorder window) and :mod:`.failures` (how a failure ends the job).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from .collect import EncoderThread, FrameCollector, reorder_window
from .dispatch import (
    NO_MORE_STEPS,
    ControlServer,
    Dispatcher,
    JobFailure,
    RankContext,
    assigned_steps,
    receive_final_stats,
    send_final_stats,
    serve_until_done,
    wait_with_sleep,
)
from .errors import FieldError, UserError
from .failures import (
    SetupFailed,
    abort_job,
    check_fault_injection,
    failure_from,
    report_failure_to_root,
    run_step,
)
from .failures import share_from_root as _share_from_root
from .prepass import (
    PrepassResult,
    StepLoader,
    SurfaceCache,
    check_slice_cut,
    colour_range,
    default_cache_bytes,
    report_prepass,
    run_prepass,
)
from .progress import Progress, RankStats, RunSummary, peak_rss_mb, process_age_s
from .scene import Scene
from .series import TimeSeries

logger = logging.getLogger(__name__)

# The job's interface, with the failure handling that the CLI calls through this module.
__all__ = [
    "DEDICATED_ENCODER_MIN_RANKS", "ENCODER_MODES", "MAX_FRAMES_IN_FLIGHT", "JobFailure", "RenderJob",
    "SetupFailed", "abort_job", "encoder_mode", "failure_from", "local_rank_count", "make_context",
    "poster_step", "render_frames", "report_failure_to_root", "resolve_field", "run_render", "share_from_root",
]

ENCODER_MODES = ("auto", "dedicated", "shared")

# With this many ranks or more, "auto" gives rank 0 to the encoder alone, so
# it serves requests and receives frames without waiting for its own renders.
# NOTE: a first estimate, from render times of 50-100 ms per 720p frame on
# llvmpipe against about 5 ms to encode one; the benchmarks should set it.
DEDICATED_ENCODER_MIN_RANKS = 5

# Frames a render rank may have sent but not yet had received by rank 0.
MAX_FRAMES_IN_FLIGHT = 2


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


def share_from_root(context: RankContext, make: Callable[[], object]) -> object:
    """Run ``make`` on rank 0 and broadcast its result; the other ranks load the render modules meanwhile.

    See :func:`.failures.share_from_root` for the failure handling.
    """
    return _share_from_root(context, make, prepare=load_render_modules)


def load_render_modules() -> None:
    """Import the modules that reading, rendering and encoding need: VTK's, PyAV's and kvis's own.

    Call it only after :func:`.offscreen.configure_offscreen`, which must
    run before VTK is imported.
    """
    # Run on ranks other than 0 while rank 0 finds the steps. Importing these
    # took about 0.25 s per rank under -X importtime (2-core machine, mpiexec -n 2).
    from . import encode, reader, render, surface  # noqa: F401


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
    from . import surface

    try:
        return surface.resolve_field(series.steps[0], scene)
    except FieldError:
        if scene.field is None or len(series.steps) == 1:
            raise
    return surface.resolve_field(series.steps[-1], scene)


# --- Rendering -------------------------------------------------------------------


class _FrameMaker:
    """Load, render, save images of, and convert one step on this rank."""

    def __init__(self, job: RenderJob, context: RankContext, cache: SurfaceCache,
                 camera: object, scalar_range: tuple[float, float], field_components: int | None = None) -> None:
        from . import images, render

        self.images = images
        self.job = job
        self.context = context
        self.cache = cache
        self.loader = StepLoader(job, context)
        self.renderer = render.FrameRenderer(job.scene, camera, scalar_range, field_name=job.scene.field,
                                             components=field_components)
        self.poster_step = poster_step(len(job.series.steps))
        self.frame_folder = None if job.frames_dir is None else images.FrameFolderWriter(job.frames_dir)

    def make(self, step_index: int) -> np.ndarray:
        """Return the yuv420p frame of ``step_index``."""
        from . import encode

        rgb = self.render_rgb(step_index)
        with self.context.clock.measure("convert"):
            return encode.rgb_to_yuv420p(rgb)

    def render_rgb(self, step_index: int) -> np.ndarray:
        """Return the RGB frame of ``step_index``, after saving it to the frames folder or poster."""
        check_fault_injection(step_index)
        step = self.job.series.steps[step_index]
        surface = self.cache.pop(step_index)
        if surface is None:
            surface = self.loader.load(step_index)

        # draw() and read_pixels() are timed apart, so the summary shows the
        # cost of copying pixels from the GPU on its own.
        clock = self.context.clock
        with clock.measure("render"):
            self.renderer.draw(surface, step.time, index=step_index, label=step.label)
        with clock.measure("readback"):
            rgb = self.renderer.read_pixels()
        self._save_images(step_index, rgb)
        self.context.stats.frames += 1
        return rgb

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


def _render_on_worker(context: RankContext, maker: _FrameMaker) -> None:
    in_flight: deque[tuple[MPI.Request, np.ndarray]] = deque()
    for step_index in assigned_steps(context):
        step = maker.job.series.steps[step_index]
        frame: list[np.ndarray] = []
        run_step(context, step, lambda: frame.append(maker.make(step_index)))

        with context.clock.measure("send"):
            # A bounded number of frames in flight is the flow control: a rank
            # never runs more than MAX_FRAMES_IN_FLIGHT frames ahead of rank 0.
            while len(in_flight) >= MAX_FRAMES_IN_FLIGHT:
                wait_with_sleep([in_flight.popleft()[0]], context)
            request = context.frames.Issend([frame[0], MPI.BYTE], dest=0, tag=context.frame_tag(step_index))
            in_flight.append((request, frame[0]))

    with context.clock.measure("send"):
        wait_with_sleep([request for request, _ in in_flight], context)


def _render_on_root(job: RenderJob, context: RankContext, held: dict[int, list[int]],
                    maker: _FrameMaker | None, progress: Progress) -> None:
    from . import encode

    total = len(job.series.steps)
    width, height = job.scene.even_size()
    shape = (height * 3 // 2, width)
    window = reorder_window(context.size, width * height * 3 // 2)
    # The window must exceed the look-ahead for the deadlock argument in Dispatcher.
    dispatcher = Dispatcher(range(total), held, lookahead=min(context.size, window - 1))
    server = ControlServer(context, dispatcher)
    logger.debug("reorder window %d frames, encoder %s", window, "shared" if maker else "dedicated")

    progress.stage("render", total)
    with encode.MovieWriter(job.output, width, height, job.scene.fps, job.scene.crf, job.scene.preset) as writer:
        collector = FrameCollector(context, total, shape, window, writer, progress)
        # Leaving this block joins the encoder thread before the writer flushes and closes.
        with EncoderThread(writer, collector.release, context.clock, encode.rgb_to_yuv420p) as encoder:
            collector.encoder = encoder

            def work_here() -> bool:
                received = collector.poll()
                if maker is None:
                    return received
                step_index = dispatcher.peek(0)
                if step_index == NO_MORE_STEPS or not collector.can_hold(step_index):
                    return received
                dispatcher.take(0)
                rgb: list[np.ndarray] = []
                run_step(context, job.series.steps[step_index], lambda: rgb.append(maker.render_rgb(step_index)))
                collector.store(step_index, collector.buffer(), rgb[0])
                collector.encode_ready()
                return True

            serve_until_done(server, work_here, lambda: collector.done and server.all_finished, context.clock)
            with context.clock.measure("wait"):
                encoder.finish()
    progress.advance(total)


def render_frames(job: RenderJob, context: RankContext, cache: SurfaceCache, held: dict[int, list[int]],
                  camera: object, scalar_range: tuple[float, float], renders_on_root: bool,
                  progress: Progress, field_components: int | None = None) -> None:
    """Render every step on the ranks and encode the movie on rank 0.

    ``field_components`` is the field's number of components, which makes
    the scalar bar title of a vector's magnitude ``|U|``; None leaves the name.
    """
    maker = None
    if context.rank != 0 or renders_on_root:
        maker = _FrameMaker(job, context, cache, camera, scalar_range, field_components)
    # Everything this rank did so far that no other stage counted: starting
    # Python and MPI, imports, finding the steps, creating the render window.
    context.clock.add("setup", max(0.0, process_age_s() - sum(context.clock.seconds.values())))
    try:
        if context.rank == 0:
            _render_on_root(job, context, held, maker, progress)
        else:
            _render_on_worker(context, maker)
    finally:
        if maker is not None:
            maker.close()


# --- The whole job ---------------------------------------------------------------


def make_context(comm: MPI.Comm | None = None) -> RankContext:
    """Duplicate ``comm`` (COMM_WORLD by default) into control and frame communicators."""
    world = comm if comm is not None else MPI.COMM_WORLD
    context = RankContext(world=world, control=world.Dup(), frames=world.Dup())
    context.stats = RankStats(rank=world.Get_rank(), host=MPI.Get_processor_name())
    return context


def local_rank_count(comm: MPI.Comm) -> tuple[int, int]:
    """Return (this rank's index on its node, number of ranks on its node)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def run_render(job: RenderJob, context: RankContext, progress: Progress) -> RunSummary | None:
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

    # Every rank has the same count after the pre-pass's Allreduce, even one that read no step.
    components = result.field_components or None
    render_frames(job, context, cache, held, camera, scalar_range, renders_on_root, progress, components)
    return _gather_summary(job, context, time.monotonic() - started, mode)


def _range_and_camera(job: RenderJob, context: RankContext, result: PrepassResult) -> tuple:
    from . import camera as camera_module
    from .render import plot_aspect

    # Before the per-step warnings: a plane that misses the mesh would give one for every step.
    check_slice_cut(job, result)
    if context.rank == 0:
        report_prepass(result, job.scene.field)
    scalar_range = colour_range(job, result)
    if context.rank == 0:
        logger.info("colour range of %s: %g to %g", job.scene.field, *scalar_range)

    aspect = plot_aspect(*job.scene.even_size())
    camera = camera_module.fit_camera(tuple(result.bounds), job.scene.view, job.scene.zoom, aspect)
    return scalar_range, camera


def _gather_summary(job: RenderJob, context: RankContext, wall_s: float, mode: str) -> RunSummary | None:
    context.stats.peak_rss_mb = peak_rss_mb()
    context.stats.stages = dict(context.clock.seconds)
    if context.rank != 0:
        send_final_stats(context)
        return None
    per_rank = receive_final_stats(context)
    return RunSummary(
        frames=len(job.series.steps), ranks=context.size, wall_s=wall_s, encoder=mode,
        size=job.scene.even_size(), output=str(job.output), per_rank=per_rank,
    )
