"""Tests for kvis_parallel.series: finding time steps and ordering them by time."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest

from kvis_parallel.errors import SeriesError, UserError
from kvis_parallel.series import TimeSeries, discover_series, read_time_value, read_vtm_parts

REPOSITORY = Path(__file__).resolve().parents[1]
CAVITY = REPOSITORY / "datasets" / "cavity" / "VTK"
DAM_BREAK = REPOSITORY / "datasets" / "damBreak" / "VTK"


# --- File builders -------------------------------------------------------------


def legacy_bytes(time: float | None, *, binary: bool = True, precision: str = "float",
                 dataset: str = "UNSTRUCTURED_GRID") -> bytes:
    """Build the head of a foamToVTK legacy file, with a TimeValue when ``time`` is given."""
    head = f"# vtk DataFile Version 2.0\ncase\n{'BINARY' if binary else 'ASCII'}\nDATASET {dataset}\n".encode()
    if time is not None:
        head += f"FIELD FieldData 1\nTimeValue 1 1 {precision}\n".encode()
        if binary:
            head += struct.pack(">d" if precision == "double" else ">f", time) + b"\n"
        else:
            head += f"{time!r}\n".encode()
    return head + b"POINTS 0 float\n"


def write_legacy(path: Path, time: float | None = None, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(legacy_bytes(time, **options))
    return path


def write_legacy_case(folder: Path, indices: list[int], times: list[float] | None = None,
                      patches: tuple[str, ...] = ("movingWall", "fixedWalls"), case: str = "cavity") -> Path:
    """Write a foamToVTK legacy layout: internal files and one folder per patch."""
    for position, index in enumerate(indices):
        time = None if times is None else times[position]
        write_legacy(folder / f"{case}_{index}.vtk", time)
        for patch in patches:
            write_legacy(folder / patch / f"{patch}_{index}.vtk", time, dataset="POLYDATA")
    return folder


def xml_piece(time: float | None) -> str:
    field = ""
    if time is not None:
        field = ("<FieldData><DataArray type='Float64' Name='TimeValue' NumberOfTuples='1' format='ascii'>"
                 f"{time!r}</DataArray></FieldData>")
    return ("<?xml version='1.0'?>\n<VTKFile type='PolyData' version='1.0' byte_order='LittleEndian'>"
            f"<PolyData>{field}<Piece NumberOfPoints='0'/></PolyData></VTKFile>\n")


def write_xml_case(folder: Path, indices: list[int], times: list[float], *, with_series: bool = True,
                   case: str = "damBreak", patches: tuple[str, ...] = ("leftWall", "atmosphere")) -> Path:
    """Write a foamToVTK XML layout: a .vtm per step, its parts, and optionally the .vtm.series."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, time in zip(indices, times):
        step = f"{case}_{index}"
        (folder / step / "boundary").mkdir(parents=True)
        (folder / step / "internal.vtu").write_text(xml_piece(time))
        blocks = "".join(f"<DataSet name='{patch}' file='{step}/boundary/{patch}.vtp'/>" for patch in patches)
        for patch in patches:
            (folder / step / "boundary" / f"{patch}.vtp").write_text(xml_piece(time))
        (folder / f"{step}.vtm").write_text(
            "<?xml version='1.0'?>\n<VTKFile type='vtkMultiBlockDataSet' version='1.0'>"
            f"<vtkMultiBlockDataSet><DataSet name='internal' file='{step}/internal.vtu'/>"
            f"<Block name='boundary'>{blocks}</Block></vtkMultiBlockDataSet>"
            "<FieldData><DataArray type='Float32' Name='TimeValue' NumberOfTuples='1' format='ascii'>"
            f"\n{time!r}\n</DataArray></FieldData></VTKFile>\n"
        )
    if with_series:
        files = [{"name": f"{case}_{index}.vtm", "time": time} for index, time in zip(indices, times)]
        (folder / f"{case}.vtm.series").write_text(json.dumps({"file-series-version": "1.0", "files": files}))
    return folder


def times_of(series: TimeSeries) -> list[float]:
    return [step.time for step in series.steps]


def labels_of(series: TimeSeries) -> list[str]:
    return [step.label for step in series.steps]


