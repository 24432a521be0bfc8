"""Extract the surface (or slice) of a time step that is drawn, reusing the mesh between steps.

:func:`load_surface` reads the chosen parts of a step, extracts the outer
surface of volume parts (or cuts them with the slice plane), and stores the
chosen field as a single-component float array ``kvis_scalars`` set active.

Consecutive foamToVTK steps usually share one mesh and differ only in their
fields. A :class:`SurfaceLoader` keeps the last surface of each part together
with the ids of the volume points and cells it came from. When the next step's
mesh is identical, it gathers the new field values through those ids instead
of extracting the surface again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
from vtkmodules.vtkCommonCore import VTK_ID_TYPE
from vtkmodules.vtkCommonDataModel import (
    vtkDataSet,
    vtkImageData,
    vtkMultiBlockDataSet,
    vtkPlane,
    vtkPointSet,
    vtkPolyData,
    vtkRectilinearGrid,
    vtkStructuredGrid,
    vtkUnstructuredGrid,
)
from vtkmodules.vtkFiltersCore import vtkAppendPolyData, vtkCutter, vtkExtractCells
from vtkmodules.vtkFiltersGeometry import vtkDataSetSurfaceFilter

from .fields import (
    ORIGINAL_CELL_IDS,
    ORIGINAL_POINT_IDS,
    FieldChoice,
    as_scalars_array,
    attribute_data,
    choose_field,
    has_data,
    scalars_from,
)
from .reader import PROCESS_READERS, ReaderPool, read_parts
from .scene import Scene
from .series import TimeStep

logger = logging.getLogger(__name__)


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


@dataclass
class _PlaneCut:
    """The cells of a volume that a plane crosses, as a small grid to cut each step.

    ``subset`` shares no arrays with the step it came from; ``point_ids`` and
    ``cell_ids`` map its points and cells back to the volume. ``subset`` is
    None when the volume is cut whole: it is not an unstructured grid, or the
    plane crosses every cell (as a mid-plane slice of a one-cell-thick 2-D case does).
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


def _plane_facing_mesh(dataset: vtkDataSet, plane_values: tuple[float, ...]) -> tuple[float, ...]:
    """Return the plane, with its normal reversed when no point of ``dataset`` lies below it.

    vtkCutter (VTK 9.7.2) counts a point on the plane as above it, so a plane on
    a face of the mesh boundary with the whole mesh above it cuts nothing. The
    bottom face of a one-cell-thick 2-D case is such a face. Reversing the
    normal puts the mesh below the plane, and the cut is that face.
    """
    if dataset.GetNumberOfPoints() == 0:
        return plane_values
    if isinstance(dataset, vtkPointSet):
        points = vtk_to_numpy(dataset.GetPoints().GetData())
    else:
        # Image and rectilinear data have no point array; their corners bound every point.
        bounds = dataset.GetBounds()
        points = np.array([(x, y, z) for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]])
    distance = (points - np.asarray(plane_values[:3], dtype=np.float64)) @ np.asarray(plane_values[3:])
    if distance.min() != 0:
        return plane_values
    return (*plane_values[:3], *(-component for component in plane_values[3:]))


def _plane_cut(dataset: vtkDataSet, plane_values: tuple[float, ...]) -> _PlaneCut:
    plane_values = _plane_facing_mesh(dataset, plane_values)
    if not isinstance(dataset, vtkUnstructuredGrid) or dataset.GetNumberOfCells() == 0:
        return _PlaneCut(_bare_copy(dataset), plane_values, None, None, None)

    crossed = _crossed_cells(dataset, plane_values)
    if crossed.size == 0:
        nothing = np.zeros(0, dtype=np.int64)
        return _PlaneCut(_bare_copy(dataset), plane_values, vtkUnstructuredGrid(), nothing, nothing)
    if crossed.size == dataset.GetNumberOfCells():
        # vtkExtractCells (VTK 9.7.2) passes its input through without
        # vtkOriginalCellIds when every cell is selected, and a subset of
        # every cell would only be a copy.
        return _PlaneCut(_bare_copy(dataset), plane_values, None, None, None)

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


