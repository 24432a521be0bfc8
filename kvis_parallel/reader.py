"""Read the files of one time step into VTK datasets, turning VTK's error output into StepReadError.

Legacy ``.vtk`` files are also checked against the sizes that their own
section lines declare (see :mod:`.legacy`), because VTK's legacy readers
return what they parsed from a truncated file without reporting an error.

Only the VTK modules in use are imported, which keeps process start-up short.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vtkmodules.util.misc import calldata_type
from vtkmodules.vtkCommonCore import VTK_STRING, vtkLogger, vtkOutputWindow, vtkStringOutputWindow
from vtkmodules.vtkCommonDataModel import vtkDataSet, vtkMultiBlockDataSet, vtkUnstructuredGrid
from vtkmodules.vtkIOLegacy import (
    vtkPolyDataReader,
    vtkRectilinearGridReader,
    vtkStructuredGridReader,
    vtkStructuredPointsReader,
    vtkUnstructuredGridReader,
)
from vtkmodules.vtkIOXML import (
    vtkXMLImageDataReader,
    vtkXMLPolyDataReader,
    vtkXMLRectilinearGridReader,
    vtkXMLStructuredGridReader,
    vtkXMLUnstructuredGridReader,
)

from . import legacy
from .errors import FieldError, StepReadError
from .fields import list_fields  # noqa: F401  re-exported: the CLI's --list-fields calls reader.list_fields
from .series import TimeStep

logger = logging.getLogger(__name__)

_XML_READERS = {
    ".vtu": vtkXMLUnstructuredGridReader,
    ".vtp": vtkXMLPolyDataReader,
    ".vts": vtkXMLStructuredGridReader,
    ".vtr": vtkXMLRectilinearGridReader,
    ".vti": vtkXMLImageDataReader,
}
_LEGACY_READERS = {
    "UNSTRUCTURED_GRID": vtkUnstructuredGridReader,
    "POLYDATA": vtkPolyDataReader,
    "STRUCTURED_GRID": vtkStructuredGridReader,
    "RECTILINEAR_GRID": vtkRectilinearGridReader,
    "STRUCTURED_POINTS": vtkStructuredPointsReader,
}


# --- Reading files -----------------------------------------------------------


class _VTKMessages:
    """Error and warning text that VTK emitted during a read."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.text = ""

    @calldata_type(VTK_STRING)
    def on_error(self, caller: object, event: str, message: str | None = None) -> None:
        self.errors.append(message or "")

    def first_error(self) -> str | None:
        """Return the first error's message without VTK's file and line prefix."""
        # Inner objects such as the XML parser print through the output window
        # and name the cause, while the reader's own error only reports failure.
        errors = [self.text[self.text.index("ERROR:"):]] if "ERROR:" in self.text else []
        errors += [text for text in self.errors if text]
        if not errors:
            return "VTK reported an error" if self.errors else None
        lines = [line.strip() for line in errors[0].splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith("ERROR: In ")] or lines
        message = lines[0] if lines else "unknown VTK error"
        # Drop VTK's "vtkClassName (0x55d1...): " sender prefix.
        return re.sub(r"^\w+ \(0x[0-9a-f]+\): ", "", message)


@contextmanager
def _captured_vtk_messages() -> Iterator[_VTKMessages]:
    """Route VTK's error and warning output into a buffer for the duration of a read.

    VTK prints through both its output window and its logger (loguru in VTK
    9.x), so both are redirected and restored afterwards.

    NOTE: vtkLogger has no getter for the stderr verbosity alone, so it is
    restored to the overall cutoff, which is higher when a log file with more
    detail was added.
    """
    messages = _VTKMessages()
    window = vtkStringOutputWindow()
    previous_window = vtkOutputWindow.GetInstance()
    previous_cutoff = vtkLogger.GetCurrentVerbosityCutoff()
    vtkOutputWindow.SetInstance(window)
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
    try:
        yield messages
    finally:
        vtkLogger.SetStderrVerbosity(vtkLogger.ConvertToVerbosity(previous_cutoff))
        vtkOutputWindow.SetInstance(previous_window)
        messages.text = window.GetOutput() or ""
        if messages.text:
            logger.debug("VTK output while reading: %s", messages.text.strip())


