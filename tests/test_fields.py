"""Tests for kvis_parallel.fields: listing fields, id arrays, finite ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_reader import no_vtk_output, step, write_step  # noqa: F401  fixtures used by name
from vtkmodules.vtkCommonDataModel import vtkPolyData

from kvis_parallel.fields import (
    SCALARS_NAME,
    FieldInfo,
    choose_field,
    default_field,
    finite_range,
    is_id_array,
    list_fields,
    scalar_range,
)
from kvis_parallel.reader import read_parts
from kvis_parallel.scene import Scene
from kvis_parallel.series import TimeStep


# --- Choosing the field ---------------------------------------------------------------------


@pytest.mark.parametrize(("field", "association", "components"), [
    ("U", "point", 3), ("U", "cell", 3), ("p", "point", 1), ("T", "cell", 1),
])
def test_choose_field_counts_components(step: TimeStep, field: str, association: str, components: int) -> None:
    choice = choose_field(read_parts(step, ["internal"]), ["internal"], Scene(field=field, association=association))

    assert choice.components == components


def test_choose_field_missing_as_nan_has_one_component(step: TimeStep) -> None:
    choice = choose_field(read_parts(step, ["internal"]), ["internal"], Scene(field="k"), missing_field="nan")

    assert choice.components == 1


# --- Listing fields -------------------------------------------------------------------------


@pytest.mark.parametrize("ascii", [False, True])
def test_list_fields(tmp_path: Path, ascii: bool) -> None:
    step = write_step(tmp_path, 0, 0.5, ascii=ascii)

    fields = {(info.name, info.association): info for info in list_fields(read_parts(step, ["internal"]))}

    assert set(fields) == {("cellID", "cell"), ("p", "cell"), ("U", "cell"), ("T", "cell"), ("cellIndex", "cell"),
                           ("p", "point"), ("U", "point")}
    assert fields[("U", "point")].components == 3
    assert fields[("p", "cell")].components == 1
    low, high = fields[("p", "point")].range
    assert low == pytest.approx(0.5)
    assert high == pytest.approx(2.0 + 3.0 + 3.0 + 0.5)


def test_list_fields_range_ignores_nan_and_inf(step: TimeStep) -> None:
    fields = {(info.name, info.association): info for info in list_fields(read_parts(step, ["internal"]))}

    low, high = fields[("T", "cell")].range
    assert np.isfinite(low)
    assert np.isfinite(high)
    assert low > 300.0
    assert high < 310.0


def test_list_fields_vector_range_is_magnitude(step: TimeStep) -> None:
    fields = {(info.name, info.association): info for info in list_fields(read_parts(step, ["internal"]))}

    low, high = fields[("U", "point")].range
    assert low == pytest.approx(0.5)
    assert high == pytest.approx(np.sqrt(4.0 + 2.25 + 0.25))


def test_list_fields_over_parts(step: TimeStep) -> None:
    blocks = read_parts(step, ["internal", "movingWall"])

    names = [(info.name, info.association) for info in list_fields(blocks)]

    assert ("patchID", "cell") in names
    assert names.count(("p", "point")) == 1


@pytest.mark.parametrize(("values", "expected"), [
    (np.array([1.0, np.nan, -2.0, np.inf]), (-2.0, 1.0)),
    (np.array([np.nan, np.inf, -np.inf]), None),
    (np.array([]), None),
    (np.array([3.0, 3.0]), (3.0, 3.0)),
])
def test_finite_range(values: np.ndarray, expected: tuple[float, float] | None) -> None:
    assert finite_range(values) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("cellID", True), ("patchID", True), ("procID", True), ("vtkOriginalCellIds", True),
    ("p", False), ("U", False), ("alpha.water", False), ("fluid", False),
])
def test_is_id_array(name: str, expected: bool) -> None:
    assert is_id_array(name) is expected


def test_default_field_skips_ids() -> None:
    fields = [FieldInfo("cellID", "cell", 1, (0, 9)), FieldInfo("procID", "cell", 1, (0, 0)),
              FieldInfo("p", "cell", 1, (0, 1))]

    assert default_field(fields).name == "p"
    assert default_field(fields[:2]) is None


def test_scalar_range_requires_kvis_scalars() -> None:
    with pytest.raises(ValueError, match=SCALARS_NAME):
        scalar_range(vtkPolyData())
