"""Tests for kvis_parallel.reader: reading the files of a step, and the errors for corrupt files.

The helpers here write small foamToVTK-style steps with fields known in
closed form; test_fields.py and test_surface.py use them too.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonDataModel import vtkMultiBlockDataSet, vtkPolyData

from kvis_parallel.errors import StepReadError
from kvis_parallel.fields import SCALARS_NAME
from kvis_parallel.reader import read_parts
from kvis_parallel.scene import Scene
from kvis_parallel.series import TimeStep
from kvis_parallel.surface import SurfaceLoader

REPOSITORY = Path(__file__).resolve().parents[1]
CAVITY = REPOSITORY / "datasets" / "cavity" / "VTK"
DAM_BREAK = REPOSITORY / "datasets" / "damBreak" / "VTK"


def load_synthetic() -> ModuleType:
    """Import datasets/synthetic.py, the foamToVTK legacy writer, by path."""
    name = "kvis_test_synthetic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPOSITORY / "datasets" / "synthetic.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


synthetic = load_synthetic()


@pytest.fixture(autouse=True)
def no_vtk_output(capfd: pytest.CaptureFixture) -> Iterator[None]:
    """Fail any test during which VTK printed to the terminal."""
    yield
    assert capfd.readouterr().err == ""


# --- A small foamToVTK-style case with fields known in closed form ------------------------


def pressure(xyz: np.ndarray, time: float) -> np.ndarray:
    """A linear field, so interpolation along cut edges reproduces it exactly."""
    return (xyz[:, 0] + 2 * xyz[:, 1] + 3 * xyz[:, 2] + time).astype(np.float32)


def velocity(xyz: np.ndarray, time: float) -> np.ndarray:
    return np.column_stack([xyz[:, 0], -xyz[:, 1], np.full(len(xyz), time)]).astype(np.float32)


def temperature(count: int) -> np.ndarray:
    values = np.linspace(300.0, 310.0, count).astype(np.float32)
    values[0] = np.nan
    values[-1] = np.inf
    return values


def write_step(folder: Path, index: int, time: float, *, mesh=None, ascii: bool = False,
               fields: tuple[str, ...] = ("p", "U"), patch: bool = True) -> TimeStep:
    """Write one legacy step like foamToVTK -with-ids: cellID, then the fields, at cells and points."""
    mesh = mesh or synthetic.block_mesh(4, 3, 2, lengths=(2.0, 1.5, 1.0))
    cell_index = np.arange(mesh.n_cells, dtype=np.float32)

    def values(xyz: np.ndarray) -> list[tuple[str, np.ndarray]]:
        known = {"p": pressure(xyz, time), "U": velocity(xyz, time)}
        return [(name, known[name]) for name in fields]

    cell_fields = [("cellID", np.arange(mesh.n_cells, dtype=np.int32))] + values(mesh.centres)
    cell_fields += [("T", temperature(mesh.n_cells)), ("cellIndex", cell_index)]
    parts = {"internal": folder / f"case_{index}.vtk"}
    synthetic.write_legacy(parts["internal"], "case", "UNSTRUCTURED_GRID", mesh.points, mesh.cells,
                           cell_fields=cell_fields, point_fields=values(mesh.points), time=time, ascii=ascii)

    if patch:
        ids, faces, centres = mesh.patch("movingWall")
        parts["movingWall"] = folder / "movingWall" / f"movingWall_{index}.vtk"
        parts["movingWall"].parent.mkdir(parents=True, exist_ok=True)
        synthetic.write_legacy(parts["movingWall"], "movingWall", "POLYDATA", mesh.points[ids], faces,
                               cell_fields=[("patchID", np.zeros(len(faces), np.int32))] + values(centres),
                               point_fields=values(mesh.points[ids]), time=time, ascii=ascii)
    return TimeStep(time, f"case_{index}", parts)


@pytest.fixture
def step(tmp_path: Path) -> TimeStep:
    return write_step(tmp_path, 0, 0.5)


def scalars(surface: vtkPolyData) -> tuple[str, np.ndarray]:
    """Return the association and values of the active kvis_scalars array."""
    point_array = surface.GetPointData().GetScalars()
    cell_array = surface.GetCellData().GetScalars()
    assert (point_array is None) != (cell_array is None)
    array = point_array if point_array is not None else cell_array
    assert array.GetName() == SCALARS_NAME
    assert array.GetNumberOfComponents() == 1
    return ("point" if point_array is not None else "cell"), vtk_to_numpy(array)


def points_of(surface: vtkPolyData) -> np.ndarray:
    return vtk_to_numpy(surface.GetPoints().GetData()).astype(np.float64)


def polygons_of(surface: vtkPolyData) -> list[np.ndarray]:
    polys = surface.GetPolys()
    offsets = vtk_to_numpy(polys.GetOffsetsArray())
    connectivity = vtk_to_numpy(polys.GetConnectivityArray())
    return [connectivity[start:end] for start, end in zip(offsets[:-1], offsets[1:])]


# --- Reading parts -------------------------------------------------------


def test_read_parts_names_blocks(step: TimeStep) -> None:
    blocks = read_parts(step, ["movingWall", "internal"])

    assert isinstance(blocks, vtkMultiBlockDataSet)
    assert blocks.GetNumberOfBlocks() == 2
    assert blocks.GetMetaData(0).Get(vtkMultiBlockDataSet.NAME()) == "movingWall"
    assert isinstance(blocks.GetBlock(0), vtkPolyData)
    assert blocks.GetBlock(1).GetNumberOfCells() == 24


# --- Corrupt files --------------------------------------------------------------------------------


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


CORRUPTIONS = {
    "truncated binary": lambda path: truncate(path, 0.5),
    "truncated in cell data": lambda path: truncate(path, 0.8),
    "garbage": lambda path: path.write_bytes(b"\x00\x01garbage" * 100),
    "empty": lambda path: path.write_bytes(b""),
    "text without dataset": lambda path: path.write_text("# vtk DataFile Version 2.0\ncase\nASCII\n"),
    "unknown dataset": lambda path: path.write_text("# vtk DataFile Version 2.0\ncase\nASCII\nDATASET FOO\n"),
    "missing": lambda path: path.unlink(),
    "cut before cell types": lambda path: path.write_bytes(path.read_bytes().split(b"CELL_TYPES")[0]),
    "cut before cells": lambda path: path.write_bytes(path.read_bytes().split(b"\nCELLS")[0]),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("ascii", [False, True])
def test_corrupt_legacy_step(tmp_path: Path, capfd: pytest.CaptureFixture, corruption: str, ascii: bool) -> None:
    step = write_step(tmp_path, 3, 0.5, ascii=ascii)
    CORRUPTIONS[corruption](step.parts["internal"])

    with pytest.raises(StepReadError) as raised:
        SurfaceLoader().load(step, Scene(field="p"))

    assert str(step.parts["internal"]) in str(raised.value)
    assert "Event" not in str(raised.value)
    output = capfd.readouterr()
    assert output.out == ""
    assert output.err == ""


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_corrupt_xml_step(tmp_path: Path, capfd: pytest.CaptureFixture, keep: float) -> None:
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridWriter

    legacy = write_step(tmp_path, 0, 0.5, patch=False)
    writer = vtkXMLUnstructuredGridWriter()
    writer.SetInputData(read_parts(legacy, ["internal"]).GetBlock(0))
    writer.SetFileName(str(tmp_path / "case_0.vtu"))
    writer.SetDataModeToBinary()
    writer.Write()
    truncate(tmp_path / "case_0.vtu", keep)
    step = TimeStep(0.5, "case_0", {"internal": tmp_path / "case_0.vtu"})

    with pytest.raises(StepReadError) as raised:
        SurfaceLoader().load(step, Scene(field="p"))

    assert str(tmp_path / "case_0.vtu") in str(raised.value)
    assert "Error parsing XML" in str(raised.value)
    output = capfd.readouterr()
    assert output.err == ""


def cavity_cut(marker: bytes, offset: int = 0) -> Callable[[bytes], bytes]:
    """Return a cut of a file's bytes at ``offset`` bytes after the first ``marker``."""
    return lambda data: data[: data.index(marker) + offset]


