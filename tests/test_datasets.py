"""Tests for the sample data under datasets/: the committed real foamToVTK
output (read back with VTK's own readers) and the synthetic series generator
datasets/synthetic.py. No OpenFOAM needed; the one test that regenerates the
samples skips without it."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkIOLegacy import vtkPolyDataReader, vtkUnstructuredGridReader
from vtkmodules.vtkIOXML import vtkXMLMultiBlockDataReader

REPOSITORY = Path(__file__).resolve().parents[1]
DATASETS = REPOSITORY / "datasets"
CAVITY = DATASETS / "cavity" / "VTK"
CAVITY3D = DATASETS / "cavity3d" / "VTK"
CAVITY3D_ASCII = DATASETS / "cavity3d" / "VTK-ascii"
DAM_BREAK = DATASETS / "damBreak" / "VTK"

if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))
from datasets import synthetic  # noqa: E402

CAVITY_INDICES = list(range(0, 101, 10))
DAM_BREAK_STEPS = [  # (index, time) as interFoam's adaptive time step gave them
    (0, 0.0), (13, 0.05), (26, 0.1), (55, 0.15), (79, 0.2), (100, 0.25),
    (120, 0.3), (159, 0.35),
]


# --- helpers -------------------------------------------------------------------


def read_legacy_vtk(path: Path):
    """Read a legacy file with VTK's reader, all scalars/vectors/fields on."""
    head = path.read_bytes()[:400]
    reader_cls = vtkPolyDataReader if b"DATASET POLYDATA" in head else vtkUnstructuredGridReader
    reader = reader_cls()
    reader.SetFileName(str(path))
    reader.ReadAllScalarsOn()
    reader.ReadAllVectorsOn()
    reader.ReadAllFieldsOn()
    reader.Update()
    assert reader.GetErrorCode() == 0, f"VTK could not read {path}"
    return reader.GetOutput()


def array_names(attributes) -> list[str]:
    return [attributes.GetArrayName(i) for i in range(attributes.GetNumberOfArrays())]


def time_value(data) -> float | None:
    arr = data.GetFieldData().GetArray("TimeValue")
    return None if arr is None else float(arr.GetValue(0))


def as_numpy(attributes, name: str) -> np.ndarray:
    arr = attributes.GetArray(name)
    assert arr is not None, f"no array {name!r}; have {array_names(attributes)}"
    return vtk_to_numpy(arr)


def read_vtm(path: Path):
    reader = vtkXMLMultiBlockDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def block_names(multiblock) -> list[str]:
    return [
        multiblock.GetMetaData(i).Get(multiblock.NAME())
        for i in range(multiblock.GetNumberOfBlocks())
    ]


def index_of(path: Path) -> int:
    return int(re.search(r"_(\d+)\.vt[km]$", path.name).group(1))


# --- committed sample A: cavity, legacy ------------------------------------------


def test_cavity_files_exist():
    internal = sorted(CAVITY.glob("cavity_*.vtk"), key=index_of)
    assert [index_of(p) for p in internal] == CAVITY_INDICES
    for patch in ("movingWall", "fixedWalls"):
        files = sorted((CAVITY / patch).glob(f"{patch}_*.vtk"), key=index_of)
        assert [index_of(p) for p in files] == CAVITY_INDICES
    # the empty frontAndBack patch of the 2-D case is not written by v1912
    assert not (CAVITY / "frontAndBack").exists()
    assert (CAVITY / "cavity.vtk.series").is_file()


@pytest.mark.parametrize("index", CAVITY_INDICES)
def test_cavity_internal_read_by_vtk(index):
    grid = read_legacy_vtk(CAVITY / f"cavity_{index}.vtk")
    assert grid.GetNumberOfCells() == 400
    assert grid.GetNumberOfPoints() == 882
    assert set(vtk_to_numpy(grid.GetCellTypes()).tolist()) == {12}  # hexahedra
    assert array_names(grid.GetCellData()) == ["p", "U"]
    assert array_names(grid.GetPointData()) == ["p", "U"]
    assert as_numpy(grid.GetCellData(), "U").shape == (400, 3)
    assert as_numpy(grid.GetPointData(), "p").shape == (882,)
    assert time_value(grid) == pytest.approx(index * 0.005, abs=1e-6)
    np.testing.assert_allclose(grid.GetBounds(), (0, 0.1, 0, 0.1, 0, 0.01), atol=1e-7)
    if index > 0:  # the lid drives the flow; at t=0 everything is zero
        assert np.abs(as_numpy(grid.GetCellData(), "U")).max() > 0.5


