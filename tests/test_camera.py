"""Tests for kvis_parallel.camera: view choice, fit and degenerate bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kvis_parallel.camera import MARGIN, THIN_RATIO, fit_camera, thin_axes
from kvis_parallel.errors import UserError


def direction_of(spec) -> np.ndarray:
    """Return the unit direction the camera looks in."""
    direction = np.subtract(spec.focal_point, spec.position)
    return direction / np.linalg.norm(direction)


def right_of(spec) -> np.ndarray:
    """Return the unit vector that points right in the image."""
    return np.cross(direction_of(spec), spec.view_up)


@pytest.mark.parametrize("bounds, thin_axis, right, up", [
    ((0, 1, 0, 1, 0, 0.01), 2, (1, 0, 0), (0, 1, 0)),
    ((0, 1, 0, 0.01, 0, 1), 1, (1, 0, 0), (0, 0, 1)),
    ((0, 0.01, 0, 1, 0, 1), 0, (0, 1, 0), (0, 0, 1)),
    ((-5, 5, 2, 3, 0.1, 0.1), 2, (1, 0, 0), (0, 1, 0)),
])
def test_2d_case_viewed_down_thin_axis(bounds, thin_axis, right, up):
    spec = fit_camera(bounds, "auto", 1.0, 4 / 3)
    expected_direction = np.zeros(3)
    expected_direction[thin_axis] = 1.0
    assert abs(np.dot(direction_of(spec), expected_direction)) == pytest.approx(1.0)
    np.testing.assert_allclose(right_of(spec), right, atol=1e-12)
    np.testing.assert_allclose(spec.view_up, up, atol=1e-12)
    assert spec.parallel_projection
    assert spec.planar


def test_thin_axis_threshold():
    just_thin = (0, 1, 0, 1, 0, THIN_RATIO * 0.99)
    just_thick = (0, 1, 0, 1, 0, THIN_RATIO * 1.01)
    assert thin_axes(np.subtract(just_thin[1::2], just_thin[0::2])) == (2,)
    assert thin_axes(np.subtract(just_thick[1::2], just_thick[0::2])) == ()


def test_3d_case_gets_iso_view():
    spec = fit_camera((0, 1, 0, 2, 0, 3), "auto", 1.0, 16 / 9)
    direction = direction_of(spec)
    assert not spec.parallel_projection
    assert not spec.planar
    # Looking in from a corner: every axis contributes equally.
    np.testing.assert_allclose(np.abs(direction), [1 / math.sqrt(3)] * 3, atol=1e-12)
    assert spec.view_up[2] > 0.5


def test_focal_point_is_box_center():
    spec = fit_camera((1, 3, -2, 2, 10, 10.05), "auto", 1.0, 1.0)
    np.testing.assert_allclose(spec.focal_point, (2, 0, 10.025))


@pytest.mark.parametrize("aspect, expected_scale", [
    # A 2 x 1 domain: in a wide frame the height decides, in a square one the width.
    (4.0, 0.5 * MARGIN),
    (1.0, 1.0 * MARGIN),
    (2.0, 0.5 * MARGIN),
])
def test_2d_fit_fills_frame_with_margin(aspect, expected_scale):
    spec = fit_camera((0, 2, 0, 1, 0, 0), "auto", 1.0, aspect)
    assert spec.parallel_scale == pytest.approx(expected_scale)


@pytest.mark.parametrize("zoom", [0.5, 2.0, 4.0])
def test_zoom_scales_view(zoom):
    plain = fit_camera((0, 2, 0, 1, 0, 0), "auto", 1.0, 16 / 9)
    zoomed = fit_camera((0, 2, 0, 1, 0, 0), "auto", zoom, 16 / 9)
    assert zoomed.parallel_scale == pytest.approx(plain.parallel_scale / zoom)


def test_zoom_brings_3d_camera_closer():
    bounds = (0, 1, 0, 1, 0, 1)
    far = fit_camera(bounds, "iso", 1.0, 1.0)
    near = fit_camera(bounds, "iso", 2.0, 1.0)
    distance = lambda spec: np.linalg.norm(np.subtract(spec.position, spec.focal_point))  # noqa: E731
    assert distance(near) < distance(far)


def test_3d_fit_keeps_box_in_view():
    bounds = (0, 4, 0, 1, 0, 1)
    aspect = 16 / 9
    spec = fit_camera(bounds, "iso", 1.0, aspect)
    direction = direction_of(spec)
    up = np.asarray(spec.view_up)
    right = np.cross(direction, up)
    half_tangent = math.tan(math.radians(spec.view_angle / 2))
    fill = 0.0
    for x in bounds[0:2]:
        for y in bounds[2:4]:
            for z in bounds[4:6]:
                offset = np.subtract((x, y, z), spec.position)
                depth = offset @ direction
                assert abs(offset @ up) / depth <= half_tangent
                assert abs(offset @ right) / depth <= half_tangent * aspect
                fill = max(fill, abs(offset @ up) / depth / half_tangent,
                           abs(offset @ right) / depth / (half_tangent * aspect))
    # The box fills the view up to the margin, not less.
    assert fill == pytest.approx(1 / MARGIN)


@pytest.mark.parametrize("view, direction", [
    ("+x", (1, 0, 0)), ("-x", (-1, 0, 0)), ("+y", (0, 1, 0)),
    ("-y", (0, -1, 0)), ("+z", (0, 0, 1)), ("-z", (0, 0, -1)),
])
def test_named_views_look_along_axis(view, direction):
    spec = fit_camera((0, 1, 0, 1, 0, 1), view, 1.0, 1.0)
    np.testing.assert_allclose(direction_of(spec), direction, atol=1e-12)
    assert abs(np.dot(spec.view_up, direction)) < 1e-12


def test_named_view_on_2d_case_is_parallel():
    spec = fit_camera((0, 1, 0, 1, 0, 0), "iso", 1.0, 1.0)
    assert spec.parallel_projection


@pytest.mark.parametrize("bounds", [
    (1, 1, 2, 2, 3, 3),
    (0, 0, 0, 0, 0, 0),
])
def test_point_bounds_give_finite_camera(bounds):
    spec = fit_camera(bounds, "auto", 1.0, 1.0)
    assert spec.parallel_scale > 0
    assert np.all(np.isfinite(spec.position))
    assert np.linalg.norm(np.subtract(spec.position, spec.focal_point)) > 0


@pytest.mark.parametrize("bounds, right", [
    ((0, 5, 0, 0, 0, 0), (1, 0, 0)),
    ((0, 0, 0, 5, 0, 0), (0, 1, 0)),
    ((0, 0, 0, 0, 0, 5), None),
])
def test_line_bounds_are_fitted(bounds, right):
    spec = fit_camera(bounds, "auto", 1.0, 1.0)
    length = max(np.subtract(bounds[1::2], bounds[0::2]))
    assert spec.parallel_scale == pytest.approx(length / 2 * MARGIN)
    line = np.subtract(bounds[1::2], bounds[0::2]) / length
    # The line lies across the view, never along the direction of projection.
    assert abs(np.dot(direction_of(spec), line)) < 1e-12
    if right is not None:
        np.testing.assert_allclose(abs(np.dot(right_of(spec), right)), 1.0)


@pytest.mark.parametrize("bounds", [
    (1, -1, 1, -1, 1, -1),
    (0, math.nan, 0, 1, 0, 1),
    (0, math.inf, 0, 1, 0, 1),
])
def test_invalid_bounds_raise_user_error(bounds):
    with pytest.raises(UserError, match="bounds"):
        fit_camera(bounds, "auto", 1.0, 1.0)


def test_unknown_view_raises_user_error():
    with pytest.raises(UserError, match="sideways"):
        fit_camera((0, 1, 0, 1, 0, 1), "sideways", 1.0, 1.0)


def test_records_aspect():
    assert fit_camera((0, 1, 0, 1, 0, 0), "auto", 1.0, 1.5).aspect == 1.5


@pytest.mark.parametrize("name, bounds", [
    # Bounds of OpenFOAM tutorials as foamToVTK writes them.
    ("cavity", (0.0, 0.1, 0.0, 0.1, 0.0, 0.01)),
    ("damBreak", (0.0, 0.584, 0.0, 0.584, 0.0, 0.0146)),
])
def test_openfoam_2d_tutorials_are_planar(name, bounds):
    spec = fit_camera(bounds, "auto", 1.0, 16 / 9)
    assert spec.planar, name
    np.testing.assert_allclose(direction_of(spec), (0, 0, -1), atol=1e-12)


@pytest.mark.parametrize("bounds, flat_axis, right, up", [
    # cavity's movingWall: y = 0.1 exactly, 0.1 long in x, one cell (0.01) deep in z.
    ((0.0, 0.1, 0.1, 0.1, 0.0, 0.01), 1, (1, 0, 0), (0, 0, 1)),
    # A slice at x = 0.05 through a case 0.1 x 0.1 x 0.01.
    ((0.05, 0.05, 0.0, 0.1, 0.0, 0.01), 0, (0, 1, 0), (0, 0, 1)),
    # A strip 1 x 0.1 x 0.01: z is the thinnest of its two thin axes.
    ((0.0, 1.0, 0.0, 0.1, 0.0, 0.01), 2, (1, 0, 0), (0, 1, 0)),
])
def test_flat_geometry_seen_face_on(bounds, flat_axis, right, up):
    spec = fit_camera(bounds, "auto", 1.0, 4 / 3)

    assert abs(direction_of(spec)[flat_axis]) == pytest.approx(1.0)
    assert right_of(spec) == pytest.approx(right)
    assert spec.view_up == pytest.approx(up)
    assert spec.parallel_projection
