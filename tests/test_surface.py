"""Tests for kvis_parallel.surface: field selection on the surface, slices, the mesh cache, samples."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from test_reader import (  # noqa: F401  no_vtk_output and step are fixtures used by name
    CAVITY,
    DAM_BREAK,
    no_vtk_output,
    points_of,
    polygons_of,
    pressure,
    scalars,
    step,
    synthetic,
    velocity,
    write_step,
)
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonDataModel import vtkPolyData

from kvis_parallel.errors import FieldError
from kvis_parallel.fields import SCALARS_NAME, scalar_range
from kvis_parallel.scene import Scene
from kvis_parallel.series import TimeStep, discover_series
from kvis_parallel.surface import SurfaceLoader, load_surface, resolve_field, step_bounds


# --- Field selection on the surface --------------------------------------------------------------


def test_default_field_on_surface(step: TimeStep, caplog: pytest.LogCaptureFixture) -> None:
    loader = SurfaceLoader()

    with caplog.at_level(logging.INFO, logger="kvis_parallel.surface"):
        surface = loader.load(step, Scene())
        loader.load(step, Scene())

    association, values = scalars(surface)
    assert association == "point"
    np.testing.assert_allclose(values, pressure(points_of(surface), 0.5), rtol=1e-6)
    assert caplog.text.count("colouring by 'p'") == 1


def test_surface_has_only_kvis_scalars(step: TimeStep) -> None:
    surface = SurfaceLoader().load(step, Scene(field="U"))

    assert surface.GetPointData().GetNumberOfArrays() == 1
    assert surface.GetCellData().GetNumberOfArrays() == 0
    assert vtk_to_numpy(surface.GetPointData().GetArray(SCALARS_NAME)).dtype == np.float32


def test_surface_is_outer_boundary(step: TimeStep) -> None:
    surface = SurfaceLoader().load(step, Scene(field="p"))

    # A 4 x 3 x 2 block has 2 * (4*3 + 4*2 + 3*2) boundary faces and 5*4*3 - 3*2*1 boundary points.
    assert surface.GetNumberOfCells() == 52
    assert surface.GetNumberOfPoints() == 54
    assert step_bounds(surface) == pytest.approx((0.0, 2.0, 0.0, 1.5, 0.0, 1.0))


@pytest.mark.parametrize("component", ["mag", "x", "y", "z"])
def test_vector_components(step: TimeStep, component: str) -> None:
    surface = SurfaceLoader().load(step, Scene(field="U", component=component))

    expected_vectors = velocity(points_of(surface), 0.5).astype(np.float64)
    expected = {"mag": np.linalg.norm(expected_vectors, axis=1), "x": expected_vectors[:, 0],
                "y": expected_vectors[:, 1], "z": expected_vectors[:, 2]}[component]
    association, values = scalars(surface)
    assert association == "point"
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-7)


def test_cell_association_maps_faces_to_cells(step: TimeStep) -> None:
    mesh = synthetic.block_mesh(4, 3, 2, lengths=(2.0, 1.5, 1.0))

    surface = SurfaceLoader().load(step, Scene(field="cellIndex", association="cell"))

    association, values = scalars(surface)
    assert association == "cell"
    surface_points = points_of(surface)
    for polygon, cell in zip(polygons_of(surface), values.astype(int)):
        cell_points = mesh.points[mesh.cells[cell]]
        for point in surface_points[polygon]:
            assert np.min(np.linalg.norm(cell_points - point, axis=1)) < 1e-6


def test_auto_falls_back_to_cell_data(step: TimeStep) -> None:
    surface = SurfaceLoader().load(step, Scene(field="T"))

    association, values = scalars(surface)
    assert association == "cell"
    assert len(values) == 52
    # T is NaN in the first cell and inf in the last, both corners with 3 boundary faces.
    assert np.isnan(values).sum() == 3
    assert np.isinf(values).sum() == 3


def test_component_of_scalar_rejected(step: TimeStep) -> None:
    with pytest.raises(FieldError) as raised:
        SurfaceLoader().load(step, Scene(field="p", component="x"))

    assert "'p' has 1 component(s)" in str(raised.value)
    assert "--component mag" in str(raised.value)


def test_unknown_field_lists_fields(step: TimeStep) -> None:
    with pytest.raises(FieldError) as raised:
        SurfaceLoader().load(step, Scene(field="k"))

    message = str(raised.value)
    assert "field 'k' not found" in message
    for listed in ("p (point)", "U (point)", "p (cell)", "cellID (cell)", "T (cell)"):
        assert listed in message


def test_field_missing_in_association(step: TimeStep) -> None:
    with pytest.raises(FieldError, match="field 'T' not found as point data"):
        SurfaceLoader().load(step, Scene(field="T", association="point"))


def test_missing_part_lists_parts(step: TimeStep) -> None:
    with pytest.raises(FieldError) as raised:
        SurfaceLoader().load(step, Scene(parts=("internal", "inlet")))

    assert "part 'inlet' not found" in str(raised.value)
    assert "internal, movingWall" in str(raised.value)


def test_internal_and_patch(step: TimeStep) -> None:
    loader = SurfaceLoader()

    both = loader.load(step, Scene(field="p", parts=("internal", "movingWall")))
    patch = loader.load(step, Scene(field="p", parts=("movingWall",)))

    assert patch.GetNumberOfCells() == 4 * 2
    assert both.GetNumberOfCells() == 52 + 8
    association, values = scalars(both)
    assert association == "point"
    np.testing.assert_allclose(values, pressure(points_of(both), 0.5), rtol=1e-6)


def test_patch_cell_field(step: TimeStep) -> None:
    surface = SurfaceLoader().load(step, Scene(field="p", association="cell", parts=("movingWall",)))

    association, values = scalars(surface)
    assert association == "cell"
    centres = np.array([points_of(surface)[polygon].mean(axis=0) for polygon in polygons_of(surface)])
    np.testing.assert_allclose(values, pressure(centres, 0.5), rtol=1e-6)


# --- Fields missing from some steps or parts ----------------------------------------------------------


def test_missing_field_in_step(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    step = write_step(tmp_path, 0, 0.0, fields=("U",))

    with pytest.raises(FieldError, match="field 'p' not found"):
        SurfaceLoader().load(step, Scene(field="p"))
    with caplog.at_level(logging.WARNING):
        surface = SurfaceLoader().load(step, Scene(field="p"), missing_field="nan")

    assert np.isnan(scalars(surface)[1]).all()
    assert scalar_range(surface) is None
    assert "has no cell field 'p'" in caplog.text


def test_part_without_data_drawn_as_nan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    step = write_step(tmp_path, 0, 0.0)
    mesh = synthetic.block_mesh(4, 3, 2, lengths=(2.0, 1.5, 1.0))
    ids, faces, _ = mesh.patch("fixedWalls")
    empty = tmp_path / "frontAndBack" / "frontAndBack_0.vtk"
    empty.parent.mkdir()
    synthetic.write_legacy(empty, "frontAndBack", "POLYDATA", mesh.points[ids], faces, old_foam=True)
    step = TimeStep(step.time, step.label, {**step.parts, "frontAndBack": empty})

    with caplog.at_level(logging.WARNING):
        surface = SurfaceLoader().load(step, Scene(field="p", parts=("internal", "frontAndBack")))

    values = scalars(surface)[1]
    assert np.isnan(values).sum() == len(ids)
    assert scalar_range(surface) == pytest.approx((0.0, 8.0))
    assert "part frontAndBack has no data" in caplog.text


# --- Slices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("plane", [(1.25, 0.0, 0.0, 1.0, 0.0, 0.0), (1.0, 0.75, 0.5, 1.0, 1.0, 1.0),
                                   (0.3, 0.3, 0.3, 0.0, 0.0, 1.0)])


def test_slice_point_field(step: TimeStep, plane: tuple[float, ...]) -> None:
    surface = SurfaceLoader().load(step, Scene(field="p", slice=plane))

    points = points_of(surface)
    normal = np.array(plane[3:]) / np.linalg.norm(plane[3:])
    assert surface.GetNumberOfCells() > 0
    np.testing.assert_allclose((points - np.array(plane[:3])) @ normal, 0.0, atol=1e-6)
    association, values = scalars(surface)
    assert association == "point"
    np.testing.assert_allclose(values, pressure(points, 0.5), rtol=1e-5)


def test_slice_cell_field(step: TimeStep) -> None:
    surface = SurfaceLoader().load(step, Scene(field="cellIndex", association="cell",
                                               slice=(1.25, 0, 0, 1, 0, 0)))

    association, values = scalars(surface)
    assert association == "cell"
    # x = 1.25 lies in the third column of cells (i == 2) of a 4-cell-long block of length 2.
    assert sorted(set(values.astype(int) % 4)) == [2]
    assert len(set(values.astype(int))) == 3 * 2


def test_slice_outside_mesh_is_empty(step: TimeStep) -> None:
    surface = SurfaceLoader().load(step, Scene(field="p", slice=(5.0, 0, 0, 1, 0, 0)))

    assert surface.GetNumberOfCells() == 0
    assert step_bounds(surface) is None
    assert scalar_range(surface) is None


def test_slice_records_volume_bounds(step: TimeStep) -> None:
    loader = SurfaceLoader()

    loader.load(step, Scene(field="p", slice=(5.0, 0, 0, 1, 0, 0)))

    np.testing.assert_allclose(loader.sliced_volume_bounds, [0, 2.0, 0, 1.5, 0, 1.0])


def test_slice_leaves_patches_whole(step: TimeStep) -> None:
    surface = SurfaceLoader().load(step, Scene(field="p", parts=("movingWall",), slice=(1.25, 0, 0, 1, 0, 0)))

    assert surface.GetNumberOfCells() == 8


def one_cell_thick_step(folder: Path) -> TimeStep:
    """Write a step on a 4 x 3 x 1 mesh, 0.5 thick in z, like a 2-D OpenFOAM case."""
    return write_step(folder, 0, 0.5, mesh=synthetic.block_mesh(4, 3, 1, lengths=(2.0, 1.5, 0.5)))


@pytest.mark.parametrize("association", ["point", "cell"])
def test_slice_through_every_cell(tmp_path: Path, association: str) -> None:
    step = one_cell_thick_step(tmp_path)

    surface = SurfaceLoader().load(step, Scene(field="p", association=association,
                                               slice=(1.0, 1.0, 0.25, 0, 0, 1)))

    # Each of the 4 x 3 cells is cut into one quad of two triangles.
    assert surface.GetNumberOfCells() == 2 * 4 * 3
    np.testing.assert_allclose(points_of(surface)[:, 2], 0.25)
    actual_association, values = scalars(surface)
    assert actual_association == association
    assert np.isfinite(values).all()
    if association == "point":
        np.testing.assert_allclose(values, pressure(points_of(surface), 0.5), rtol=1e-5)


@pytest.mark.parametrize(("thickness", "plane", "cells"), [
    ("flat", (1.0, 1.0, 0.0, 0, 0, 1), 2 * 4 * 3),
    ("flat", (1.0, 1.0, 0.5, 0, 0, 1), 2 * 4 * 3),
    ("flat", (1.0, 1.0, 0.5, 0, 0, -1), 2 * 4 * 3),
    ("block", (1.0, 0.0, 0.0, 1, 0, 0), 2 * 3 * 2),
    ("block", (0.0, 0.0, 0.0, 1, 0, 0), 2 * 3 * 2),
    ("block", (2.0, 0.0, 0.0, -1, 0, 0), 2 * 3 * 2),
], ids=["flat-bottom", "flat-top", "flat-top-reversed", "block-inner", "block-min-x", "block-max-x-reversed"])
def test_slice_on_cell_face(tmp_path: Path, thickness: str, plane: tuple[float, ...], cells: int) -> None:
    step = one_cell_thick_step(tmp_path) if thickness == "flat" else write_step(tmp_path, 0, 0.5)

    surface = SurfaceLoader().load(step, Scene(field="p", slice=plane))

    # The cut is the face once, not once per cell that shares it.
    assert surface.GetNumberOfCells() == cells
    points = points_of(surface)
    normal = np.array(plane[3:], dtype=np.float64)
    np.testing.assert_allclose((points - np.array(plane[:3])) @ normal, 0.0, atol=1e-6)
    np.testing.assert_allclose(scalars(surface)[1], pressure(points, 0.5), rtol=1e-5)


def test_slice_through_every_cell_cached(tmp_path: Path) -> None:
    mesh = synthetic.block_mesh(4, 3, 1, lengths=(2.0, 1.5, 0.5))
    steps = series_steps(tmp_path, [mesh, mesh])
    loader = SurfaceLoader()
    scene = Scene(field="p", slice=(1.0, 1.0, 0.25, 0, 0, 1))

    surfaces = [loader.load(step, scene) for step in steps]

    assert loader.hits == 1
    np.testing.assert_allclose(scalars(surfaces[1])[1], pressure(points_of(surfaces[1]), 0.1), rtol=1e-5)


# --- Cache -----------------------------------------------------------------------------------------


def series_steps(folder: Path, meshes: list) -> list[TimeStep]:
    return [write_step(folder, index, 0.1 * index, mesh=mesh) for index, mesh in enumerate(meshes)]


def surface_arrays(surface: vtkPolyData) -> list[np.ndarray]:
    arrays = [points_of(surface), scalars(surface)[1]]
    for cells in (surface.GetPolys(), surface.GetLines(), surface.GetStrips(), surface.GetVerts()):
        arrays += [vtk_to_numpy(cells.GetOffsetsArray()), vtk_to_numpy(cells.GetConnectivityArray())]
    return arrays


SCENES = [
    Scene(field="p"),
    Scene(field="U", component="y", association="cell"),
    Scene(field="p", parts=("internal", "movingWall")),
    Scene(field="p", slice=(1.1, 0.7, 0.4, 1, 2, 3)),
    Scene(field="U", association="cell", slice=(1.1, 0.7, 0.4, 0, 0, 1)),
]


@pytest.mark.parametrize("scene", SCENES, ids=["point", "cell", "parts", "slice", "slice-cell"])
def test_cache_matches_uncached(tmp_path: Path, scene: Scene) -> None:
    mesh = synthetic.block_mesh(4, 3, 2, lengths=(2.0, 1.5, 1.0))
    finer = synthetic.block_mesh(6, 3, 2, lengths=(2.0, 1.5, 1.0))
    steps = series_steps(tmp_path, [mesh, mesh, mesh, finer, finer])
    cached, uncached = SurfaceLoader(), SurfaceLoader(cache=False)

    for step in steps:
        expected = surface_arrays(uncached.load(step, scene))
        actual = surface_arrays(cached.load(step, scene))

        assert len(actual) == len(expected)
        for actual_array, expected_array in zip(actual, expected):
            np.testing.assert_array_equal(actual_array, expected_array)

    assert cached.hits == 3
    assert cached.misses == 2
    assert uncached.hits == 0


def test_cache_detects_moved_points(tmp_path: Path) -> None:
    mesh = synthetic.block_mesh(4, 3, 2, lengths=(2.0, 1.5, 1.0))
    stretched = synthetic.block_mesh(4, 3, 2, lengths=(4.0, 1.5, 1.0))
    steps = series_steps(tmp_path, [mesh, stretched])
    loader = SurfaceLoader()

    loader.load(steps[0], Scene(field="p"))
    surface = loader.load(steps[1], Scene(field="p"))

    assert loader.misses == 2
    assert step_bounds(surface)[1] == pytest.approx(4.0)
    np.testing.assert_allclose(scalars(surface)[1], pressure(points_of(surface), 0.1), rtol=1e-6)


def test_cached_surfaces_stay_independent(tmp_path: Path) -> None:
    mesh = synthetic.block_mesh(4, 3, 2, lengths=(2.0, 1.5, 1.0))
    steps = series_steps(tmp_path, [mesh, mesh])
    loader = SurfaceLoader()

    first = loader.load(steps[0], Scene(field="p"))
    first_values = scalars(first)[1].copy()
    loader.load(steps[1], Scene(field="p"))

    np.testing.assert_array_equal(scalars(first)[1], first_values)


# --- Bounds and ranges -------------------------------------------------------------------------------


def test_module_level_load_surface(step: TimeStep) -> None:
    surface = load_surface(step, Scene(field="p"))

    assert scalar_range(surface) == pytest.approx((0.5, 8.5))


# --- Real foamToVTK samples ----------------------------------------------------------------------------


@pytest.mark.skipif(not CAVITY.is_dir(), reason="datasets/cavity not generated")
def test_cavity_sample(capfd: pytest.CaptureFixture) -> None:
    series = discover_series(CAVITY)
    loader = SurfaceLoader()

    for step in series.steps:
        surface = loader.load(step, Scene(field="U", parts=series.part_names))
        low, high = scalar_range(surface)
        assert 0.0 <= low <= high <= 1.0 + 1e-6

    assert step_bounds(surface) == pytest.approx((0, 0.1, 0, 0.1, 0, 0.01))
    assert high == pytest.approx(1.0)
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(not DAM_BREAK.is_dir(), reason="datasets/damBreak not generated")
def test_dam_break_sample() -> None:
    series = discover_series(DAM_BREAK)
    loader = SurfaceLoader()

    ranges = [scalar_range(loader.load(step, Scene(field="alpha.water", parts=series.part_names)))
              for step in series.steps]
    sliced = loader.load(series.steps[-1], Scene(field="U", slice=(0.3, 0.3, 0.007, 0, 1, 0)))

    # interFoam's alpha.water undershoots zero by up to about 2e-6 in this sample.
    assert all(low == pytest.approx(0.0, abs=1e-5) and high == pytest.approx(1.0) for low, high in ranges)
    assert sliced.GetNumberOfCells() > 0
    assert loader.hits >= len(series.steps) - 1


@pytest.mark.parametrize(("folder", "field", "plane"), [
    (CAVITY, "p", (0.05, 0.05, 0.005, 0, 0, 1)),
    (CAVITY, "U", (0.05, 0.05, 0.0, 0, 0, 1)),
    (DAM_BREAK, "alpha.water", (0.3, 0.3, 0.0073, 0, 0, 1)),
], ids=["cavity-mid", "cavity-face", "dam-break-mid"])
def test_sample_z_slice(folder: Path, field: str, plane: tuple[float, ...]) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder} not generated")
    series = discover_series(folder)
    loader = SurfaceLoader()

    for step in series.steps:
        surface = loader.load(step, Scene(field=field, slice=plane), missing_field="nan")
        bounds = step_bounds(surface)
        assert bounds is not None
        assert bounds[4] == pytest.approx(plane[2], abs=1e-6)
        assert bounds[5] == pytest.approx(plane[2], abs=1e-6)

    assert scalar_range(surface) is not None
    assert loader.hits == len(series.steps) - 1


def test_resolve_field(step: TimeStep) -> None:
    resolved = resolve_field(step, Scene())

    assert resolved.field == "p"
    assert resolved.association == "point"
    assert resolve_field(step, Scene(field="T")).association == "cell"
    with pytest.raises(FieldError, match="field 'k' not found"):
        resolve_field(step, Scene(field="k"))


# --- Structured datasets -----------------------------------------------------------------------------


def structured_file(folder: Path, kind: str) -> Path:
    """Write a 10 x 8 x 6 point dataset of the given XML kind with point field q and cell field c."""
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkImageData, vtkRectilinearGrid, vtkStructuredGrid
    from vtkmodules.vtkIOXML import vtkXMLImageDataWriter, vtkXMLRectilinearGridWriter, vtkXMLStructuredGridWriter
    from vtkmodules.util.numpy_support import numpy_to_vtk

    z, y, x = np.meshgrid(np.arange(6.0), np.arange(8.0), np.arange(10.0), indexing="ij")
    if kind == "vti":
        dataset, writer = vtkImageData(), vtkXMLImageDataWriter()
        dataset.SetDimensions(10, 8, 6)
    elif kind == "vtr":
        dataset, writer = vtkRectilinearGrid(), vtkXMLRectilinearGridWriter()
        dataset.SetDimensions(10, 8, 6)
        for setter, count in (("SetXCoordinates", 10), ("SetYCoordinates", 8), ("SetZCoordinates", 6)):
            getattr(dataset, setter)(numpy_to_vtk(np.arange(float(count)), deep=True))
    else:
        dataset, writer = vtkStructuredGrid(), vtkXMLStructuredGridWriter()
        dataset.SetDimensions(10, 8, 6)
        points = vtkPoints()
        points.SetData(numpy_to_vtk(np.column_stack([x.ravel(), y.ravel(), z.ravel()]), deep=True))
        dataset.SetPoints(points)

    for data, name, values in ((dataset.GetPointData(), "q", x.ravel() + 2 * y.ravel() + 3 * z.ravel()),
                               (dataset.GetCellData(), "c", np.arange(9 * 7 * 5, dtype=np.float64))):
        array = numpy_to_vtk(values, deep=True)
        array.SetName(name)
        data.AddArray(array)

    path = folder / f"flow_0.{kind}"
    writer.SetInputData(dataset)
    writer.SetFileName(str(path))
    writer.Write()
    return path


@pytest.mark.parametrize("kind", ["vti", "vtr", "vts"])
@pytest.mark.parametrize("scene", [Scene(field="q"), Scene(field="c"), Scene(field="q", slice=(4.5, 3.5, 2.5, 1, 1, 0))],
                         ids=["point", "cell", "slice"])


def test_structured_datasets(tmp_path: Path, kind: str, scene: Scene) -> None:
    step = TimeStep(0.0, "flow_0", {"internal": structured_file(tmp_path, kind)})
    cached, uncached = SurfaceLoader(), SurfaceLoader(cache=False)

    for _ in range(2):
        expected = surface_arrays(uncached.load(step, scene))
        surface = cached.load(step, scene)
        for actual_array, expected_array in zip(surface_arrays(surface), expected):
            np.testing.assert_array_equal(actual_array, expected_array)

    assert cached.hits == 1
    association, values = scalars(surface)
    if association == "point":
        points = points_of(surface)
        np.testing.assert_allclose(values, points[:, 0] + 2 * points[:, 1] + 3 * points[:, 2], rtol=1e-6)
    else:
        assert len(values) == surface.GetNumberOfCells()


@pytest.mark.parametrize("kind", ["vtp", "vtu"])
@pytest.mark.parametrize("plane", [None, (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)])
def test_empty_part(step: TimeStep, kind: str, plane: tuple[float, ...] | None) -> None:
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkUnstructuredGrid
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter, vtkXMLUnstructuredGridWriter

    empty = vtkPolyData() if kind == "vtp" else vtkUnstructuredGrid()
    array = numpy_to_vtk(np.zeros(0, np.float32), deep=True)
    array.SetName("p")
    empty.GetPointData().AddArray(array)
    writer = vtkXMLPolyDataWriter() if kind == "vtp" else vtkXMLUnstructuredGridWriter()
    writer.SetInputData(empty)
    writer.SetFileName(str(step.parts["internal"].parent / f"empty.{kind}"))
    writer.Write()
    step = TimeStep(step.time, step.label, {**step.parts, "empty": Path(writer.GetFileName())})
    loader = SurfaceLoader()

    alone = loader.load(step, Scene(field="p", slice=plane, parts=("empty",)))
    both = loader.load(step, Scene(field="p", slice=plane, parts=("internal", "empty")))
    internal = loader.load(step, Scene(field="p", slice=plane))

    assert alone.GetNumberOfCells() == 0
    assert scalar_range(alone) is None
    assert both.GetNumberOfCells() == internal.GetNumberOfCells()
    assert scalar_range(both) == scalar_range(internal)