# --- Locating the series -------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["VTK", "sample/VTK", "job_42/case/VTK"])
def test_discover_finds_vtk_folder_below(tmp_path: Path, prefix: str) -> None:
    write_legacy_case(tmp_path / prefix, [0, 10], [0.0, 0.5])

    series = discover_series(tmp_path)

    assert series.root == tmp_path / prefix
    assert series.layout == "foam-legacy"
    assert times_of(series) == [0.0, 0.5]


def test_discover_prefers_folder_named_vtk(tmp_path: Path) -> None:
    write_legacy(tmp_path / "a" / "other_1.vtk", 1.0)
    write_legacy_case(tmp_path / "b" / "VTK", [0], [0.0])

    series = discover_series(tmp_path)

    assert series.root == tmp_path / "b" / "VTK"


def test_discover_accepts_vtk_folder_itself(tmp_path: Path) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0], [0.0])

    assert discover_series(folder).root == folder


# --- Legacy layout ---------------------------------------------------------------------


def test_legacy_parts_pair_by_index(tmp_path: Path) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0, 20], [0.0, 0.1])

    series = discover_series(folder)

    assert series.part_names == ("internal", "fixedWalls", "movingWall")
    last = series.steps[-1]
    assert last.parts["internal"] == folder / "cavity_20.vtk"
    assert last.parts["movingWall"] == folder / "movingWall" / "movingWall_20.vtk"
    assert last.parts["fixedWalls"] == folder / "fixedWalls" / "fixedWalls_20.vtk"
    assert last.label == "cavity_20"


def test_legacy_without_internal_mesh(tmp_path: Path) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0, 1], [0.0, 1.0])
    for file in folder.glob("cavity_*.vtk"):
        file.unlink()

    series = discover_series(folder)

    assert series.part_names == ("fixedWalls", "movingWall")
    assert times_of(series) == [0.0, 1.0]


@pytest.mark.parametrize(
    ("indices", "times", "expected_labels", "expected_times"),
    [
        # Without TimeValue the index orders numerically, never as strings.
        ([0, 5, 10, 100], None, ["cavity_0", "cavity_5", "cavity_10", "cavity_100"], [0, 5, 10, 100]),
        ([100, 20, 3], None, ["cavity_3", "cavity_20", "cavity_100"], [3, 20, 100]),
        # With TimeValue the time decides, also against the index order.
        ([0, 13, 26, 55], [0.0, 0.05, 0.1, 0.15], ["cavity_0", "cavity_13", "cavity_26", "cavity_55"],
         [0.0, 0.05, 0.1, 0.15]),
        ([1, 2], [0.2, 0.1], ["cavity_2", "cavity_1"], [0.1, 0.2]),
    ],
)
def test_legacy_order(tmp_path: Path, indices: list[int], times: list[float] | None,
                      expected_labels: list[str], expected_times: list[float]) -> None:
    folder = write_legacy_case(tmp_path / "VTK", indices, times, patches=())

    series = discover_series(folder)

    assert labels_of(series) == expected_labels
    assert times_of(series) == pytest.approx(expected_times)


def test_missing_time_value_falls_back_to_index(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "VTK"
    write_legacy(folder / "cavity_0.vtk", 0.5)
    write_legacy(folder / "cavity_10.vtk", None)

    with caplog.at_level(logging.WARNING):
        series = discover_series(folder)

    assert times_of(series) == [0.0, 10.0]
    assert "1 of 2 steps have no TimeValue" in caplog.text


@pytest.mark.parametrize(("name", "logged"), [
    ("cavity_0.orig.vtk", True),
    ("cavity_final.vtk", True),
    ("cavity.vtk", True),
    ("notes_1.txt", False),
])
def test_non_numeric_names_skipped(tmp_path: Path, name: str, logged: bool,
                                   caplog: pytest.LogCaptureFixture) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0, 1], [0.0, 1.0], patches=())
    write_legacy(folder / name, 0.5)

    with caplog.at_level(logging.DEBUG, logger="kvis_parallel.series"):
        series = discover_series(folder)

    assert labels_of(series) == ["cavity_0", "cavity_1"]
    assert (f"skipping {folder / name}" in caplog.text) == logged


def test_duplicate_time_keeps_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0, 10, 11], [0.0, 0.5, 0.5], patches=())

    with caplog.at_level(logging.WARNING):
        series = discover_series(folder)

    assert labels_of(series) == ["cavity_0", "cavity_10"]
    assert "cavity_10.vtk" in caplog.text
    assert "cavity_11.vtk" in caplog.text
    assert "duplicate time 0.5" in caplog.text