def _cut_with_field(cut: _PlaneCut, dataset: vtkDataSet, choice: FieldChoice,
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
        attribute_data(volume, choice.association).AddArray(array)

    cutter = vtkCutter()
    cutter.SetCutFunction(_plane(cut.plane))
    cutter.SetInputData(volume)
    cutter.Update()
    output = cutter.GetOutput()

    result = vtkPolyData()
    result.CopyStructure(output)
    count = output.GetNumberOfPoints() if choice.association == "point" else output.GetNumberOfCells()
    cut_values = attribute_data(output, choice.association).GetArray(choice.name)
    if values is None or cut_values is None:
        # No field, or an empty cut: the cutter then adds no arrays at all.
        scalars = np.full(count, np.nan, dtype=np.float32)
    else:
        scalars = scalars_from(vtk_to_numpy(cut_values), choice.component)
    attribute_data(result, choice.association).SetScalars(as_scalars_array(scalars))
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
    pool
        Readers to reuse; a new pool for this loader when None.

    Attributes
    ----------
    sliced_volume_bounds
        ``[xmin, xmax, ymin, ymax, zmin, zmax]`` over every volume part that
        this loader cut with a slice plane, so an error for a plane that cuts
        nothing can name the mesh's extent. It is ``[inf, -inf] * 3`` before
        the first such part.
    last_choice
        The field chosen for the last step loaded, or None before the first.
    """

    def __init__(self, cache: bool = True, pool: ReaderPool | None = None) -> None:
        self.cache = cache
        self.hits = 0
        self.misses = 0
        self.sliced_volume_bounds = np.array([np.inf, -np.inf] * 3)
        self.last_choice: FieldChoice | None = None
        self.pool = ReaderPool() if pool is None else pool
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
        choice = choose_field(blocks, scene.parts, scene, missing_field)
        self.last_choice = choice
        if scene.field is None and ("field", choice.name) not in self._announced:
            self._announced.add(("field", choice.name))
            logger.info("no field given; colouring by %r (choose another with --field)", choice.name)

        pieces = []
        for index, name in enumerate(scene.parts):
            dataset = blocks.GetBlock(index)
            values = self._field_values(step, name, dataset, choice)
            if scene.slice is not None and not isinstance(dataset, vtkPolyData):
                self._add_sliced_volume(dataset)
                cut = self._cached(("slice", name, scene.slice), dataset,
                                   lambda: _plane_cut(dataset, scene.slice))
                pieces.append(_cut_with_field(cut, dataset, choice, values))
            else:
                surface = self._cached(("surface", name), dataset, lambda: _extract_surface(dataset))
                pieces.append(_surface_with_field(surface, choice, values))
        return _append(pieces)

    def _add_sliced_volume(self, dataset: vtkDataSet) -> None:
        if dataset.GetNumberOfPoints() == 0:
            return
        bounds = np.array(dataset.GetBounds())
        self.sliced_volume_bounds[0::2] = np.minimum(self.sliced_volume_bounds[0::2], bounds[0::2])
        self.sliced_volume_bounds[1::2] = np.maximum(self.sliced_volume_bounds[1::2], bounds[1::2])

    def _field_values(self, step: TimeStep, part: str, dataset: vtkDataSet,
                      choice: FieldChoice) -> np.ndarray | None:
        """Return the field's values on a part, or None (drawn as NaN) when the part lacks it."""
        array = attribute_data(dataset, choice.association).GetArray(choice.name)
        if array is not None:
            return vtk_to_numpy(array)
        if not has_data(dataset):
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


def _surface_with_field(surface: _PartSurface, choice: FieldChoice, values: np.ndarray | None) -> vtkPolyData:
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
        scalars = scalars_from(values, choice.component)
    attribute_data(result, choice.association).SetScalars(as_scalars_array(scalars))
    return result


def _append(pieces: list[vtkPolyData]) -> vtkPolyData:
    if len(pieces) == 1:
        return pieces[0]
    append = vtkAppendPolyData()
    for piece in pieces:
        append.AddInputData(piece)
    append.Update()
    return append.GetOutput()


_LOADER = SurfaceLoader(pool=PROCESS_READERS)


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
    choice = choose_field(blocks, scene.parts, scene)
    if scene.field is None:
        logger.info("no field given; colouring by %r (choose another with --field)", choice.name)
    return scene.replace(field=choice.name, association=choice.association)