def _legacy_dataset_type(path: Path) -> str:
    """Return the DATASET keyword of a legacy VTK file, e.g. ``UNSTRUCTURED_GRID``."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(1024)
    except OSError as error:
        raise StepReadError(f"cannot read time step file {path}: {error.strerror}") from None

    lines = head.split(b"\n", 4)
    if not head.startswith(b"# vtk DataFile") or len(lines) < 4:
        raise StepReadError(f"cannot read time step file {path}: not a legacy VTK file "
                            "(it does not start with '# vtk DataFile')")
    words = lines[3].split()
    if len(words) < 2 or words[0].upper() != b"DATASET":
        raise StepReadError(f"cannot read time step file {path}: no DATASET line in its header")
    return words[1].decode("ascii", "replace").upper()


class ReaderPool:
    """One reader per reader class, reused for every file this process reads."""

    def __init__(self) -> None:
        self._readers: dict[type, object] = {}

    def reader_for(self, path: Path) -> object:
        suffix = path.suffix.lower()
        if suffix == ".vtk":
            kind = _legacy_dataset_type(path)
            reader_class = _LEGACY_READERS.get(kind)
            if reader_class is None:
                raise StepReadError(f"cannot read time step file {path}: unsupported legacy dataset type {kind}")
        else:
            reader_class = _XML_READERS.get(suffix)
            if reader_class is None:
                raise StepReadError(f"cannot read time step file {path}: unsupported file type {suffix!r}; "
                                    f"expected one of .vtk, {', '.join(_XML_READERS)}")

        reader = self._readers.get(reader_class)
        if reader is None:
            reader = reader_class()
            if suffix == ".vtk":
                _read_every_legacy_array(reader)
            self._readers[reader_class] = reader
        return reader


# The readers that read_parts and surface.load_surface share within a process.
PROCESS_READERS = ReaderPool()


def _read_every_legacy_array(reader: object) -> None:
    # foamToVTK stores fields as FIELD blocks, so no array is "the" scalars and
    # the legacy readers would skip all but one attribute of each kind.
    reader.ReadAllScalarsOn()
    reader.ReadAllVectorsOn()
    reader.ReadAllNormalsOn()
    reader.ReadAllTensorsOn()
    reader.ReadAllColorScalarsOn()
    reader.ReadAllTCoordsOn()
    reader.ReadAllFieldsOn()


def _read_file(pool: ReaderPool, path: Path) -> vtkDataSet:
    """Read one dataset file, raising StepReadError when VTK reports a problem."""
    if not path.is_file():
        raise StepReadError(f"cannot read time step file {path}: file not found")
    reader = pool.reader_for(path)
    reader.SetFileName(str(path))
    # Force a read even when the name is unchanged, since the file may have changed.
    reader.Modified()

    with _captured_vtk_messages() as messages:
        observer = reader.AddObserver("ErrorEvent", messages.on_error)
        executive_observer = reader.GetExecutive().AddObserver("ErrorEvent", messages.on_error)
        try:
            reader.Update()
        finally:
            reader.RemoveObserver(observer)
            reader.GetExecutive().RemoveObserver(executive_observer)

    error = messages.first_error()
    output = reader.GetOutputDataObject(0)
    if error is None and output is None:
        error = "the reader returned no data"
    if error is not None:
        raise StepReadError(f"cannot read time step file {path}: {error}; the file is truncated or corrupt, "
                            "write it again with foamToVTK")

    # The reader reuses its output object for the next file: hand out a shallow copy.
    dataset = output.NewInstance()
    dataset.ShallowCopy(output)
    if path.suffix.lower() == ".vtk":
        _check_legacy_sections(path, dataset)
    _check_array_sizes(path, dataset)
    return dataset


def _check_array_sizes(path: Path, dataset: vtkDataSet) -> None:
    """Raise StepReadError for output that a truncated or corrupt file gives without any VTK error."""
    if dataset.GetNumberOfPoints() > 0 and dataset.GetNumberOfCells() == 0:
        raise StepReadError(f"cannot read time step file {path}: it has {dataset.GetNumberOfPoints()} points "
                            "but no cells; the file is truncated or corrupt")

    for association, data, expected in (("point", dataset.GetPointData(), dataset.GetNumberOfPoints()),
                                        ("cell", dataset.GetCellData(), dataset.GetNumberOfCells())):
        for index in range(data.GetNumberOfArrays()):
            array = data.GetAbstractArray(index)
            if array.GetNumberOfTuples() != expected:
                raise StepReadError(
                    f"cannot read time step file {path}: {association} array {array.GetName()!r} has "
                    f"{array.GetNumberOfTuples()} values for {expected} {association}s; the file is corrupt"
                )


def _check_legacy_sections(path: Path, dataset: vtkDataSet) -> None:
    """Raise StepReadError when a legacy file lacks data that its section lines declare.

    NOTE: a binary file cut exactly between two sections, and an ASCII file
    cut anywhere after its cells, are found only when that leaves a volume
    mesh with no arrays at all. A cut before POINT_DATA goes unnoticed.
    """
    try:
        declared = legacy.declared_sections(path)
    except legacy.TruncatedFile as error:
        raise StepReadError(f"cannot read time step file {path}: {error}; the file is truncated, "
                            "write it again with foamToVTK") from None
    except OSError as error:
        raise StepReadError(f"cannot read time step file {path}: {error.strerror}") from None

    counts = (("points", declared.points, dataset.GetNumberOfPoints()),
              ("cells", declared.cells, dataset.GetNumberOfCells()))
    for what, expected, found in counts:
        if expected is not None and found < expected:
            raise StepReadError(f"cannot read time step file {path}: VTK read {found} of its {expected} {what}; "
                                "the file is truncated or corrupt, write it again with foamToVTK")

    for association, name in declared.arrays:
        data = dataset.GetPointData() if association == "point" else dataset.GetCellData()
        if data.GetAbstractArray(name) is None:
            raise StepReadError(f"cannot read time step file {path}: its {association} array {name!r} was not "
                                "read; the file is truncated or corrupt, write it again with foamToVTK")

    arrays = dataset.GetPointData().GetNumberOfArrays() + dataset.GetCellData().GetNumberOfArrays()
    if isinstance(dataset, vtkUnstructuredGrid) and dataset.GetNumberOfCells() > 0 and arrays == 0:
        # foamToVTK writes patches without data (the empty patch of a 2-D
        # case), but never a volume mesh: such a file was cut after its cells.
        raise StepReadError(f"cannot read time step file {path}: it has {dataset.GetNumberOfCells()} cells but "
                            "no point or cell arrays; the file looks truncated, write it again with foamToVTK")


def read_parts(step: TimeStep, parts: Sequence[str], pool: ReaderPool | None = None) -> vtkMultiBlockDataSet:
    """Read the chosen parts of a time step.

    Parameters
    ----------
    step
        The time step.
    parts
        Part names: ``"internal"`` and/or patch names.
    pool
        Readers to reuse; :data:`PROCESS_READERS` when None.

    Returns
    -------
    vtkMultiBlockDataSet
        One block per part in the order given, each block named after its part.

    Raises
    ------
    FieldError
        If a part does not exist in this step.
    StepReadError
        If a file cannot be read.
    """
    pool = pool or PROCESS_READERS
    _check_parts(step, parts)

    blocks = vtkMultiBlockDataSet()
    for index, name in enumerate(parts):
        blocks.SetBlock(index, _read_file(pool, Path(step.parts[name])))
        blocks.GetMetaData(index).Set(vtkMultiBlockDataSet.NAME(), name)
    return blocks


def _check_parts(step: TimeStep, parts: Sequence[str]) -> None:
    missing = [name for name in parts if name not in step.parts]
    if missing:
        available = ", ".join(step.parts) or "none"
        raise FieldError(f"part {missing[0]!r} not found in time step {step.label}; "
                         f"parts that exist: {available} (choose with --parts)")