@pytest.mark.parametrize("patch,faces,points", [("movingWall", 20, 42), ("fixedWalls", 60, 122)])
def test_cavity_patches_read_by_vtk(patch, faces, points):
    for index in (0, 50, 100):
        poly = read_legacy_vtk(CAVITY / patch / f"{patch}_{index}.vtk")
        assert poly.GetNumberOfPolys() == faces
        assert poly.GetNumberOfPoints() == points
        assert array_names(poly.GetCellData()) == ["p", "U"]
        assert array_names(poly.GetPointData()) == ["p", "U"]
        assert time_value(poly) == pytest.approx(index * 0.005, abs=1e-6)
    if patch == "movingWall":  # the lid: U = (1 0 0)
        np.testing.assert_allclose(as_numpy(poly.GetCellData(), "U"), [[1, 0, 0]] * 20)


def test_cavity_is_binary_big_endian():
    raw = (CAVITY / "cavity_20.vtk").read_bytes()
    assert raw.startswith(
        b"# vtk DataFile Version 2.0\ncavity\nBINARY\nDATASET UNSTRUCTURED_GRID\n"
        b"FIELD FieldData 1\nTimeValue 1 1 float\n" + struct.pack(">f", 0.1) + b"\n\nPOINTS 882 float\n"
    )
    assert b"\n\nCELL_DATA 400\nFIELD FieldData 2\np 1 400 float\n" in raw
    assert b"\n\nPOINT_DATA 882\nFIELD FieldData 2\np 1 882 float\n" in raw


def test_cavity_legacy_series_names_do_not_resolve():
    """v1912 writes "_<index>" as the names in the legacy .vtk.series file:
    they name no file, so a reader must not trust them (see README)."""
    series = json.loads((CAVITY / "cavity.vtk.series").read_text())
    names = [entry["name"] for entry in series["files"]]
    assert names == [f"_{i}" for i in CAVITY_INDICES]
    assert not any((CAVITY / name).exists() for name in names)
    times = [entry["time"] for entry in series["files"]]
    assert times == pytest.approx([i * 0.005 for i in CAVITY_INDICES])


# --- committed sample B: damBreak, XML ------------------------------------------


def test_dambreak_series_file():
    series = json.loads((DAM_BREAK / "damBreak.vtm.series").read_text())
    entries = [(e["name"], e["time"]) for e in series["files"]]
    assert entries == [(f"damBreak_{i}.vtm", pytest.approx(t)) for i, t in DAM_BREAK_STEPS]
    for name, _ in entries:
        assert (DAM_BREAK / name).is_file()
        assert (DAM_BREAK / name.removesuffix(".vtm") / "internal.vtu").is_file()
    steps = np.diff([i for i, _ in DAM_BREAK_STEPS])
    assert len(set(steps.tolist())) > 1, "indices should be irregular (adaptive time step)"


@pytest.mark.parametrize("index,time", DAM_BREAK_STEPS)
def test_dambreak_read_by_vtk(index, time):
    mb = read_vtm(DAM_BREAK / f"damBreak_{index}.vtm")
    assert block_names(mb) == ["internal", "boundary"]
    assert time_value(mb) == pytest.approx(time, abs=1e-6)
    internal = mb.GetBlock(0)
    assert internal.GetNumberOfCells() == 2268
    assert internal.GetNumberOfPoints() == 4746
    assert set(vtk_to_numpy(internal.GetCellTypes()).tolist()) == {12}
    assert time_value(internal) == pytest.approx(time, abs=1e-6)
    if index == 0:  # time 0 contains the initial fields, incl. the .orig copy
        expected = ["alpha.water", "alpha.water.orig", "p_rgh", "U"]
    else:
        expected = ["alpha.water", "p", "p_rgh", "U"]
    assert array_names(internal.GetCellData()) == expected
    assert array_names(internal.GetPointData()) == expected
    alpha = as_numpy(internal.GetCellData(), "alpha.water")
    assert alpha.min() > -1e-3
    assert alpha.max() == pytest.approx(1.0, abs=1e-3)
    boundary = mb.GetBlock(1)
    assert block_names(boundary) == ["leftWall", "rightWall", "lowerWall", "atmosphere"]
    faces = [boundary.GetBlock(i).GetNumberOfCells() for i in range(4)]
    assert faces == [50, 50, 62, 46]
    for i in range(4):
        assert array_names(boundary.GetBlock(i).GetCellData()) == expected


