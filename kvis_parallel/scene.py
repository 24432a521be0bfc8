"""Render settings: one frozen dataclass shared by the CLI, the MPI job and the server.

A :class:`Scene` holds everything that decides what a frame looks like and how
the movie is encoded. It travels between processes as JSON, so every field is
a plain value. Field names follow the command-line options.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
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


@dataclass(frozen=True)
class Scene:
    """Settings for every frame of one movie.

    ``field=None`` means the first field that is not an id array. ``range=None``
    means the global minimum and maximum over all steps. ``view="auto"`` looks
    straight down the thin axis of a 2-D case and uses ``iso`` otherwise.
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

        try:
            self.time_format.format(time=1.0, index=0, label="0")
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:
            raise UserError(
                f"invalid time format {self.time_format!r} ({error}); "
                "use Python format fields {time}, {index} and {label}, e.g. 't = {time:.2f} s'"
            ) from None
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
