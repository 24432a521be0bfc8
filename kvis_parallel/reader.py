"""Read one time step into VTK geometry carrying the one field that is drawn.

:func:`load_surface` reads the chosen parts of a step, extracts the outer
surface of volume parts (or cuts them with the slice plane), and stores the
chosen field as a single-component float array ``kvis_scalars`` set active.

Consecutive foamToVTK steps usually share one mesh and differ only in their
fields. A :class:`SurfaceLoader` keeps the last surface of each part together
with the ids of the volume points and cells it came from. When the next step's
mesh is identical, it gathers the new field values through those ids instead
of extracting the surface again.

Only the VTK modules in use are imported, which keeps process start-up short.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vtkmodules.util.misc import calldata_type
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
from vtkmodules.vtkCommonCore import VTK_ID_TYPE, VTK_STRING, vtkLogger, vtkOutputWindow, vtkStringOutputWindow
from vtkmodules.vtkCommonDataModel import (
    vtkDataObject,
    vtkDataSet,
    vtkImageData,
    vtkMultiBlockDataSet,
    vtkPlane,
    vtkPolyData,
    vtkRectilinearGrid,
    vtkStructuredGrid,
    vtkUnstructuredGrid,
)
from vtkmodules.vtkFiltersCore import vtkAppendPolyData, vtkCutter, vtkExtractCells
from vtkmodules.vtkFiltersGeometry import vtkDataSetSurfaceFilter
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

from .errors import FieldError, StepReadError
from .scene import Scene
from .series import TimeStep

logger = logging.getLogger(__name__)

SCALARS_NAME = "kvis_scalars"
ORIGINAL_POINT_IDS = "vtkOriginalPointIds"
ORIGINAL_CELL_IDS = "vtkOriginalCellIds"

# Arrays that number things rather than measure them; never a default field.
ID_ARRAY_NAMES = frozenset({
    "cellID", "patchID", "procID", "faceID", "pointID", "zoneID", "regionID",
    "cellId", "pointId", "GlobalIds", "PedigreeIds", "vtkGhostType",
    ORIGINAL_POINT_IDS, ORIGINAL_CELL_IDS, "vtkValidPointMask",
})
_ID_SUFFIX = re.compile(r"(ID|Id|IDs|Ids)$")

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
_COMPONENT_INDEX = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class FieldInfo:
    """A field of a step: its name, association, size and finite range.

    ``range`` covers the values of a scalar and the magnitude of a vector,
    ignoring NaN and inf. It is ``(nan, nan)`` when no value is finite.
    """

    name: str
    association: str
    components: int
    range: tuple[float, float]


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


class _ReaderPool:
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


def _read_file(pool: _ReaderPool, path: Path) -> vtkDataSet:
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
    _check_array_sizes(path, dataset)
    return dataset


def _check_array_sizes(path: Path, dataset: vtkDataSet) -> None:
    """Raise StepReadError for output that a truncated legacy file gives without any VTK error.

    NOTE: a legacy file cut exactly between two sections (before POINT_DATA,
    or before an array of a FIELD block) still reads without error, and the
    step then lacks those arrays.
    """
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


def read_parts(step: TimeStep, parts: Sequence[str], pool: _ReaderPool | None = None) -> vtkMultiBlockDataSet:
    """Read the chosen parts of a time step.

    Parameters
    ----------
    step
        The time step.
    parts
        Part names: ``"internal"`` and/or patch names.
    pool
        Readers to reuse; the process-wide readers of :func:`load_surface` when None.

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
    pool = pool or _LOADER.pool
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


# --- Fields --------------------------------------------------------------------


def _datasets(data: vtkDataObject) -> Iterator[vtkDataSet]:
    """Yield the datasets of a dataset or a (nested) multiblock dataset."""
    if isinstance(data, vtkMultiBlockDataSet):
        for index in range(data.GetNumberOfBlocks()):
            block = data.GetBlock(index)
            if block is not None:
                yield from _datasets(block)
    elif data is not None:
        yield data


def _attribute_data(dataset: vtkDataSet, association: str):
    return dataset.GetPointData() if association == "point" else dataset.GetCellData()