def test_dambreak_water_moves():
    first = as_numpy(read_vtm(DAM_BREAK / "damBreak_0.vtm").GetBlock(0).GetCellData(), "alpha.water")
    last = as_numpy(read_vtm(DAM_BREAK / "damBreak_159.vtm").GetBlock(0).GetCellData(), "alpha.water")
    assert np.abs(first - last).max() > 0.5


# --- committed sample C and the writer's fidelity ----------------------------------


def committed_legacy_files() -> list[Path]:
    return sorted(
        p for folder in (CAVITY, CAVITY3D, CAVITY3D_ASCII) for p in folder.rglob("*.vtk")
    )


def test_cavity3d_files():
    for folder in (CAVITY3D, CAVITY3D_ASCII):
        for index in (0, 1, 2):
            grid = read_legacy_vtk(folder / f"cavity3d_{index}.vtk")
            assert grid.GetNumberOfCells() == 24
            assert time_value(grid) == pytest.approx(index * 0.005, abs=1e-7)
            for patch in ("movingWall", "fixedWalls", "frontAndBack"):
                assert (folder / patch / f"{patch}_{index}.vtk").is_file()
    ascii_grid = read_legacy_vtk(CAVITY3D_ASCII / "cavity3d_2.vtk")
    assert array_names(ascii_grid.GetCellData()) == ["cellID", "p", "U"]  # -with-ids
    np.testing.assert_array_equal(as_numpy(ascii_grid.GetCellData(), "cellID"), np.arange(24))
    binary_grid = read_legacy_vtk(CAVITY3D / "cavity3d_2.vtk")
    np.testing.assert_allclose(
        as_numpy(ascii_grid.GetCellData(), "U"), as_numpy(binary_grid.GetCellData(), "U"),
        rtol=1e-5, atol=1e-9,
    )


@pytest.mark.parametrize(
    "path", committed_legacy_files(), ids=lambda p: str(p.relative_to(DATASETS))
)
def test_writer_reproduces_foamtovtk_bytes(path, tmp_path):
    """write_legacy, fed a real file's own arrays, writes the same bytes."""
    parsed = synthetic.read_legacy(path)
    out = synthetic.write_legacy(
        tmp_path / path.name, parsed["title"], parsed["dataset"], parsed["points"],
        parsed["conn"], parsed["cell_fields"], parsed["point_fields"],
        time=parsed["time"], ascii=parsed["ascii"],
    )
    assert out.read_bytes() == path.read_bytes()


def test_series_file_matches_foamtovtk(tmp_path):
    for folder, case, times in (
        (CAVITY, "cavity", [(i, i * 0.005) for i in CAVITY_INDICES]),
        (CAVITY3D, "cavity3d", [(0, 0.0), (1, 0.005), (2, 0.01)]),
    ):
        synthetic._write_vtk_series(tmp_path / "s.series", times)
        assert (tmp_path / "s.series").read_bytes() == (folder / f"{case}.vtk.series").read_bytes()


