"""Fit one camera to the bounds of a whole time series, without VTK.

View names give the direction the camera looks, as ParaView's view buttons do:
``+z`` looks along +z from the -z side. ``auto`` looks straight down the
thinnest axis of the drawn geometry when it is thin (a 2-D case, meshed one
cell thick by OpenFOAM, a patch or a slice) so that the other two axes read
right and up with a right-handed orientation, and uses ``iso`` for 3-D data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .errors import UserError

logger = logging.getLogger(__name__)

Vector = tuple[float, float, float]

# An axis is thin when its extent is at most this fraction of the largest one.
# OpenFOAM's 2-D cavity tutorial is 0.1 x 0.1 x 0.01 (a tenth), damBreak a
# fortieth. NOTE: a 3-D case this flat is drawn as 2-D unless --view is given.
THIN_RATIO = 1.0 / 8.0

# An axis is flat (the geometry has no depth along it, as a patch or an
# axis-aligned slice) when its extent is at most this fraction of the largest.
FLAT_RATIO = 1e-6

# Space around the data: the fitted view is this factor larger than the data.
MARGIN = 1.08

VIEW_ANGLE = 30.0

# (direction of projection, view up) for each named view.
_AXIS_VIEWS: dict[str, tuple[Vector, Vector]] = {
    "+x": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "-x": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "+y": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "-y": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "+z": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "-z": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    # From the +x, -y, +z corner, so that x runs right and z runs up.
    "iso": ((-1.0, 1.0, -1.0), (0.0, 0.0, 1.0)),
}

# The view down each thin axis (x, y, z) that keeps the other two right-handed:
# y right and z up, x right and z up, x right and y up.
_DOWN_AXIS = ("-x", "+y", "-z")

# For a line along x, y or z, a view in which it runs right where one exists.
_ALONG_LINE = ("-z", "-x", "+y")


@dataclass(frozen=True)
class CameraSpec:
    """A VTK camera's settings as plain values.

    ``parallel_scale`` is half the height of the view in world units and is
    used when ``parallel_projection`` is set; ``view_angle`` (degrees) is used
    otherwise. ``planar`` marks a 2-D case, drawn without lighting so that
    colours match the colormap exactly. ``aspect`` is the width over height
    the camera was fitted for.
    """

    position: Vector
    focal_point: Vector
    view_up: Vector
    parallel_scale: float
    parallel_projection: bool
    view_angle: float = VIEW_ANGLE
    planar: bool = False
    aspect: float | None = None


def fit_camera(bounds: tuple[float, ...], view: str = "auto", zoom: float = 1.0,
               aspect: float = 16 / 9) -> CameraSpec:
    """Fit a camera that shows the whole box ``bounds`` with a margin.

    Parameters
    ----------
    bounds : sequence of 6 floats
        ``(xmin, xmax, ymin, ymax, zmin, zmax)``, the union over all steps.
    view : str
        ``+x``, ``-x``, ``+y``, ``-y``, ``+z``, ``-z``, ``iso`` or ``auto``.
    zoom : float
        Magnification; 2 shows the data twice as large.
    aspect : float
        Width over height of the area the data is drawn in.

    Returns
    -------
    CameraSpec
        Parallel projection when any axis is thin (a 2-D case, a line or a
        point), perspective otherwise.

    Raises
    ------
    UserError
        If the bounds are empty or not finite, or ``view`` is unknown.
    """
    low, high = _check_bounds(bounds)
    if view != "auto" and view not in _AXIS_VIEWS:
        raise UserError(f"invalid view {view!r}: choose one of auto, {', '.join(_AXIS_VIEWS)}")
    if not (zoom > 0 and aspect > 0):
        raise ValueError(f"zoom and aspect must be positive, got zoom={zoom}, aspect={aspect}")

    extent = high - low
    thin = thin_axes(extent)
    if view == "auto":
        view = _choose_view(extent, thin)
        logger.debug("view auto: extent %s, thin axes %s, looking %s", tuple(extent), thin, view)

    direction, requested_up = (np.asarray(v, dtype=float) for v in _AXIS_VIEWS[view])
    direction = _unit(direction)
    right = _unit(np.cross(direction, requested_up))
    view_up = np.cross(right, direction)
    center = (low + high) / 2.0

    # Half sizes of the box seen from the camera, measured over its 8 corners.
    corners = np.array([[c[0], c[1], c[2]] for c in _corners(low, high)]) - center
    half_width = np.abs(corners @ right).max()
    half_height = np.abs(corners @ view_up).max()
    half_depth = np.abs(corners @ direction).max()

    if max(half_width, half_height) == 0.0:
        # A single point: show a unit box around it.
        half_width = half_height = 0.5
    half_view_height = max(half_height, half_width / aspect) * MARGIN / zoom

    planar = bool(thin)
    if planar:
        # For a parallel projection the distance only has to clear the data.
        distance = half_depth + 2.0 * half_view_height
    else:
        distance = _perspective_distance(corners, right, view_up, direction, aspect, zoom)
    position = center - direction * distance

    return CameraSpec(
        position=_as_tuple(position),
        focal_point=_as_tuple(center),
        view_up=_as_tuple(view_up),
        parallel_scale=float(half_view_height),
        parallel_projection=planar,
        view_angle=VIEW_ANGLE,
        planar=planar,
        aspect=float(aspect),
    )


def _perspective_distance(corners: np.ndarray, right: np.ndarray, up: np.ndarray,
                          direction: np.ndarray, aspect: float, zoom: float) -> float:
    """Return the distance from the box centre at which every corner is in view.

    A corner at depth ``d`` beyond the centre, seen from distance ``D``, is
    in view when its offsets across the view fit within ``(D + d)`` times
    the tangent of the half view angle. Zoom narrows that tangent.
    """
    tangent = math.tan(math.radians(VIEW_ANGLE / 2.0)) * zoom / MARGIN
    across = np.maximum(np.abs(corners @ up), np.abs(corners @ right) / aspect)
    depth = corners @ direction
    distance = float(np.max(across / tangent - depth))

    # Keep the camera outside the box, even at a high zoom.
    half_depth = float(np.abs(depth).max())
    return max(distance, 1.05 * half_depth)


def thin_axes(extent: np.ndarray | tuple[float, float, float]) -> tuple[int, ...]:
    """Return the indices of the axes thinner than :data:`THIN_RATIO` of the largest.

    A point (every extent zero) counts as thin along all three axes.
    """
    extent = np.asarray(extent, dtype=float)
    largest = extent.max()
    return tuple(int(axis) for axis in range(3) if extent[axis] <= largest * THIN_RATIO)


def _choose_view(extent: np.ndarray, thin: tuple[int, ...]) -> str:
    """Return the view down the thinnest axis of the drawn geometry, along a line, or iso.

    The bounds are those of what is drawn, so a flat patch or an axis-aligned
    slice (zero extent along one axis) is seen face-on even when the case
    around it is thin along another axis.
    """
    if not thin:
        return "iso"
    largest = float(extent.max())
    flat = [axis for axis in thin if extent[axis] <= largest * FLAT_RATIO]
    if len(thin) == 2 and len(flat) == 2:
        (long_axis,) = set(range(3)) - set(thin)
        return _ALONG_LINE[long_axis]
    # Among equally thin axes the last one wins, so a point is seen down z.
    thinnest = min(reversed(thin), key=lambda axis: extent[axis])
    return _DOWN_AXIS[thinnest]


def _check_bounds(bounds: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(bounds, dtype=float)
    if values.shape != (6,):
        raise ValueError(f"bounds must have 6 values (xmin, xmax, ...), got {bounds!r}")
    low, high = values[0::2], values[1::2]
    if not np.all(np.isfinite(values)) or np.any(low > high):
        raise UserError(
            f"invalid data bounds {tuple(bounds)}: the selected parts contain no finite points; "
            "check --parts and --slice"
        )
    return low, high


def _corners(low: np.ndarray, high: np.ndarray) -> list[tuple[float, float, float]]:
    return [(x, y, z) for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _as_tuple(vector: np.ndarray) -> Vector:
    return (float(vector[0]), float(vector[1]), float(vector[2]))