def _numeric_arrays(dataset: vtkDataSet, association: str) -> Iterator[tuple[str, object]]:
    data = _attribute_data(dataset, association)
    for index in range(data.GetNumberOfArrays()):
        array = data.GetArray(index)
        # GetArray returns None for string and other non-numeric arrays.
        if array is not None and array.GetName():
            yield array.GetName(), array


def is_id_array(name: str) -> bool:
    """Return whether a field name looks like an id array (``cellID``, ``patchID``...)."""
    return name in ID_ARRAY_NAMES or name.startswith("vtk") or bool(_ID_SUFFIX.search(name))


def list_fields(dataset: vtkDataObject) -> list[FieldInfo]:
    """List the point and cell fields of a dataset or multiblock dataset.

    Parameters
    ----------
    dataset
        A vtkDataSet or a vtkMultiBlockDataSet as returned by :func:`read_parts`.

    Returns
    -------
    list of FieldInfo
        Cell fields first, then point fields, each in file order; a field in
        several blocks appears once with the range over all of them.
    """
    found: dict[tuple[str, str], tuple[int, list[float]]] = {}
    for block in _datasets(dataset):
        for association in ("cell", "point"):
            for name, array in _numeric_arrays(block, association):
                if name == SCALARS_NAME:
                    continue
                components, bounds = found.setdefault((name, association), (array.GetNumberOfComponents(), []))
                low_high = finite_range(_magnitude_or_values(vtk_to_numpy(array)))
                if low_high is not None:
                    bounds.extend(low_high)

    fields = []
    for (name, association), (components, bounds) in found.items():
        field_range = (min(bounds), max(bounds)) if bounds else (float("nan"), float("nan"))
        fields.append(FieldInfo(name, association, components, field_range))
    return fields


def default_field(fields: Sequence[FieldInfo]) -> FieldInfo | None:
    """Return the first field that is not an id array, or None when there is none."""
    for info in fields:
        if not is_id_array(info.name):
            return info
    return None


def _default_field_name(blocks: vtkDataObject) -> str | None:
    """Return the name :func:`default_field` would pick, without computing ranges."""
    for block in _datasets(blocks):
        for association in ("cell", "point"):
            for name, _ in _numeric_arrays(block, association):
                if name != SCALARS_NAME and not is_id_array(name):
                    return name
    return None


def _magnitude_or_values(values: np.ndarray) -> np.ndarray:
    if values.ndim == 1:
        return values
    if values.shape[1] == 1:
        return values[:, 0]
    wide = values.astype(np.float64, copy=False)
    return np.sqrt(np.einsum("ij,ij->i", wide, wide))


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """Return (min, max) of the finite values, or None when no value is finite."""
    if values.size == 0:
        return None
    finite = np.isfinite(values)
    if finite.all():
        return float(values.min()), float(values.max())
    if not finite.any():
        return None
    finite_values = values[finite]
    return float(finite_values.min()), float(finite_values.max())


@dataclass(frozen=True)
class _FieldChoice:
    """The resolved field: name, association ("point" or "cell") and component."""

    name: str
    association: str
    component: str


def _has_data(dataset: vtkDataSet) -> bool:
    """Return whether a part carries any numeric point or cell array.

    foamToVTK 2.x writes the empty patch of a 2-D case as geometry without
    data. Such a part is drawn with NaN values instead of failing the step.
    """
    return any(True for association in ("point", "cell") for _ in _numeric_arrays(dataset, association))


def _choose_field(blocks: vtkMultiBlockDataSet, part_names: Sequence[str], scene: Scene,
                  missing_field: str = "error") -> _FieldChoice:
    """Resolve the scene's field, association and component against the parts read."""
    with_data = [item for item in _datasets(blocks) if _has_data(item)]
    name = scene.field or _default_field_name(blocks)
    if name is None:
        raise FieldError(f"no field to colour by in parts {', '.join(part_names)}: "
                         "the files contain only id arrays or no arrays at all")

    association = _resolve_association(with_data, name, scene.association)
    if association is None and missing_field == "nan":
        holding = [item for item in with_data if _holds_field(item, name, scene.association)]
        association = _resolve_association(holding, name, scene.association)
        if association is None:
            association = "cell" if scene.association == "auto" else scene.association
    if association is None:
        raise FieldError(_unknown_field_message(blocks, name, scene.association))

    arrays = [_attribute_data(item, association).GetArray(name) for item in with_data]
    arrays = [array for array in arrays if array is not None]
    components = arrays[0].GetNumberOfComponents() if arrays else 1
    if arrays and scene.component != "mag" and (components == 1 or _COMPONENT_INDEX[scene.component] >= components):
        raise FieldError(f"field {name!r} has {components} component(s), so it has no {scene.component} "
                         "component; use --component mag" + ("" if components == 1 else " or x, y, z"))
    return _FieldChoice(name, association, scene.component)