@pytest.mark.parametrize(
    "folder,case,shape,lengths,patches",
    [
        (CAVITY, "cavity_0", (20, 20, 1), (0.1, 0.1, 0.01), {
            "movingWall": ["y+"], "fixedWalls": ["x-", "x+", "y-"]}),
        (CAVITY3D, "cavity3d_0", (4, 3, 2), (0.1, 0.1, 0.01), {
            "movingWall": ["y+"], "fixedWalls": ["x-", "x+", "y-"],
            "frontAndBack": ["z-", "z+"]}),
    ],
)
def test_block_mesh_matches_foamtovtk(folder, case, shape, lengths, patches):
    """The generator's mesh has blockMesh+foamToVTK's point, cell and face order."""
    mesh = synthetic.block_mesh(*shape, lengths=lengths)
    real = synthetic.read_legacy(folder / f"{case}.vtk")
    np.testing.assert_array_equal(mesh.cells, real["conn"])
    np.testing.assert_array_equal(mesh.points.astype(np.float32), real["points"])
    for patch, sides in patches.items():
        faces = np.concatenate([synthetic._faces(mesh, s) for s in sides])
        ids, local = synthetic.local_patch(faces)
        real_patch = synthetic.read_legacy(folder / patch / f"{patch}_0.vtk")
        np.testing.assert_array_equal(local, real_patch["conn"])
        np.testing.assert_array_equal(mesh.points[ids].astype(np.float32), real_patch["points"])


@pytest.mark.parametrize("dims", [2, 3])
def test_synthetic_hexahedra_have_positive_volume(tmp_path, dims):
    from vtkmodules.vtkFiltersVerdict import vtkMeshQuality

    vtk_dir = synthetic.write_series(tmp_path, cells=400, steps=1, dims=dims)
    for path in (vtk_dir / "synthetic_0.vtk", CAVITY / "cavity_0.vtk", CAVITY3D / "cavity3d_0.vtk"):
        quality = vtkMeshQuality()
        quality.SetInputData(read_legacy_vtk(path))
        quality.SetHexQualityMeasureToVolume()
        quality.Update()
        volumes = as_numpy(quality.GetOutput().GetCellData(), "Quality")
        assert volumes.min() > 0
        assert volumes.max() / volumes.min() == pytest.approx(1.0, abs=1e-4)


# --- synthetic series, read back by VTK -------------------------------------------


def internal_files(vtk_dir: Path, case: str = "synthetic") -> list[Path]:
    return sorted(vtk_dir.glob(f"{case}_*.vtk"), key=index_of)


def test_synthetic_2d_binary(tmp_path):
    vtk_dir = synthetic.write_series(tmp_path, cells=800, steps=4, dims=2, dt=0.05, index_stride=20)
    assert vtk_dir == tmp_path / "VTK"
    files = internal_files(vtk_dir)
    assert [index_of(p) for p in files] == [0, 20, 40, 60]
    nx, ny, nz = synthetic.mesh_dims(800, 2)
    assert nz == 1
    assert abs(nx * ny - 800) < 50
    previous = None
    for step, path in enumerate(files):
        raw = path.read_bytes()
        assert raw.startswith(b"# vtk DataFile Version 2.0\nsynthetic\nBINARY\nDATASET UNSTRUCTURED_GRID\n"
                              b"FIELD FieldData 1\nTimeValue 1 1 float\n" + struct.pack(">f", step * 0.05))
        grid = read_legacy_vtk(path)
        assert grid.GetNumberOfCells() == nx * ny
        assert grid.GetNumberOfPoints() == (nx + 1) * (ny + 1) * 2
        assert set(vtk_to_numpy(grid.GetCellTypes()).tolist()) == {12}
        assert time_value(grid) == pytest.approx(step * 0.05, abs=1e-7)
        assert array_names(grid.GetCellData()) == ["p", "U"]
        assert array_names(grid.GetPointData()) == ["p", "U"]
        U = as_numpy(grid.GetCellData(), "U")
        assert U.shape == (nx * ny, 3)
        assert np.all(U[:, 2] == 0)  # 2-D: no z velocity
        zs = np.unique(vtk_to_numpy(grid.GetPoints().GetData())[:, 2])
        assert len(zs) == 2  # one cell thick
        p = as_numpy(grid.GetCellData(), "p")
        assert np.all(np.isfinite(p))
        assert p.max() > 0.5
        assert p.min() < -0.5
        if previous is not None:
            assert np.abs(p - previous).max() > 0.1, "frames should differ"
        previous = p
        for patch, faces in (("movingWall", nx), ("fixedWalls", 2 * ny + nx)):
            poly = read_legacy_vtk(vtk_dir / patch / f"{patch}_{index_of(path)}.vtk")
            assert poly.GetNumberOfPolys() == faces
            assert array_names(poly.GetCellData()) == ["p", "U"]
            assert array_names(poly.GetPointData()) == ["p", "U"]
            assert time_value(poly) == pytest.approx(step * 0.05, abs=1e-7)
    series = json.loads((vtk_dir / "synthetic.vtk.series").read_text())
    assert [e["name"] for e in series["files"]] == ["_0", "_20", "_40", "_60"]  # as v1912
    assert [e["time"] for e in series["files"]] == pytest.approx([0, 0.05, 0.1, 0.15])