def test_unresolved_series_file_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0, 20], [0.0, 0.1], patches=())
    entries = [{"name": "_0", "time": 0}, {"name": "_99", "time": 7}]
    (folder / "cavity.vtk.series").write_text(json.dumps({"file-series-version": "1.0", "files": entries}))

    with caplog.at_level(logging.WARNING):
        series = discover_series(folder)

    assert times_of(series) == pytest.approx([0.0, 0.1])
    assert series.layout == "foam-legacy"
    assert "cavity.vtk.series" in caplog.text
    assert "match no file" in caplog.text


def test_legacy_series_names_resolve(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # foamToVTK v1912 -legacy writes "_20" in cavity.vtk.series for cavity_20.vtk.
    folder = write_legacy_case(tmp_path / "VTK", [0, 20], [0.0, 0.1], patches=("movingWall",))
    entries = [{"name": "_0", "time": 0}, {"name": "_20", "time": 7}]
    series_file = folder / "cavity.vtk.series"
    series_file.write_text(json.dumps({"file-series-version": "1.0", "files": entries}))

    for input_path in (folder, series_file):
        with caplog.at_level(logging.WARNING):
            series = discover_series(input_path)

        assert times_of(series) == [0.0, 7.0]
        assert labels_of(series) == ["cavity_0", "cavity_20"]
        assert series.steps[1].parts["internal"] == folder / "cavity_20.vtk"
        assert series.steps[1].parts["movingWall"] == folder / "movingWall" / "movingWall_20.vtk"
    assert caplog.text == ""


def test_legacy_series_names_stay_inside(tmp_path: Path) -> None:
    write_legacy(tmp_path / "cavity_0.vtk", 0.0)
    folder = write_legacy_case(tmp_path / "VTK", [5], [0.0], patches=())
    entries = [{"name": "/../../cavity_0", "time": 0}]
    (folder / "cavity.vtk.series").write_text(json.dumps({"file-series-version": "1.0", "files": entries}))

    series = discover_series(folder)

    assert labels_of(series) == ["cavity_5"]


def test_two_cases_below_input_rejected(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_legacy_case(tmp_path / "two" / name / "VTK", [0, 1], [0.0, 1.0], patches=())

    with pytest.raises(SeriesError) as raised:
        discover_series(tmp_path / "two")

    message = str(raised.value)
    assert "several folders contain time steps" in message
    assert str(tmp_path / "two" / "a" / "VTK") in message
    assert str(tmp_path / "two" / "b" / "VTK") in message
    assert "give one of them as INPUT" in message


def test_resolving_series_file_sets_times(tmp_path: Path) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0, 20, 100], None, patches=("movingWall",))
    entries = [{"name": f"cavity_{index}.vtk", "time": time} for index, time in [(100, 2.5), (0, 0), (20, 1.25)]]
    (folder / "cavity.vtk.series").write_text(json.dumps({"file-series-version": "1.0", "files": entries}))

    series = discover_series(folder)

    assert series.layout == "series"
    assert labels_of(series) == ["cavity_0", "cavity_20", "cavity_100"]
    assert times_of(series) == [0.0, 1.25, 2.5]
    assert series.steps[1].parts["movingWall"] == folder / "movingWall" / "movingWall_20.vtk"