def _holds_field(dataset: vtkDataSet, name: str, requested: str) -> bool:
    associations = ("point", "cell") if requested == "auto" else (requested,)
    return any(_attribute_data(dataset, association).GetArray(name) is not None for association in associations)


def _resolve_association(datasets: Sequence[vtkDataSet], name: str, requested: str) -> str | None:
    """Return the association in which every dataset contains the field, or None.

    ``auto`` prefers point data, which gives smooth shading.
    """
    candidates = ("point", "cell") if requested == "auto" else (requested,)
    for association in candidates:
        if datasets and all(_attribute_data(item, association).GetArray(name) is not None for item in datasets):
            return association
    return None


def _unknown_field_message(blocks: vtkMultiBlockDataSet, name: str, requested: str) -> str:
    fields = list_fields(blocks)
    listing = ", ".join(f"{info.name} ({info.association})" for info in fields) or "none"
    where = "" if requested == "auto" else f" as {requested} data"
    for info in fields:
        if info.name == name:
            return (f"field {name!r} not found{where} in every chosen part; fields that exist: {listing}. "
                    "Choose another --association or drop the parts that lack it")
    return f"field {name!r} not found{where}; fields that exist: {listing} (choose with --field)"


def _scalars_from(values: np.ndarray, component: str) -> np.ndarray:
    """Reduce an (n,) or (n, k) field to the float32 values that are drawn."""
    if values.ndim == 1:
        return values.astype(np.float32, copy=False)
    if component == "mag":
        return _magnitude_or_values(values).astype(np.float32, copy=False)
    return np.ascontiguousarray(values[:, _COMPONENT_INDEX[component]], dtype=np.float32)


def _as_scalars_array(values: np.ndarray) -> object:
    array = numpy_to_vtk(values, deep=True)
    array.SetName(SCALARS_NAME)
    return array


# --- Surfaces ------------------------------------------------------------------


@dataclass
class _PartSurface:
    """A part's surface geometry and the ids of the volume points and cells it came from.

    ``point_ids``/``cell_ids`` are None when the surface is the part itself
    (a patch), so values need no gathering.
    """

    mesh: vtkDataSet
    geometry: vtkPolyData
    point_ids: np.ndarray | None
    cell_ids: np.ndarray | None


def _bare_copy(dataset: vtkDataSet) -> vtkDataSet:
    """Return a dataset that shares the points and cells of ``dataset`` but has no arrays."""
    bare = dataset.NewInstance()
    bare.CopyStructure(dataset)
    return bare


def _extract_surface(dataset: vtkDataSet) -> _PartSurface:
    if isinstance(dataset, vtkPolyData):
        return _PartSurface(_bare_copy(dataset), _bare_copy(dataset), None, None)

    surface_filter = vtkDataSetSurfaceFilter()
    # Level 0 keeps every surface point an original point, so each has an id to gather through.
    surface_filter.SetNonlinearSubdivisionLevel(0)
    surface_filter.PassThroughPointIdsOn()
    surface_filter.PassThroughCellIdsOn()
    surface_filter.SetInputData(_bare_copy(dataset))
    surface_filter.Update()
    return _take_id_arrays(dataset, surface_filter.GetOutput())


def _take_id_arrays(dataset: vtkDataSet, output: vtkPolyData) -> _PartSurface:
    geometry = vtkPolyData()
    geometry.CopyStructure(output)
    return _PartSurface(
        _bare_copy(dataset),
        geometry,
        _id_array(output.GetPointData(), ORIGINAL_POINT_IDS, output.GetNumberOfPoints()),
        _id_array(output.GetCellData(), ORIGINAL_CELL_IDS, output.GetNumberOfCells()),
    )