def test_synthetic_ascii_matches_binary(tmp_path):
    kw = dict(cells=300, steps=2, dims=2, dt=0.1)
    binary_dir = synthetic.write_series(tmp_path / "b", **kw)
    ascii_dir = synthetic.write_series(tmp_path / "a", ascii=True, **kw)
    for name in ("synthetic_1.vtk", "movingWall/movingWall_1.vtk"):
        assert (ascii_dir / name).read_bytes().split(b"\n")[2] == b"ASCII"
        a, b = read_legacy_vtk(ascii_dir / name), read_legacy_vtk(binary_dir / name)
        assert a.GetNumberOfCells() == b.GetNumberOfCells()
        assert time_value(a) == pytest.approx(0.1)
        for attr in ("GetCellData", "GetPointData"):
            for field in ("p", "U"):
                np.testing.assert_allclose(
                    as_numpy(getattr(a, attr)(), field), as_numpy(getattr(b, attr)(), field),
                    rtol=1e-5, atol=1e-6,
                )


@pytest.mark.parametrize("ascii", [False, True])
def test_synthetic_nan_step(tmp_path, ascii):
    vtk_dir = synthetic.write_series(tmp_path, cells=200, steps=3, nan_step=1, ascii=ascii)
    for index, all_nan in ((0, False), (1, True), (2, False)):
        for path in (vtk_dir / f"synthetic_{index}.vtk", vtk_dir / "movingWall" / f"movingWall_{index}.vtk"):
            data = read_legacy_vtk(path)
            for attr in (data.GetCellData(), data.GetPointData()):
                for field in ("p", "U"):
                    values = as_numpy(attr, field)
                    assert np.all(np.isnan(values)) if all_nan else np.all(np.isfinite(values))


def test_synthetic_grow(tmp_path):
    vtk_dir = synthetic.write_series(tmp_path, cells=500, steps=5, grow=3.0)
    counts = [read_legacy_vtk(p).GetNumberOfCells() for p in internal_files(vtk_dir)]
    assert counts == sorted(counts)
    assert len(set(counts)) == 5
    assert counts[-1] / counts[0] == pytest.approx(4.0, rel=0.1)
    bounds = [read_legacy_vtk(p).GetBounds() for p in internal_files(vtk_dir)]
    np.testing.assert_allclose(bounds[0], bounds[-1])  # same domain, finer mesh


def test_synthetic_old_foam(tmp_path):
    vtk_dir = synthetic.write_series(tmp_path, cells=200, steps=3, dims=2, old_foam=True)
    assert not list(vtk_dir.glob("*.series"))
    first = (vtk_dir / "synthetic_1.vtk").read_bytes()
    assert b"TimeValue" not in first
    assert first.startswith(b"# vtk DataFile Version 2.0\nsynthetic\nBINARY\nDATASET UNSTRUCTURED_GRID\nPOINTS ")
    assert b"FIELD attributes 3\ncellID 1 " in first
    assert b"\nPOINT_DATA  " in first
    for index, cell_fields in ((0, ["cellID", "U"]), (1, ["cellID", "p", "U"]), (2, ["cellID", "p", "U"])):
        grid = read_legacy_vtk(vtk_dir / f"synthetic_{index}.vtk")
        assert time_value(grid) is None
        assert array_names(grid.GetCellData()) == cell_fields
        assert array_names(grid.GetPointData()) == cell_fields[1:]
        assert grid.GetCellData().GetArray("cellID").GetDataTypeAsString() == "int"
        np.testing.assert_array_equal(as_numpy(grid.GetCellData(), "cellID"), np.arange(grid.GetNumberOfCells()))
        poly = read_legacy_vtk(vtk_dir / "movingWall" / f"movingWall_{index}.vtk")
        assert array_names(poly.GetCellData()) == ["patchID"] + cell_fields[1:]
        empty = read_legacy_vtk(vtk_dir / "frontAndBack" / f"frontAndBack_{index}.vtk")
        assert empty.GetNumberOfPolys() == 2 * grid.GetNumberOfCells()
        assert empty.GetCellData().GetNumberOfArrays() == 0
    ascii_dir = synthetic.write_series(tmp_path / "a", cells=200, steps=2, old_foam=True, ascii=True)
    grid = read_legacy_vtk(ascii_dir / "synthetic_1.vtk")
    assert array_names(grid.GetCellData()) == ["cellID", "p", "U"]


