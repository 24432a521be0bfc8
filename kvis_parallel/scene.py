"""Render settings: one frozen dataclass shared by the CLI, the MPI job and the server.

A :class:`Scene` contains everything that decides what a frame looks like and how
the movie is encoded. It travels between processes as JSON, so every field is
a plain value. Field names follow the command-line options.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import string
from dataclasses import dataclass
from numbers import Real
from typing import Any

from .errors import UserError

logger = logging.getLogger(__name__)

ASSOCIATIONS = ("auto", "point", "cell")
COMPONENTS = ("mag", "x", "y", "z")
VIEWS = ("+x", "-x", "+y", "-y", "+z", "-z", "iso", "auto")
BASE_COLORMAPS = ("viridis", "plasma", "coolwarm", "jet", "grayscale")
PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow",
)
MAX_SIZE = 7680

# The fields a --time-format may use, and limits that keep a format from the
# command line or an HTTP query from asking for a huge label.
TIME_FORMAT_FIELDS = ("time", "index", "label")
MAX_FORMAT_WIDTH = 64
MAX_TIME_FORMAT_CHARS = 200
MAX_LABEL_CHARS = 200

# Python's format specification mini-language: [[fill]align][sign][z][#][0][width][grouping][.precision][type].
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>[0-9]*)[,_]?(?:\.(?P<precision>[0-9]+))?[bcdeEfFgGnosxX%]?",
    re.DOTALL,
)

# Half-width of the colour range drawn for a constant field, relative to its
# value; a constant zero gets +-ZERO_RANGE_PAD instead.
CONSTANT_RANGE_PAD = 0.01
ZERO_RANGE_PAD = 0.5


@dataclass(frozen=True)
class Scene:
    """Settings for every frame of one movie.

    ``field=None`` means the first field that is not an id array. ``range=None``
    means the global minimum and maximum over all steps. ``view="auto"`` looks
    straight down the thinnest axis of what is drawn when it is flat (a 2-D
    case, a patch or a slice) and uses ``iso`` otherwise.
    """

    field: str | None = None
    association: str = "auto"
    component: str = "mag"
    parts: tuple[str, ...] = ("internal",)
    colormap: str = "viridis"
    range: tuple[float, float] | None = None
    log: bool = False
    view: str = "auto"
    zoom: float = 1.0
    slice: tuple[float, float, float, float, float, float] | None = None
    edges: bool = False
    size: tuple[int, int] = (1280, 720)
    fps: int = 10
    crf: int = 23
    preset: str = "veryfast"
    title: str | None = None
    time_format: str = "t = {time:.3g} s"
    fxaa: bool = False
    background: tuple[float, float, float] = (0.32, 0.34, 0.43)
    nan_color: tuple[float, float, float] = (1.0, 0.0, 1.0)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def replace(self, **changes: Any) -> Scene:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Serialise to a JSON object string."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        """Build a scene from :meth:`to_json` output.

        Raises
        ------
        UserError
            If a key is unknown or a value is invalid.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"invalid scene settings: not JSON ({error})") from None
        if not isinstance(values, dict):
            raise UserError(f"invalid scene settings: expected a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown scene settings {unknown}; known settings: {sorted(known)}")

        for name in ("parts", "range", "slice", "size", "background", "nan_color"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        scene = cls(**values)
        scene.validate()
        return scene

    def validate(self) -> Scene:
        """Check every setting and return the scene unchanged.

        Raises
        ------
        UserError
            Naming the setting, the invalid value and what is accepted.
        """
        self._check_types()
        _check_choice("association", self.association, ASSOCIATIONS)
        _check_choice("component", self.component, COMPONENTS)
        _check_choice("view", self.view, VIEWS)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("colormap", self.colormap.removesuffix("_r"), BASE_COLORMAPS,
                      shown=self.colormap, hint="append _r to reverse one")

        if not self.parts or not all(self.parts):
            raise UserError(f"invalid parts {self.parts}: give 'internal', patch names, or both")

        if self.range is not None:
            low, high = self.range
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise UserError(f"invalid range {low},{high}: give two finite numbers MIN,MAX with MIN < MAX")
            if self.log and low <= 0:
                raise UserError(f"invalid range {low},{high} for --log: MIN must be above zero")

        width, height = self.size
        if not (16 <= width <= MAX_SIZE and 16 <= height <= MAX_SIZE):
            raise UserError(f"invalid size {width}x{height}: width and height must be between 16 and {MAX_SIZE}")

        if not 1 <= self.fps <= 240:
            raise UserError(f"invalid fps {self.fps}: give a whole number from 1 to 240")
        if not 0 <= self.crf <= 51:
            raise UserError(f"invalid crf {self.crf}: give a whole number from 0 (lossless) to 51")
        if not (math.isfinite(self.zoom) and 0.05 <= self.zoom <= 50):
            raise UserError(f"invalid zoom {self.zoom}: give a number from 0.05 to 50")

        for name in ("background", "nan_color"):
            color = getattr(self, name)
            if not all(0.0 <= channel <= 1.0 for channel in color):
                raise UserError(f"invalid {name} {color}: give three numbers R,G,B from 0 to 1")

        if self.slice is not None:
            normal = self.slice[3:]
            if not all(math.isfinite(value) for value in self.slice) or not any(normal):
                raise UserError(f"invalid slice {self.slice}: give OX,OY,OZ,NX,NY,NZ with a non-zero normal")

        check_time_format(self.time_format)
        return self

    def _check_types(self) -> None:
        for name, kind in _SCALAR_TYPES.items():
            value = getattr(self, name)
            if not _is_instance(value, kind):
                raise UserError(f"invalid {name} {value!r}: expected {_TYPE_NAMES[kind]}")

        for name, (length, optional) in _NUMBER_TUPLES.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not (isinstance(value, tuple) and len(value) == length
                    and all(_is_instance(item, Real) for item in value)):
                raise UserError(f"invalid {name} {value!r}: expected {length} numbers")

        if not (isinstance(self.parts, tuple) and all(isinstance(part, str) for part in self.parts)):
            raise UserError(f"invalid parts {self.parts!r}: expected a list of part names")
        if self.field is not None and not isinstance(self.field, str):
            raise UserError(f"invalid field {self.field!r}: expected a field name")
        if self.title is not None and not isinstance(self.title, str):
            raise UserError(f"invalid title {self.title!r}: expected text")
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in self.size):
            raise UserError(f"invalid size {self.size!r}: expected two whole numbers WIDTH,HEIGHT")

    def even_size(self) -> tuple[int, int]:
        """Return the size rounded up to even numbers, as yuv420p requires."""
        width, height = self.size
        return width + width % 2, height + height % 2