def _id_array(data: object, name: str, expected: int) -> np.ndarray:
    """Return a filter's pass-through id array, checked against the number of points or cells."""
    array = data.GetArray(name)
    if array is None and expected == 0:
        # Filters add no arrays to an empty output.
        return np.zeros(0, dtype=np.int64)
    if array is None or array.GetNumberOfTuples() != expected:
        raise RuntimeError(f"surface filter output has no complete {name} array")
    ids = vtk_to_numpy(array).astype(np.int64, copy=False)
    if ids.size and ids.min() < 0:
        raise RuntimeError(f"surface filter created points or cells without an id in {name}")
    return ids


def step_bounds(surface: vtkDataSet) -> tuple[float, float, float, float, float, float] | None:
    """Return the bounds ``(xmin, xmax, ymin, ymax, zmin, zmax)``, or None for an empty surface."""
    if surface.GetNumberOfPoints() == 0:
        return None
    return tuple(surface.GetBounds())


def scalar_range(surface: vtkDataSet) -> tuple[float, float] | None:
    """Return the finite (min, max) of ``kvis_scalars``, or None when no value is finite.

    Raises
    ------
    ValueError
        If the surface has no ``kvis_scalars`` array (it did not come from :func:`load_surface`).
    """
    # Compare with None: an empty VTK array is falsy.
    array = surface.GetPointData().GetArray(SCALARS_NAME)
    if array is None:
        array = surface.GetCellData().GetArray(SCALARS_NAME)
    if array is None:
        raise ValueError(f"surface has no {SCALARS_NAME} array; build it with load_surface")
    return finite_range(vtk_to_numpy(array))


@dataclass
class _PlaneCut:
    """The cells of a volume that a plane crosses, as a small grid to cut each step.

    ``subset`` shares no arrays with the step it came from; ``point_ids`` and
    ``cell_ids`` map its points and cells back to the volume. ``subset`` is
    None when the volume is not an unstructured grid, which is then cut whole.
    """

    mesh: vtkDataSet
    plane: tuple[float, ...]
    subset: vtkUnstructuredGrid | None
    point_ids: np.ndarray | None
    cell_ids: np.ndarray | None


def _plane(plane_values: tuple[float, ...]) -> vtkPlane:
    plane = vtkPlane()
    plane.SetOrigin(*plane_values[:3])
    plane.SetNormal(*plane_values[3:])
    return plane


def _crossed_cells(grid: vtkUnstructuredGrid, plane_values: tuple[float, ...]) -> np.ndarray:
    """Return the ids of the cells with points on both sides of the plane (or on it)."""
    points = vtk_to_numpy(grid.GetPoints().GetData())
    origin = np.asarray(plane_values[:3], dtype=np.float64)
    normal = np.asarray(plane_values[3:], dtype=np.float64)
    distance = (points - origin) @ normal

    cells = grid.GetCells()
    connectivity = vtk_to_numpy(cells.GetConnectivityArray())
    offsets = vtk_to_numpy(cells.GetOffsetsArray())[:-1]
    if connectivity.size == 0:
        return np.zeros(0, dtype=np.int64)
    cell_distances = distance[connectivity]
    lowest = np.minimum.reduceat(cell_distances, offsets)
    highest = np.maximum.reduceat(cell_distances, offsets)
    return np.flatnonzero((lowest <= 0) & (highest >= 0))


