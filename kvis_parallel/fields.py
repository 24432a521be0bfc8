"""The fields of a time step: listing them, choosing the one to draw, and its finite range.

foamToVTK writes each field as a point or a cell array, sometimes both, next
to id arrays such as ``cellID`` that number things rather than measure them.
:func:`choose_field` resolves the scene's field, association and component
against the parts read, and :func:`scalars_from` reduces the chosen field to
the single float32 component that is drawn as ``kvis_scalars``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
from vtkmodules.vtkCommonDataModel import vtkDataObject, vtkDataSet, vtkMultiBlockDataSet

from .errors import FieldError
from .scene import Scene

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


def attribute_data(dataset: vtkDataSet, association: str):
    return dataset.GetPointData() if association == "point" else dataset.GetCellData()


def _numeric_arrays(dataset: vtkDataSet, association: str) -> Iterator[tuple[str, object]]:
    data = attribute_data(dataset, association)
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
class FieldChoice:
    """The resolved field: name, association ("point" or "cell") and component.

    ``components`` is the field's number of components in the parts read,
    or 1 when no part contains the field.
    """

    name: str
    association: str
    component: str
    components: int = 1


def has_data(dataset: vtkDataSet) -> bool:
    """Return whether a part carries any numeric point or cell array.

    foamToVTK 2.x writes the empty patch of a 2-D case as geometry without
    data. Such a part is drawn with NaN values instead of failing the step.
    """
    return any(True for association in ("point", "cell") for _ in _numeric_arrays(dataset, association))


def choose_field(blocks: vtkMultiBlockDataSet, part_names: Sequence[str], scene: Scene,
                  missing_field: str = "error") -> FieldChoice:
    """Resolve the scene's field, association and component against the parts read."""
    with_data = [item for item in _datasets(blocks) if has_data(item)]
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

    arrays = [attribute_data(item, association).GetArray(name) for item in with_data]
    arrays = [array for array in arrays if array is not None]
    components = arrays[0].GetNumberOfComponents() if arrays else 1
    if arrays and scene.component != "mag" and (components == 1 or _COMPONENT_INDEX[scene.component] >= components):
        raise FieldError(f"field {name!r} has {components} component(s), so it has no {scene.component} "
                         "component; use --component mag" + ("" if components == 1 else " or x, y, z"))
    return FieldChoice(name, association, scene.component, components)


def _holds_field(dataset: vtkDataSet, name: str, requested: str) -> bool:
    associations = ("point", "cell") if requested == "auto" else (requested,)
    return any(attribute_data(dataset, association).GetArray(name) is not None for association in associations)


def _resolve_association(datasets: Sequence[vtkDataSet], name: str, requested: str) -> str | None:
    """Return the association in which every dataset contains the field, or None.

    ``auto`` prefers point data, which gives smooth shading.
    """
    candidates = ("point", "cell") if requested == "auto" else (requested,)
    for association in candidates:
        if datasets and all(attribute_data(item, association).GetArray(name) is not None for item in datasets):
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


def scalars_from(values: np.ndarray, component: str) -> np.ndarray:
    """Reduce an (n,) or (n, k) field to the float32 values that are drawn."""
    if values.ndim == 1:
        return values.astype(np.float32, copy=False)
    if component == "mag":
        return _magnitude_or_values(values).astype(np.float32, copy=False)
    return np.ascontiguousarray(values[:, _COMPONENT_INDEX[component]], dtype=np.float32)


def as_scalars_array(values: np.ndarray) -> object:
    array = numpy_to_vtk(values, deep=True)
    array.SetName(SCALARS_NAME)
    return array


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