# Settings with one plain value, and the type each must have.
_SCALAR_TYPES: dict[str, type] = {
    "association": str, "component": str, "colormap": str, "view": str, "preset": str,
    "time_format": str, "log": bool, "edges": bool, "fxaa": bool,
    "zoom": Real, "fps": int, "crf": int,
}
_TYPE_NAMES = {str: "text", bool: "true or false", Real: "a number", int: "a whole number"}

# Settings made of numbers: (count, whether None is allowed).
_NUMBER_TUPLES = {
    "range": (2, True), "slice": (6, True), "size": (2, False),
    "background": (3, False), "nan_color": (3, False),
}


def _is_instance(value: Any, kind: type) -> bool:
    # bool is a subclass of int, but true/false is never a valid number here.
    if kind is not bool and isinstance(value, bool):
        return False
    return isinstance(value, kind)


def _check_choice(name: str, value: str, choices: tuple[str, ...], *,
                  shown: str | None = None, hint: str = "") -> None:
    if value not in choices:
        suffix = f" ({hint})" if hint else ""
        raise UserError(f"invalid {name} {shown or value!r}: choose one of {', '.join(choices)}{suffix}")


_TIME_FORMAT_HINT = ("use the fields {time} (seconds), {index} (position in the movie, from 0) and "
                     "{label} (the step's name), e.g. 't = {time:.2f} s'")


def check_time_format(text: str) -> None:
    """Check a ``--time-format`` string before any frame is drawn.

    Only the fields ``time``, ``index`` and ``label`` are allowed, without
    attribute or item access, and widths and precisions are capped at
    :data:`MAX_FORMAT_WIDTH`. The format comes from the command line or an
    HTTP query, so a width of 10**8 would otherwise exhaust the memory of
    the renderer.

    Raises
    ------
    UserError
        Naming the format, what is wrong with it and what is accepted.
    """
    if len(text) > MAX_TIME_FORMAT_CHARS:
        raise UserError(f"invalid time format {text[:40]!r}...: it has {len(text)} characters, "
                        f"at most {MAX_TIME_FORMAT_CHARS} are allowed")
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as error:
        raise UserError(f"invalid time format {text!r} ({error}); {_TIME_FORMAT_HINT}") from None

    for _, field_name, format_spec, conversion in pieces:
        if field_name is None:
            continue
        if field_name not in TIME_FORMAT_FIELDS:
            raise UserError(f"invalid time format {text!r}: unknown field {{{field_name}}}; {_TIME_FORMAT_HINT}")
        if conversion is not None and conversion not in "rsa":
            raise UserError(f"invalid time format {text!r}: unknown conversion !{conversion}; {_TIME_FORMAT_HINT}")
        _check_format_spec(text, format_spec or "")

    try:
        sample = text.format(time=1.0, index=0, label="cavity_0")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:
        raise UserError(f"invalid time format {text!r} ({error}); {_TIME_FORMAT_HINT}") from None
    if len(sample) > MAX_LABEL_CHARS:
        raise UserError(f"invalid time format {text!r}: the label has {len(sample)} characters, "
                        f"at most {MAX_LABEL_CHARS} are allowed")