def _plane_cut(dataset: vtkDataSet, plane_values: tuple[float, ...]) -> _PlaneCut:
    if not isinstance(dataset, vtkUnstructuredGrid) or dataset.GetNumberOfCells() == 0:
        return _PlaneCut(_bare_copy(dataset), plane_values, None, None, None)

    crossed = _crossed_cells(dataset, plane_values)
    if crossed.size == 0:
        nothing = np.zeros(0, dtype=np.int64)
        return _PlaneCut(_bare_copy(dataset), plane_values, vtkUnstructuredGrid(), nothing, nothing)

    bare = _bare_copy(dataset)
    point_ids = numpy_to_vtk(np.arange(dataset.GetNumberOfPoints(), dtype=np.int64), deep=True,
                             array_type=VTK_ID_TYPE)
    point_ids.SetName(ORIGINAL_POINT_IDS)
    bare.GetPointData().AddArray(point_ids)

    extract = vtkExtractCells()
    extract.PassThroughCellIdsOn()
    extract.AssumeSortedAndUniqueIdsOn()
    extract.SetCellIds(crossed, crossed.size)
    extract.SetInputData(bare)
    extract.Update()

    output = extract.GetOutput()
    subset = vtkUnstructuredGrid()
    subset.CopyStructure(output)
    return _PlaneCut(
        _bare_copy(dataset), plane_values, subset,
        vtk_to_numpy(output.GetPointData().GetArray(ORIGINAL_POINT_IDS)).astype(np.int64, copy=False),
        vtk_to_numpy(output.GetCellData().GetArray(ORIGINAL_CELL_IDS)).astype(np.int64, copy=False),
    )


def _cut_with_field(cut: _PlaneCut, dataset: vtkDataSet, choice: _FieldChoice,
                    values: np.ndarray | None) -> vtkPolyData:
    """Cut the crossed cells, carrying only the chosen field, and return the cut with ``kvis_scalars``.

    ``values`` are the field's values on the whole volume, or None to fill the cut with NaN.
    """
    if cut.subset is None:
        volume = _bare_copy(dataset)
    else:
        volume = vtkUnstructuredGrid()
        volume.CopyStructure(cut.subset)
        if values is not None:
            ids = cut.point_ids if choice.association == "point" else cut.cell_ids
            values = values[ids]

    if values is not None:
        array = numpy_to_vtk(values, deep=True)
        array.SetName(choice.name)
        _attribute_data(volume, choice.association).AddArray(array)

    cutter = vtkCutter()
    cutter.SetCutFunction(_plane(cut.plane))
    cutter.SetInputData(volume)
    cutter.Update()
    output = cutter.GetOutput()

    result = vtkPolyData()
    result.CopyStructure(output)
    count = output.GetNumberOfPoints() if choice.association == "point" else output.GetNumberOfCells()
    cut_values = _attribute_data(output, choice.association).GetArray(choice.name)
    if values is None or cut_values is None:
        # No field, or an empty cut: the cutter then adds no arrays at all.
        scalars = np.full(count, np.nan, dtype=np.float32)
    else:
        scalars = _scalars_from(vtk_to_numpy(cut_values), choice.component)
    _attribute_data(result, choice.association).SetScalars(_as_scalars_array(scalars))
    return result


# --- Mesh identity -------------------------------------------------------------


def _same_values(first: object, second: object) -> bool:
    """Compare two VTK arrays (or None) by value."""
    if first is None or second is None:
        return first is second
    if first is second:
        return True
    return np.array_equal(vtk_to_numpy(first), vtk_to_numpy(second))


def _same_mesh(cached: vtkDataSet, dataset: vtkDataSet) -> bool:
    """Return whether two datasets have identical points and cells."""
    if type(cached) is not type(dataset):
        return False
    if (cached.GetNumberOfPoints(), cached.GetNumberOfCells()) != (dataset.GetNumberOfPoints(),
                                                                  dataset.GetNumberOfCells()):
        return False
    if dataset.GetNumberOfPoints() == 0:
        return True

    if isinstance(dataset, vtkImageData):
        return (cached.GetExtent() == dataset.GetExtent() and cached.GetOrigin() == dataset.GetOrigin()
                and cached.GetSpacing() == dataset.GetSpacing()
                and cached.GetDirectionMatrix().GetData() == dataset.GetDirectionMatrix().GetData())
    if isinstance(dataset, vtkRectilinearGrid):
        return cached.GetExtent() == dataset.GetExtent() and all(
            _same_values(getattr(cached, getter)(), getattr(dataset, getter)())
            for getter in ("GetXCoordinates", "GetYCoordinates", "GetZCoordinates"))

    if not _same_values(cached.GetPoints().GetData(), dataset.GetPoints().GetData()):
        return False
    if isinstance(dataset, vtkStructuredGrid):
        return cached.GetExtent() == dataset.GetExtent()
    if isinstance(dataset, vtkUnstructuredGrid):
        return _same_cells(cached, dataset)
    return False