@pytest.mark.parametrize("name", ["../outside_0.vtk", "/etc/passwd", "sub/../../outside_0.vtk"])
def test_series_file_names_stay_inside(tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    write_legacy(tmp_path / "outside_0.vtk", 0.0)
    folder = write_legacy_case(tmp_path / "VTK", [0, 1], [0.0, 1.0], patches=())
    entries = [{"name": name, "time": 0}, {"name": "cavity_1.vtk", "time": 1}]
    (folder / "cavity.vtk.series").write_text(json.dumps({"files": entries}))

    with caplog.at_level(logging.WARNING):
        series = discover_series(folder)

    assert series.layout == "foam-legacy"
    assert all(step.parts["internal"].parent == folder for step in series.steps)
    assert "match no file inside" in caplog.text


def test_vtm_part_outside_folder_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_xml_case(tmp_path / "VTK", [0], [0.0], with_series=False)
    (tmp_path / "secret.vtp").write_text(xml_piece(None))
    vtm = folder / "damBreak_0.vtm"
    vtm.write_text(vtm.read_text().replace("damBreak_0/boundary/leftWall.vtp", "../secret.vtp"))

    with caplog.at_level(logging.WARNING):
        parts = read_vtm_parts(vtm)

    assert set(parts) == {"internal", "atmosphere"}
    assert "outside" in caplog.text


def test_series_file_as_input(tmp_path: Path) -> None:
    folder = write_legacy_case(tmp_path / "VTK", [0, 1], None, patches=())
    series_file = folder / "my.vtk.series"
    entries = [{"name": "cavity_0.vtk", "time": 3}, {"name": "cavity_1.vtk", "time": 4}]
    series_file.write_text(json.dumps({"files": entries}))

    series = discover_series(series_file)

    assert times_of(series) == [3.0, 4.0]
    assert series.steps[0].parts == {"internal": folder / "cavity_0.vtk"}


def test_invalid_series_file_input(tmp_path: Path) -> None:
    series_file = tmp_path / "broken.series"
    series_file.write_text("{not json")

    with pytest.raises(SeriesError, match="broken.series"):
        discover_series(series_file)


# --- TimeValue parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "time", "expected"),
    [
        ({"binary": True, "precision": "float"}, 0.05, 0.05),
        ({"binary": True, "precision": "double"}, 0.05, 0.05),
        ({"binary": True, "precision": "float"}, 1234.5, 1234.5),
        ({"binary": False, "precision": "float"}, 0.25, 0.25),
        ({"binary": False, "precision": "double"}, 1e-07, 1e-07),
        ({"binary": True, "precision": "double"}, 0.0, 0.0),
    ],
)
def test_legacy_time_value(tmp_path: Path, options: dict, time: float, expected: float) -> None:
    path = write_legacy(tmp_path / "case_1.vtk", time, **options)

    assert read_time_value(path) == expected


@pytest.mark.parametrize("content", [b"", b"# vtk DataFile Version 2.0\ncase\nBINARY\nDATASET POLYDATA\n",
                                     b"not a vtk file", b"<VTKFile></VTKFile>"])