def _check_format_spec(text: str, format_spec: str) -> None:
    if "{" in format_spec:
        raise UserError(f"invalid time format {text!r}: nested fields in a format specification are not "
                        f"allowed; {_TIME_FORMAT_HINT}")
    match = _FORMAT_SPEC.fullmatch(format_spec)
    if match is None:
        raise UserError(f"invalid time format {text!r}: invalid format specification {format_spec!r}; "
                        f"{_TIME_FORMAT_HINT}")
    for number in (match["width"], match["precision"]):
        if number and int(number) > MAX_FORMAT_WIDTH:
            raise UserError(f"invalid time format {text!r}: width and precision must be at most "
                            f"{MAX_FORMAT_WIDTH}, got {int(number)}")


def format_time_label(time_format: str, time: float, index: int, label: str) -> str:
    """Format the time label of one frame, clipped to :data:`MAX_LABEL_CHARS` characters."""
    text = time_format.format(time=time, index=index, label=label)
    if len(text) > MAX_LABEL_CHARS:
        text = text[: MAX_LABEL_CHARS - 3] + "..."
    return text


def scalar_bar_title(field: str | None, component: str, components: int | None = None) -> str:
    """Return the scalar bar title: ``U_x`` for a component, ``|U|`` for the magnitude of a vector.

    ``components`` is the number of components of the field; the magnitude
    is marked only when it is known to be above one.
    """
    name = field or ""
    if not name:
        return ""
    if component in ("x", "y", "z"):
        return f"{name}_{component}"
    if components is not None and components > 1:
        return f"|{name}|"
    return name


def check_log_range(field: str | None, low: float, high: float) -> None:
    """Check that the global range of a field suits ``--log``.

    Call it with the minimum and maximum over all steps when ``--log`` is
    set and no ``--range`` is given.

    Raises
    ------
    UserError
        If ``low`` is zero or below, naming the range and suggesting ``--range``.
    """
    if low > 0:
        return
    suggestion = f"{high / 1000:.3g},{high:.3g}" if high > 0 else "1e-3,1"
    raise UserError(
        f"--log needs values above zero, but field {field!r} has values from {low:.6g} to {high:.6g}; "
        f"give a positive --range MIN,MAX with MIN > 0 (e.g. --range {suggestion}) or drop --log"
    )


def widen_constant_range(low: float, high: float, log: bool = False) -> tuple[float, float]:
    """Return ``(low, high)``, widened around the value when the range is constant.

    A constant field would give every label of the scalar bar the same
    text. Its range becomes +-:data:`CONSTANT_RANGE_PAD` of the value, or
    +-:data:`ZERO_RANGE_PAD` around zero. With ``log`` the value is divided
    and multiplied by ``1 + CONSTANT_RANGE_PAD``, so the range stays positive.
    """
    if high > low:
        return low, high
    value = low
    if log:
        widened = (value / (1 + CONSTANT_RANGE_PAD), value * (1 + CONSTANT_RANGE_PAD))
    else:
        pad = abs(value) * CONSTANT_RANGE_PAD if value else ZERO_RANGE_PAD
        widened = (value - pad, value + pad)
    logger.info("the field is constant (%g) over all steps; colour range widened to %g to %g",
                value, *widened)
    return widened


def finalise_colour_range(scene: Scene, low: float, high: float) -> tuple[float, float]:
    """Return the colour range of a movie from the global minimum and maximum of its field.

    ``--range`` wins when given. Otherwise ``--log`` requires a positive
    minimum, and a constant field gets a range around its value.

    Raises
    ------
    UserError
        If ``--log`` is set without ``--range`` and ``low`` is zero or below.
    """
    if scene.range is not None:
        return scene.range
    if scene.log:
        check_log_range(scene.field, low, high)
    return widen_constant_range(low, high, scene.log)


def plane_misses_box(plane: tuple[float, ...], bounds: tuple[float, ...]) -> bool:
    """Return whether the ``--slice`` plane ``(OX, OY, OZ, NX, NY, NZ)`` misses the box ``bounds``.

    ``bounds`` is ``(xmin, xmax, ymin, ymax, zmin, zmax)``. A plane that
    touches a face or corner does not miss.
    """
    origin, normal = plane[:3], plane[3:]
    corners = [(x, y, z) for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]]
    distances = [sum(n * (c - o) for n, c, o in zip(normal, corner, origin)) for corner in corners]
    return min(distances) > 0 or max(distances) < 0


def slice_miss_error(plane: tuple[float, ...], mesh_bounds: tuple[float, ...] | None = None) -> UserError:
    """Return the error for a ``--slice`` plane that cuts no step's mesh.

    Parameters
    ----------
    plane
        ``(OX, OY, OZ, NX, NY, NZ)``, the plane's origin and normal.
    mesh_bounds
        ``(xmin, xmax, ymin, ymax, zmin, zmax)`` of the mesh, named in the
        message when given.
    """
    origin = ", ".join(f"{value:g}" for value in plane[:3])
    normal = ", ".join(f"{value:g}" for value in plane[3:])
    message = f"the --slice plane through ({origin}) with normal ({normal}) misses the mesh in every time step"
    if mesh_bounds is not None:
        spans = ", ".join(f"{axis} from {mesh_bounds[2 * index]:g} to {mesh_bounds[2 * index + 1]:g}"
                          for index, axis in enumerate("xyz"))
        message += f"; the mesh spans {spans}"
    return UserError(message + "; choose an origin inside the mesh")
