"""Tests for kvis_parallel.prepass: surfaces kept between the phases, ranges and the colour range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvis_parallel import parallel
from kvis_parallel.errors import UserError
from kvis_parallel.prepass import PrepassResult, StepLoader, SurfaceCache, check_slice_cut, colour_range
from kvis_parallel.scene import Scene


# --- Surfaces kept between the phases ---------------------------------------------------------


def make_surface(resolution: int):
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    source = vtkSphereSource()
    source.SetThetaResolution(resolution)
    source.SetPhiResolution(resolution)
    source.Update()
    return source.GetOutput()


def test_surface_cache_keeps_within_budget():
    surface = make_surface(64)
    size = surface.GetActualMemorySize() * 1024
    cache = SurfaceCache(budget_bytes=int(size * 2.5))

    assert [cache.offer(step, make_surface(64)) for step in range(4)] == [True, True, False, False]
    assert cache.steps == [0, 1]
    assert cache.used_bytes <= cache.budget_bytes


def test_surface_cache_pop_drops_older_steps():
    cache = SurfaceCache(budget_bytes=2**30)
    for step in (2, 4, 6):
        cache.offer(step, make_surface(8))

    assert cache.pop(5) is None
    assert cache.steps == [6]
    assert cache.pop(6) is not None
    assert cache.used_bytes == 0


# --- Colour range --------------------------------------------------------------------------


def test_prepass_ignores_nan_and_inf():
    result = PrepassResult()
    result.add("a", np.array([1.0, np.nan, 3.0, np.inf]), (0, 1, 0, 1, 0, 0))
    result.add("b", np.array([np.nan, np.nan]), (0, 2, 0, 1, 0, 0))
    result.add("c", np.array([-np.inf, 2.0]), None)

    assert (result.low, result.high) == (1.0, 3.0)
    assert result.nan_steps == ["b"]
    assert result.empty_steps == ["c"]
    assert list(result.bounds) == [0, 2, 0, 1, 0, 0]


def job_with(scene: Scene) -> parallel.RenderJob:
    return parallel.RenderJob(series=None, scene=scene, output=Path("m.mp4"))  # type: ignore[arg-type]


def test_colour_range_from_data():
    result = PrepassResult(low=-1.0, high=4.0)

    assert colour_range(job_with(Scene(field="p")), result) == (-1.0, 4.0)
    assert colour_range(job_with(Scene(field="p", log=True)), PrepassResult(low=0.5, high=4.0)) == (0.5, 4.0)
    assert colour_range(job_with(Scene(field="p", range=(0.0, 1.0))), result) == (0.0, 1.0)
    assert colour_range(job_with(Scene(field="p", log=True, range=(0.1, 1.0))), result) == (0.1, 1.0)


def test_colour_range_widens_constant_field():
    result = PrepassResult(low=2.0, high=2.0)

    low, high = colour_range(job_with(Scene(field="p")), result)

    assert low < 2.0 < high


@pytest.mark.parametrize(("scene", "message"), [
    (Scene(field="p"), "no finite value"),
    (Scene(field="p", log=True), "no finite value"),
])
def test_colour_range_without_values(scene, message):
    with pytest.raises(UserError, match=message):
        colour_range(job_with(scene), PrepassResult())


@pytest.mark.parametrize(("low", "high"), [(-3.0, 0.0), (-4.37, 4.85), (0.0, 1.0)])
def test_colour_range_log_rejects_minimum_not_positive(low, high):
    result = PrepassResult(low=low, high=high)

    with pytest.raises(UserError, match="--log") as raised:
        colour_range(job_with(Scene(field="p", log=True)), result)

    message = str(raised.value)
    assert "'p'" in message
    assert f"{low:.6g}" in message
    assert "--range MIN,MAX" in message


def test_check_slice_cut_names_plane_and_mesh():
    result = PrepassResult()
    result.sliced_volume_bounds = np.array([0.0, 0.1, 0.0, 0.1, 0.0, 0.01])
    job = job_with(Scene(field="p", slice=(0.05, 0.05, 0.5, 0, 0, 1)))

    with pytest.raises(UserError, match="misses the mesh") as raised:
        check_slice_cut(job, result)

    assert "(0.05, 0.05, 0.5)" in str(raised.value)
    assert "z from 0 to 0.01" in str(raised.value)


def test_check_slice_cut_passes_drawn_slice():
    result = PrepassResult()
    result.add("a", np.array([1.0]), (0, 1, 0, 1, 0.5, 0.5))

    check_slice_cut(job_with(Scene(field="p", slice=(0.5, 0.5, 0.5, 0, 0, 1))), result)
    check_slice_cut(job_with(Scene(field="p")), PrepassResult())


# --- Reading steps --------------------------------------------------------------------------


def test_step_loader_finds_empty_point_scalars():
    from mpi4py import MPI
    from vtkmodules.vtkCommonCore import vtkFloatArray
    from vtkmodules.vtkCommonDataModel import vtkPolyData

    from kvis_parallel.fields import SCALARS_NAME

    surface = vtkPolyData()
    empty = vtkFloatArray()
    empty.SetName(SCALARS_NAME)
    surface.GetPointData().AddArray(empty)
    loader = StepLoader(job_with(Scene(field="p")), parallel.make_context(MPI.COMM_SELF))

    values = loader.scalars(surface)

    assert values is not None, "an empty point array was taken for a missing one"
    assert values.size == 0