def test_time_value_absent(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "case_1.vtk"
    path.write_bytes(content)

    assert read_time_value(path) is None


def test_time_value_not_finite(tmp_path: Path) -> None:
    path = write_legacy(tmp_path / "case_1.vtk", float("nan"), binary=True, precision="double")

    assert read_time_value(path) is None


@pytest.mark.parametrize(("mode", "compressed", "expected"), [
    ("ascii", False, 0.3),
    ("binary", False, 0.3),
    ("binary", True, 0.3),
    ("appended", False, None),
])
def test_xml_time_value_from_vtk_writer(tmp_path: Path, mode: str, compressed: bool, expected: float | None) -> None:
    from vtkmodules.vtkCommonCore import vtkDoubleArray
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    time_array = vtkDoubleArray()
    time_array.SetName("TimeValue")
    time_array.InsertNextValue(0.3)
    polydata = vtkPolyData()
    polydata.GetFieldData().AddArray(time_array)

    writer = vtkXMLPolyDataWriter()
    writer.SetInputData(polydata)
    writer.SetFileName(str(tmp_path / "case_1.vtp"))
    {"ascii": writer.SetDataModeToAscii, "binary": writer.SetDataModeToBinary,
     "appended": writer.SetDataModeToAppended}[mode]()
    if compressed:
        writer.SetCompressorTypeToZLib()
    else:
        writer.SetCompressorTypeToNone()
    writer.Write()

    assert read_time_value(tmp_path / "case_1.vtp") == expected


# --- XML layout -------------------------------------------------------------------------


def test_xml_layout_with_series(tmp_path: Path) -> None:
    folder = write_xml_case(tmp_path / "VTK", [0, 13, 26, 100], [0.0, 0.05, 0.1, 0.25])

    series = discover_series(tmp_path)

    assert series.layout == "foam-xml"
    assert times_of(series) == [0.0, 0.05, 0.1, 0.25]
    assert series.part_names == ("internal", "atmosphere", "leftWall")
    assert series.steps[3].parts["internal"] == folder / "damBreak_100" / "internal.vtu"
    assert series.steps[3].parts["leftWall"] == folder / "damBreak_100" / "boundary" / "leftWall.vtp"


def test_xml_layout_without_series(tmp_path: Path) -> None:
    write_xml_case(tmp_path / "VTK", [0, 55, 100], [0.0, 0.15, 0.25], with_series=False)

    series = discover_series(tmp_path / "VTK")

    assert series.layout == "foam-xml"
    assert times_of(series) == [0.0, 0.15, 0.25]
    assert labels_of(series) == ["damBreak_0", "damBreak_55", "damBreak_100"]


def test_vtm_missing_part_file_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_xml_case(tmp_path / "VTK", [0], [0.0], with_series=False)
    (folder / "damBreak_0" / "boundary" / "leftWall.vtp").unlink()

    with caplog.at_level(logging.WARNING):
        parts = read_vtm_parts(folder / "damBreak_0.vtm")

    assert set(parts) == {"internal", "atmosphere"}
    assert "leftWall" in caplog.text


def test_vtm_invalid_xml(tmp_path: Path) -> None:
    folder = tmp_path / "VTK"
    folder.mkdir()
    (folder / "case_0.vtm").write_text("<VTKFile><vtkMultiBlockDataSet>")

    with pytest.raises(SeriesError, match="case_0.vtm"):
        discover_series(folder)


# --- Other collections ---------------------------------------------------------------------


def test_pvd_input(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"flow_{index}.vtu").write_text(xml_piece(None))
    datasets = "".join(f"<DataSet timestep='{time}' part='0' file='flow_{index}.vtu'/>"
                       for index, time in [(2, 0.2), (0, 0.0), (1, 0.1)])
    pvd = tmp_path / "flow.pvd"
    pvd.write_text(f"<?xml version='1.0'?><VTKFile type='Collection'><Collection>{datasets}</Collection></VTKFile>")

    for given in (pvd, tmp_path):
        series = discover_series(given)

        assert series.layout == "pvd"
        assert times_of(series) == [0.0, 0.1, 0.2]
        assert series.part_names == ("internal",)


@pytest.mark.parametrize("suffix", [".vtu", ".vtp", ".vts", ".vtr", ".vti"])
def test_numbered_files(tmp_path: Path, suffix: str) -> None:
    for number in (1, 2, 10):
        (tmp_path / f"flow{number:04d}{suffix}").write_text(xml_piece(None))

    series = discover_series(tmp_path)

    assert series.layout == "files"
    assert times_of(series) == [1.0, 2.0, 10.0]


# --- Nothing found ------------------------------------------------------------------------


@pytest.mark.parametrize("contents", [[], ["README.txt"], ["sub/notes.md"], ["VTK/cavity.vtk"]])
def test_nothing_found_raises(tmp_path: Path, contents: list[str]) -> None:
    for name in contents:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")

    with pytest.raises(SeriesError) as raised:
        discover_series(tmp_path)

    assert "no time steps found under" in str(raised.value)
    assert "expected foamToVTK output" in str(raised.value)
    assert isinstance(raised.value, UserError)


def test_missing_input_raises(tmp_path: Path) -> None:
    with pytest.raises(SeriesError, match="not found"):
        discover_series(tmp_path / "absent")


def test_unsupported_file_input(tmp_path: Path) -> None:
    path = tmp_path / "case.foam"
    path.write_text("")

    with pytest.raises(SeriesError, match="unsupported input file"):
        discover_series(path)


# --- Real foamToVTK samples -------------------------------------------------------------------


@pytest.mark.skipif(not CAVITY.is_dir(), reason="datasets/cavity not generated")
def test_cavity_sample() -> None:
    series = discover_series(CAVITY.parent)

    assert series.layout == "foam-legacy"
    assert len(series.steps) == 11
    assert times_of(series) == pytest.approx([0.05 * index for index in range(11)])
    assert series.steps[0].time == 0.0
    assert series.steps[1].time == 0.05
    assert series.part_names == ("internal", "fixedWalls", "movingWall")


@pytest.mark.skipif(not DAM_BREAK.is_dir(), reason="datasets/damBreak not generated")
def test_dam_break_sample() -> None:
    series = discover_series(DAM_BREAK)

    assert series.layout == "foam-xml"
    assert labels_of(series)[:4] == ["damBreak_0", "damBreak_13", "damBreak_26", "damBreak_55"]
    assert times_of(series) == pytest.approx([0.05 * index for index in range(len(series.steps))])
    assert series.part_names == ("internal", "atmosphere", "leftWall", "lowerWall", "rightWall")
