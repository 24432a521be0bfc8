"""The pre-pass: read every step once for the colour range and the camera bounds.

Ranks read their steps, extract the drawn surface, and report the finite
range of the field and the bounds. One ``Allreduce`` combines them into a
single colour range and camera for the whole movie. Surfaces that fit under
the memory budget stay in a :class:`SurfaceCache`, and the dispatcher gives
such a step to the rank that keeps it when the step is near the front, so
most steps are read once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from mpi4py import MPI

from .dispatch import NO_MORE_STEPS, ControlServer, Dispatcher, RankContext, assigned_steps, serve_until_done
from .errors import UserError
from .failures import run_step
from .progress import Progress, StageClock
from .scene import finalise_colour_range, slice_miss_error
from .series import TimeStep

if TYPE_CHECKING:
    from .parallel import RenderJob

logger = logging.getLogger(__name__)


# Fraction of the node's available memory that the ranks of a node may use,
# together, to keep surfaces from the pre-pass until they are rendered.
SURFACE_CACHE_FRACTION = 0.25


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


@dataclass
class PrepassResult:
    """Ranges, bounds and problem steps that one rank found in the pre-pass.

    ``bounds`` covers what is drawn. ``sliced_volume_bounds`` covers the
    volume parts cut with the ``--slice`` plane, before the cut.
    ``field_components`` is the field's largest number of components in the
    steps read, 0 when no step was read.
    """

    low: float = np.inf
    high: float = -np.inf
    bounds: np.ndarray = field(default_factory=lambda: np.array([np.inf, -np.inf] * 3))
    sliced_volume_bounds: np.ndarray = field(default_factory=lambda: np.array([np.inf, -np.inf] * 3))
    field_components: int = 0
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
    """Return a surface.SurfaceLoader that adds its file reading time to the "read" stage."""
    from . import surface

    class TimedSurfaceLoader(surface.SurfaceLoader):
        def read_parts(self, step: TimeStep, parts: Sequence[str]) -> object:
            with clock.measure("read"):
                return super().read_parts(step, parts)

    return TimedSurfaceLoader()


class StepLoader:
    """Read steps into surfaces on this rank, timing reading and surface extraction apart.

    One loader serves both phases of a rank, so the reader's reuse of an
    unchanged mesh's surface carries over from the pre-pass to rendering.
    """

    def __init__(self, job: RenderJob, context: RankContext) -> None:
        from . import fields, surface

        self.fields = fields
        self.surface = surface
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

        name = self.fields.SCALARS_NAME
        # Compare with None: an empty VTK array is falsy.
        array = surface.GetPointData().GetArray(name)
        if array is None:
            array = surface.GetCellData().GetArray(name)
        return None if array is None else vtk_to_numpy(array)


def _prepass_steps(job: RenderJob) -> list[int]:
    count = len(job.series.steps)
    if job.scene.range is None:
        return list(range(count))
    # NOTE: with --range only the first and last steps give the camera bounds;
    # a mesh that moves outside both of them can leave the frame.
    return sorted({0, count - 1})


def run_prepass(job: RenderJob, context: RankContext, cache: SurfaceCache, reads_on_root: bool,
                progress: Progress) -> tuple[PrepassResult, dict[int, list[int]]]:
    """Read the pre-pass steps on all ranks and combine their ranges and bounds.

    Returns
    -------
    (result, held)
        The combined result (same on every rank) and, on rank 0, the steps
        each rank keeps in memory.
    """
    steps = _prepass_steps(job)
    loader = StepLoader(job, context)
    local = PrepassResult()

    def read_step(step_index: int) -> None:
        surface = loader.load(step_index)
        step = job.series.steps[step_index]
        local.add(step.label, loader.scalars(surface), loader.surface.step_bounds(surface))
        components = context.surface_loader.last_choice.components
        local.field_components = max(local.field_components, components)
        cache.offer(step_index, surface)

    def handle(step_index: int) -> None:
        run_step(context, job.series.steps[step_index], lambda: read_step(step_index))

    if context.rank == 0:
        _prepass_on_root(context, Dispatcher(steps), handle, reads_on_root, len(steps), progress)
    else:
        for step_index in assigned_steps(context):
            handle(step_index)

    local.sliced_volume_bounds = context.surface_loader.sliced_volume_bounds.copy()
    combined = _combine_prepass(context, local)
    cached = context.world.gather(cache.steps, root=0)
    held = {rank: steps_of_rank for rank, steps_of_rank in enumerate(cached or []) if steps_of_rank}
    return combined, held


def _prepass_on_root(context: RankContext, dispatcher: Dispatcher, handle: Callable[[int], None],
                     reads_here: bool, total: int, progress: Progress) -> None:
    server = ControlServer(context, dispatcher)
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

    serve_until_done(server, work_here, lambda: server.all_finished and dispatcher.peek(0) == NO_MORE_STEPS,
                      context.clock)
    progress.advance(total)


def _combine_prepass(context: RankContext, local: PrepassResult) -> PrepassResult:
    mins = np.array([local.low, -local.high,
                     *local.bounds[0::2], *(-local.bounds[1::2]),
                     *local.sliced_volume_bounds[0::2], *(-local.sliced_volume_bounds[1::2]),
                     -local.field_components], dtype=np.float64)
    context.world.Allreduce(MPI.IN_PLACE, [mins, MPI.DOUBLE], op=MPI.MIN)

    labels = context.world.gather((local.empty_steps, local.nan_steps), root=0)
    combined = PrepassResult(low=mins[0], high=-mins[1])
    combined.bounds[0::2] = mins[2:5]
    combined.bounds[1::2] = -mins[5:8]
    combined.sliced_volume_bounds[0::2] = mins[8:11]
    combined.sliced_volume_bounds[1::2] = -mins[11:14]
    combined.field_components = int(-mins[14])
    if labels is not None:
        for empty, nan in labels:
            combined.empty_steps.extend(empty)
            combined.nan_steps.extend(nan)
    return combined


def check_slice_cut(job: RenderJob, result: PrepassResult) -> None:
    """Raise when the ``--slice`` plane cut nothing in any step of the pre-pass.

    Call it on every rank with the combined result: every rank then raises
    the same error, and rank 0 reports it once.

    Raises
    ------
    UserError
        Naming the plane and, when a volume part was read, the mesh's extent.
    """
    plane = job.scene.slice
    if plane is None or np.isfinite(result.bounds).all():
        return
    # NOTE: with --range the pre-pass reads only the first and last steps, so
    # a plane that cuts the mesh only in steps between them is rejected too.
    mesh = result.sliced_volume_bounds
    mesh_bounds = tuple(float(value) for value in mesh) if np.isfinite(mesh).all() else None
    raise slice_miss_error(plane, mesh_bounds)


def colour_range(job: RenderJob, result: PrepassResult) -> tuple[float, float]:
    """Return the colour range: ``--range`` or the finite extremes over all steps.

    A constant field gets a range around its value (see :func:`.scene.finalise_colour_range`).

    Raises
    ------
    UserError
        If no step has a finite value, or ``--log`` is set without ``--range``
        and the minimum is zero or below.
    """
    scene = job.scene
    if scene.range is not None:
        return scene.range
    if not np.isfinite(result.low):
        raise UserError(f"field {scene.field!r} has no finite value in any time step; "
                        "give the colour range with --range MIN,MAX")
    return finalise_colour_range(scene, float(result.low), float(result.high))


def report_prepass(result: PrepassResult, field_name: str | None) -> None:
    for label in result.nan_steps:
        logger.warning("time step %s has no finite value of %s (or lacks the field): it is drawn in the NaN colour",
                       label, field_name)
    for label in result.empty_steps:
        logger.warning("time step %s has no geometry in the chosen parts or slice", label)