def _cell_types(grid: vtkUnstructuredGrid) -> object:
    try:
        return grid.GetCellTypes()
    except TypeError:
        # Before VTK 9.6 GetCellTypes() needed an argument and the array had another name.
        return grid.GetCellTypesArray()


def _same_cells(cached: vtkUnstructuredGrid, grid: vtkUnstructuredGrid) -> bool:
    cached_cells, cells = cached.GetCells(), grid.GetCells()
    if not (_same_values(_cell_types(cached), _cell_types(grid))
            and _same_values(cached_cells.GetOffsetsArray(), cells.GetOffsetsArray())
            and _same_values(cached_cells.GetConnectivityArray(), cells.GetConnectivityArray())):
        return False

    # Polyhedra keep their faces outside the cell array.
    faces, cached_faces = grid.GetPolyhedronFaces(), cached.GetPolyhedronFaces()
    if faces is None and cached_faces is None:
        return True
    if faces is None or cached_faces is None:
        return False
    return (_same_values(cached_faces.GetConnectivityArray(), faces.GetConnectivityArray())
            and _same_values(cached_faces.GetOffsetsArray(), faces.GetOffsetsArray())
            and _same_values(cached.GetPolyhedronFaceLocations().GetConnectivityArray(),
                             grid.GetPolyhedronFaceLocations().GetConnectivityArray()))


# --- Loading a step ------------------------------------------------------------------


class SurfaceLoader:
    """Read steps into surfaces, reusing readers and the last surface of each part.

    Parameters
    ----------
    cache
        Reuse a part's surface (and its point and cell ids) while the mesh is
        unchanged from the previous step; False extracts it every time.
    """

    def __init__(self, cache: bool = True) -> None:
        self.cache = cache
        self.hits = 0
        self.misses = 0
        self.pool = _ReaderPool()
        self._geometry: dict[tuple, _PartSurface | _PlaneCut] = {}
        # Log messages already given, so repeats over many steps stay quiet.
        self._announced: set[tuple[str, str]] = set()

    def read_parts(self, step: TimeStep, parts: Sequence[str]) -> vtkMultiBlockDataSet:
        """Read the chosen parts of a step with this loader's readers; see :func:`read_parts`."""
        return read_parts(step, parts, self.pool)

    def load(self, step: TimeStep, scene: Scene, missing_field: str = "error") -> vtkPolyData:
        """Read a step and build its surface with ``kvis_scalars``; see :func:`load_surface`."""
        if missing_field not in ("error", "nan"):
            raise ValueError(f"missing_field must be 'error' or 'nan', not {missing_field!r}")
        blocks = self.read_parts(step, scene.parts)
        choice = _choose_field(blocks, scene.parts, scene, missing_field)
        if scene.field is None and ("field", choice.name) not in self._announced:
            self._announced.add(("field", choice.name))
            logger.info("no field given; colouring by %r (choose another with --field)", choice.name)

        pieces = []
        for index, name in enumerate(scene.parts):
            dataset = blocks.GetBlock(index)
            values = self._field_values(step, name, dataset, choice)
            if scene.slice is not None and not isinstance(dataset, vtkPolyData):
                cut = self._cached(("slice", name, scene.slice), dataset,
                                   lambda: _plane_cut(dataset, scene.slice))
                pieces.append(_cut_with_field(cut, dataset, choice, values))
            else:
                surface = self._cached(("surface", name), dataset, lambda: _extract_surface(dataset))
                pieces.append(_surface_with_field(surface, choice, values))
        return _append(pieces)

    def _field_values(self, step: TimeStep, part: str, dataset: vtkDataSet,
                      choice: _FieldChoice) -> np.ndarray | None:
        """Return the field's values on a part, or None (drawn as NaN) when the part lacks it."""
        array = _attribute_data(dataset, choice.association).GetArray(choice.name)
        if array is not None:
            return vtk_to_numpy(array)
        if not _has_data(dataset):
            # foamToVTK 2.x writes such a part in every step, so warn once per part.
            if ("part", part) not in self._announced:
                self._announced.add(("part", part))
                logger.warning("part %s has no data (first seen in time step %s); drawing it in the NaN colour",
                               part, step.label)
        else:
            logger.warning("part %s of time step %s has no %s field %r; drawing it in the NaN colour",
                           part, step.label, choice.association, choice.name)
        return None

    def _cached(self, key: tuple, dataset: vtkDataSet,
                build: Callable[[], _PartSurface | _PlaneCut]) -> _PartSurface | _PlaneCut:
        """Return the cached geometry for ``key`` if its mesh equals ``dataset``'s, else build it."""
        if isinstance(dataset, vtkPolyData) and key[0] == "surface":
            return build()

        cached = self._geometry.get(key)
        if self.cache and cached is not None and _same_mesh(cached.mesh, dataset):
            self.hits += 1
            return cached

        self.misses += 1
        built = build()
        if self.cache:
            # One entry per part: a new slice plane or mesh replaces the old one.
            for old_key in [old for old in self._geometry if old[:2] == key[:2]]:
                del self._geometry[old_key]
            self._geometry[key] = built
        return built