# Cuts of a binary foamToVTK file, from inside the points to inside the last array.
CAVITY_CUTS = {
    "3000 bytes": lambda data: data[:3000],
    "inside the cells": cavity_cut(b"\nCELLS", 500),
    "before the cell data": cavity_cut(b"CELL_DATA"),
    "after the CELL_DATA line": cavity_cut(b"CELL_DATA 400\n", len(b"CELL_DATA 400\n")),
    "inside an array declaration": cavity_cut(b"U 3 400", 4),
    "inside a cell array": cavity_cut(b"POINT_DATA", -100),
    "inside a point array": lambda data: data[:-500],
}


@pytest.mark.skipif(not CAVITY.is_dir(), reason="datasets/cavity not generated")
@pytest.mark.parametrize("cut", list(CAVITY_CUTS))
def test_truncated_legacy_step_names_file(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "cavity_50.vtk"
    path.write_bytes(CAVITY_CUTS[cut]((CAVITY / "cavity_50.vtk").read_bytes()))
    step = TimeStep(0.5, "cavity_50", {"internal": path})

    with pytest.raises(StepReadError) as raised:
        SurfaceLoader().load(step, Scene(field="p"))

    assert str(path) in str(raised.value)
    assert "truncated" in str(raised.value)


def test_reader_recovers_after_corrupt_step(tmp_path: Path) -> None:
    good = write_step(tmp_path, 0, 0.5)
    bad = write_step(tmp_path, 1, 1.0)
    truncate(bad.parts["internal"], 0.5)
    loader = SurfaceLoader()

    with pytest.raises(StepReadError):
        loader.load(bad, Scene(field="p"))
    surface = loader.load(good, Scene(field="p"))

    np.testing.assert_allclose(scalars(surface)[1], pressure(points_of(surface), 0.5), rtol=1e-6)