def test_synthetic_cell_ids_and_irregular(tmp_path):
    vtk_dir = synthetic.write_series(tmp_path, cells=100, steps=4, cell_id=True, irregular=True)
    assert [index_of(p) for p in internal_files(vtk_dir)] == [0, 1, 3, 6]
    grid = read_legacy_vtk(vtk_dir / "synthetic_3.vtk")
    assert array_names(grid.GetCellData()) == ["cellID", "p", "U"]
    poly = read_legacy_vtk(vtk_dir / "fixedWalls" / "fixedWalls_3.vtk")
    assert array_names(poly.GetCellData()) == ["patchID", "p", "U"]
    np.testing.assert_array_equal(as_numpy(poly.GetCellData(), "patchID"), 1)


def test_synthetic_3d(tmp_path):
    vtk_dir = synthetic.write_series(tmp_path, cells=3000, steps=2, dims=3, case="box")
    nx, ny, nz = synthetic.mesh_dims(3000, 3)
    assert nz > 1
    assert abs(nx * ny * nz - 3000) < 300
    grid = read_legacy_vtk(vtk_dir / "box_1.vtk")
    assert grid.GetNumberOfCells() == nx * ny * nz
    np.testing.assert_allclose(grid.GetBounds(), (0, 2, 0, 1, 0, 1), atol=1e-6)
    assert np.abs(as_numpy(grid.GetCellData(), "U")[:, 2]).max() > 0
    poly = read_legacy_vtk(vtk_dir / "fixedWalls" / "fixedWalls_1.vtk")
    assert poly.GetNumberOfPolys() == 2 * ny * nz + nx * nz + 2 * nx * ny


def test_synthetic_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, str(DATASETS / "synthetic.py"), str(tmp_path), "--cells", "200",
         "--steps", "3", "--index-stride", "5", "--dt", "0.2"],
        capture_output=True, text=True, check=True,
    )
    assert str(tmp_path / "VTK") in result.stdout
    assert [index_of(p) for p in internal_files(tmp_path / "VTK")] == [0, 5, 10]
    assert time_value(read_legacy_vtk(tmp_path / "VTK" / "synthetic_10.vtk")) == pytest.approx(0.4)


# --- scripts ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_pass_shellcheck():
    scripts = [DATASETS / n for n in ("make_foam_samples.sh", "make_transient.sh", "foam_common.sh")]
    subprocess.run(["shellcheck", *map(str, scripts)], check=True, cwd=REPOSITORY)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("blockMesh") is None or not Path("/usr/share/openfoam/etc/bashrc").is_file(),
    reason="OpenFOAM v1912 (apt-get install openfoam openfoam-examples) not installed",
)
def test_make_foam_samples_reproduces_committed_data(tmp_path):
    subprocess.run(
        ["bash", str(DATASETS / "make_foam_samples.sh"), "--outdir", str(tmp_path)],
        check=True, capture_output=True, timeout=240,
    )
    for sample in ("cavity", "damBreak", "cavity3d"):
        committed = sorted(p.relative_to(DATASETS) for p in (DATASETS / sample).rglob("*") if p.is_file())
        fresh = sorted(p.relative_to(tmp_path) for p in (tmp_path / sample).rglob("*") if p.is_file())
        assert fresh == committed
        for rel in committed:
            assert (tmp_path / rel).read_bytes() == (DATASETS / rel).read_bytes(), rel