def _surface_with_field(surface: _PartSurface, choice: _FieldChoice, values: np.ndarray | None) -> vtkPolyData:
    """Return a new polydata sharing ``surface``'s geometry, with the field as ``kvis_scalars``."""
    result = vtkPolyData()
    result.CopyStructure(surface.geometry)
    count = result.GetNumberOfPoints() if choice.association == "point" else result.GetNumberOfCells()

    if values is None:
        scalars = np.full(count, np.nan, dtype=np.float32)
    else:
        ids = surface.point_ids if choice.association == "point" else surface.cell_ids
        if ids is not None:
            values = values[ids]
        scalars = _scalars_from(values, choice.component)
    _attribute_data(result, choice.association).SetScalars(_as_scalars_array(scalars))
    return result


def _append(pieces: list[vtkPolyData]) -> vtkPolyData:
    if len(pieces) == 1:
        return pieces[0]
    append = vtkAppendPolyData()
    for piece in pieces:
        append.AddInputData(piece)
    append.Update()
    return append.GetOutput()


_LOADER = SurfaceLoader()


def load_surface(step: TimeStep, scene: Scene, missing_field: str = "error") -> vtkPolyData:
    """Read a time step and return the surface to draw, coloured by one field.

    Volume parts become their outer surface, or their cut with
    ``scene.slice``; patches are used as they are. Readers and the last
    surface of each part are kept per process, so a mesh shared by
    consecutive steps is processed once.

    Parameters
    ----------
    step
        The time step to read.
    scene
        Uses ``parts``, ``field``, ``association``, ``component`` and ``slice``.
    missing_field
        ``"error"`` raises FieldError when a part lacks the field. ``"nan"``
        draws such a part in the NaN colour with a warning instead, which suits
        series whose first time contains fewer fields than the others, as
        foamToVTK 2.x writes them.

    Returns
    -------
    vtkPolyData
        The surface with one float32 array ``kvis_scalars`` set as the active
        point or cell scalars.

    Raises
    ------
    FieldError
        If a part or the field does not exist, or the component does not fit the field.
    StepReadError
        If a file of the step cannot be read.
    """
    return _LOADER.load(step, scene, missing_field)


def resolve_field(step: TimeStep, scene: Scene) -> Scene:
    """Fill in the scene's field and association from one step.

    Call it once before a movie so that every step is coloured by the same
    field in the same association, even where ``field`` is None or
    ``association`` is ``"auto"`` and the steps hold different field sets.

    Parameters
    ----------
    step
        A representative step. In foamToVTK 2.x series the last step contains every field.
    scene
        The scene to complete.

    Returns
    -------
    Scene
        A copy with ``field`` set to a name and ``association`` to ``"point"`` or ``"cell"``.

    Raises
    ------
    FieldError
        As :func:`load_surface`.
    StepReadError
        If a file of the step cannot be read.
    """
    blocks = _LOADER.read_parts(step, scene.parts)
    choice = _choose_field(blocks, scene.parts, scene)
    if scene.field is None:
        logger.info("no field given; colouring by %r (choose another with --field)", choice.name)
    return scene.replace(field=choice.name, association=choice.association)
