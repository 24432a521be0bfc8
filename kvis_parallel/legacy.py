"""Check that a binary legacy ``.vtk`` file contains every section that its own lines declare.

VTK's legacy readers return what they parsed from a truncated binary file
without reporting an error: an array cut short keeps its declared length
and is filled with whatever the reader had in memory. Each section of a
binary legacy file starts with an ASCII line that gives its size (``POINTS
882 float``, ``CELLS 400 3600``, ``p 1 400 float`` inside a FIELD block), so
walking these lines finds the end of the data they promise without parsing it.

The walk covers the sections that foamToVTK and VTK's own writers put in
unstructured grids and polydata. At a line it does not know (``METADATA``,
structured grids, string arrays), it stops and reports nothing.
"""

from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# Bytes per value of the legacy format's binary types. "long" is left out:
# its size on disk depends on the writer's platform.
TYPE_SIZES = {
    "bit": None, "unsigned_char": 1, "char": 1, "short": 2, "unsigned_short": 2, "int": 4,
    "unsigned_int": 4, "float": 4, "double": 8, "vtktypeint64": 8, "vtktypeuint64": 8, "vtkIdType": 8,
}

CELL_LISTS = ("CELLS", "POLYGONS", "LINES", "VERTICES", "TRIANGLE_STRIPS")


class TruncatedFile(Exception):
    """A section that a legacy file declares ends beyond the end of the file."""


@dataclass
class Declared:
    """The counts and arrays that a legacy file's section lines declare.

    ``arrays`` lists ``(association, name)`` for the arrays of the point and
    cell data; arrays of the dataset's own field data are not listed.
    """

    points: int | None = None
    cells: int | None = None
    arrays: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = True
    association: str | None = None


class _Walk:
    """A cursor over the bytes of a binary legacy file."""

    def __init__(self, data: bytes | mmap.mmap, position: int) -> None:
        self.data = data
        self.position = position

    def line(self) -> list[str] | None:
        """Return the words of the next non-blank line, or None at the end of the file."""
        while self.position < len(self.data):
            end = self.data.find(b"\n", self.position)
            if end < 0:
                text = bytes(self.data[self.position:]).decode("ascii", "replace").strip()
                raise TruncatedFile(f"it ends inside the line {text[:40]!r}")
            words = bytes(self.data[self.position:end]).decode("ascii", "replace").split()
            self.position = end + 1
            if words:
                return words
        return None

    def skip(self, section: str, count: int, type_name: str) -> bool:
        """Skip ``count`` binary values; return False for a type whose size is unknown."""
        size = TYPE_SIZES.get(type_name)
        if size is None:
            return False
        end = self.position + count * size
        if end > len(self.data):
            raise TruncatedFile(f"its {section} section needs {end} bytes but the file has {len(self.data)}")
        self.position = end
        return True


def declared_sections(path: Path) -> Declared:
    """Walk the section lines of a binary legacy file and return the counts they declare.

    Parameters
    ----------
    path
        A legacy ``.vtk`` file. ASCII files are not walked, because VTK
        reports an ASCII array cut short itself.

    Returns
    -------
    Declared
        ``complete`` is False when the walk stopped at a line it does not know
        (or did not start, for an ASCII file), so the counts cover only the
        sections before that line.

    Raises
    ------
    TruncatedFile
        If a section's data reaches beyond the end of the file.
    OSError
        If the file cannot be read.
    """
    with open(path, "rb") as stream:
        if stream.seek(0, 2) == 0:
            return Declared(complete=False)
        # A memory map lets the walk jump over the binary blocks without reading them.
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            header = bytes(data[:1024]).split(b"\n", 4)
            if len(header) < 5 or header[2].strip().upper() != b"BINARY":
                return Declared(complete=False)
            walk = _Walk(data, sum(len(line) + 1 for line in header[:4]))
            return _walk_sections(path, walk)


def _walk_sections(path: Path, walk: _Walk) -> Declared:
    declared = Declared()
    while (words := walk.line()) is not None:
        try:
            known = _walk_section(walk, words, declared)
        except ValueError:
            # A count that is not a number: leave the verdict to VTK's reader.
            known = False
        if not known:
            logger.debug("%s: stopped checking sections at %r", path, " ".join(words))
            declared.complete = False
            break
    return declared


def _walk_section(walk: _Walk, words: list[str], declared: Declared) -> bool:
    """Skip the data of the section that ``words`` opens; return False for an unknown section."""
    keyword = words[0]
    if keyword == "POINTS" and len(words) == 3:
        declared.points = int(words[1])
        return walk.skip("POINTS", 3 * declared.points, words[2])
    if keyword in CELL_LISTS and len(words) == 3:
        return _walk_cells(walk, keyword, int(words[1]), int(words[2]), declared)
    if keyword == "CELL_TYPES" and len(words) == 2:
        return walk.skip("CELL_TYPES", int(words[1]), "int")
    if keyword in ("CELL_DATA", "POINT_DATA") and len(words) == 2:
        declared.association = "cell" if keyword == "CELL_DATA" else "point"
        if not walk.data[walk.position:walk.position + 64].strip():
            raise TruncatedFile(f"it ends right after its {keyword} line")
        return True
    if keyword == "FIELD" and len(words) == 3:
        return _walk_field(walk, int(words[2]), declared)
    return False


def _walk_cells(walk: _Walk, keyword: str, count: int, size: int, declared: Declared) -> bool:
    if not walk.data[walk.position:walk.position + 7] == b"OFFSETS":
        # Before format 5.1 a cell list is one block of ints: each cell's
        # point count, then its point ids.
        declared.cells = (declared.cells or 0) + count
        return walk.skip(keyword, size, "int")

    # Format 5.1 gives the number of offsets, one more than the cells, and
    # stores the connectivity in a second block.
    declared.cells = (declared.cells or 0) + count - 1
    words = walk.line()
    if len(words) != 2 or not walk.skip(f"{keyword} OFFSETS", count, words[1]):
        return False
    words = walk.line()
    if words is None or words[0] != "CONNECTIVITY" or len(words) != 2:
        raise TruncatedFile(f"its {keyword} section ends before the CONNECTIVITY block")
    return walk.skip(f"{keyword} CONNECTIVITY", size, words[1])


def _walk_field(walk: _Walk, arrays: int, declared: Declared) -> bool:
    for number in range(1, arrays + 1):
        words = walk.line()
        if words is None:
            raise TruncatedFile(f"it ends before array {number} of {arrays} of a FIELD block")
        if len(words) != 4:
            return False
        name, components, tuples, type_name = words
        if not walk.skip(f"array {name!r}", int(components) * int(tuples), type_name):
            return False
        if declared.association is not None:
            declared.arrays.append((declared.association, name))
    return True
