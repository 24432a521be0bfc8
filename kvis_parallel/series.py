"""Find the time steps of a foamToVTK (or other VTK) time series and order them by time.

Accepted inputs, from most to least explicit:

- a ``.series`` file (ParaView's JSON list of file names and times) or a ``.pvd``
  collection;
- foamToVTK's XML layout: ``<case>_<index>.vtm`` steps that point to
  ``<case>_<index>/internal.vtu`` and ``<case>_<index>/boundary/<patch>.vtp``,
  usually with ``<case>.vtm.series`` beside them;
- foamToVTK's legacy layout: ``<case>_<index>.vtk`` for the internal mesh and
  ``<patch>/<patch>_<index>.vtk`` for each boundary patch;
- any sequence of ``.vtu/.vtp/.vts/.vtr/.vti/.vtk`` files numbered at the end of
  their name.

The number in a foamToVTK file name is the time index, not the time. Steps are
ordered by the times of a ``.series`` file whose names all resolve, else by the
``TimeValue`` field data stored in each file, else by the number in the name.
This module reads only the head of each file and never imports VTK.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import struct
import xml.etree.ElementTree as ElementTree
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .errors import SeriesError

logger = logging.getLogger(__name__)

INTERNAL = "internal"
DATASET_SUFFIXES = (".vtu", ".vtp", ".vts", ".vtr", ".vti", ".vtk")
STEP_SUFFIXES = DATASET_SUFFIXES + (".vtm",)

# Bytes read from the start of a dataset file when looking for its TimeValue:
# the field data comes before the points in both formats. A .vtm file keeps its
# field data after the block list and is small, so it is read whole.
HEAD_BYTES = 8 * 1024

# Depth of the breadth-first search for a VTK folder below the given folder.
# Tarballs made from `job_42/case/VTK` need 3.
MAX_SEARCH_DEPTH = 6

_NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_FOAM_NAME = re.compile(rf"^(?P<case>.+)_(?P<number>{_NUMBER})$")
_TRAILING_NUMBER = re.compile(rf"^(?P<prefix>.*?)(?P<number>{_NUMBER})$")
_LEGACY_TIME = re.compile(rb"\nTimeValue[ \t]+1[ \t]+1[ \t]+(float|double)[ \t]*\r?\n")
_XML_TIME = re.compile(rb"<DataArray\b[^>]*\bName=[\"']TimeValue[\"'][^>]*>", re.DOTALL)
_XML_ATTRIBUTE = re.compile(r"(\w+)=[\"']([^\"']*)[\"']")


@dataclass(frozen=True)
class TimeStep:
    """One time of the series and the files of its parts.

    ``label`` is the file stem or the name in the series file, for messages and
    the time label. ``parts`` maps ``"internal"`` to the internal mesh file and
    each patch name to its patch file.
    """

    time: float
    label: str
    parts: Mapping[str, Path] = field(default_factory=dict)

    def first_file(self) -> Path:
        """Return the internal mesh file, or the first patch file if there is none."""
        if INTERNAL in self.parts:
            return self.parts[INTERNAL]
        return next(iter(self.parts.values()))


@dataclass(frozen=True)
class TimeSeries:
    """Time steps in time order, one per time, and where they were found.

    ``layout`` is one of ``"foam-legacy"``, ``"foam-xml"``, ``"series"``,
    ``"pvd"`` or ``"files"``.
    """

    root: Path
    layout: str
    steps: tuple[TimeStep, ...]

    @property
    def part_names(self) -> tuple[str, ...]:
        """Names of all parts over all steps: ``"internal"`` first, then patches sorted."""
        names = {name for step in self.steps for name in step.parts}
        patches = sorted(names - {INTERNAL})
        return ((INTERNAL,) if INTERNAL in names else ()) + tuple(patches)


@dataclass(frozen=True)
class _Candidate:
    """A step before ordering: the number in its name and its parts."""

    number: float
    label: str
    parts: dict[str, Path]


def discover_series(path: Path) -> TimeSeries:
    """Find the time steps under a folder or in a collection file, ordered by time.

    Parameters
    ----------
    path
        A foamToVTK ``VTK/`` folder, a folder with one somewhere below it, a
        folder of numbered VTK files, a ``.series`` file or a ``.pvd`` file.

    Returns
    -------
    TimeSeries
        Steps in increasing time, one per time.

    Raises
    ------
    SeriesError
        If the path does not exist or no time steps are found.
    """
    path = Path(path)
    if not path.exists():
        raise SeriesError(f"input not found: {path}; give a foamToVTK VTK folder, a .series or a .pvd file")

    if path.is_file():
        return _discover_file(path)

    root = _find_root(path)
    if root is None:
        raise SeriesError(_nothing_found_message(path, "no VTK files in it or in its subfolders"))
    series = _discover_folder(root)
    if series is None:
        raise SeriesError(_nothing_found_message(root, "no file name ends in a time index"))

    logger.info("found %d time steps (%s layout) under %s", len(series.steps), series.layout, root)
    return series


def _nothing_found_message(path: Path, reason: str) -> str:
    return (
        f"no time steps found under {path}: expected foamToVTK output "
        f"(VTK/<case>_<n>.vtk or .vtm) or .series/.pvd; {reason}"
    )


def _discover_file(path: Path) -> TimeSeries:
    name = path.name.lower()
    if name.endswith(".series"):
        steps, layout = _steps_from_series_file(path)
    elif name.endswith(".pvd"):
        steps = _steps_from_pvd(path)
        layout = "pvd"
    else:
        raise SeriesError(
            f"unsupported input file {path}: give a folder, a .series or a .pvd file "
            "(archives are extracted first)"
        )

    if steps is None:
        raise SeriesError(f"no time steps found in {path}: its file names do not resolve to files beside it")
    if steps and all(step.parts.get(INTERNAL, Path()).suffix == ".vtm" for step in steps):
        steps = [_expand_vtm_step(step) for step in steps]
        layout = "foam-xml"
    else:
        steps = _attach_legacy_patches(path.parent, steps)
    if not steps:
        raise SeriesError(f"no time steps found in {path}: it lists no files")
    return TimeSeries(path.parent, layout, tuple(steps))


# --- Locating the folder -----------------------------------------------------


def _find_root(path: Path) -> Path | None:
    """Return the folder that contains the series: ``path`` itself or a folder below it.

    A folder named ``VTK`` (foamToVTK's output) wins over any other folder
    with VTK files, at any depth, and a shallower one over a deeper one.

    Raises
    ------
    SeriesError
        If several folders at the same depth are equally likely.
    """
    if _holds_steps(path):
        return path

    levels = []
    level = [path]
    for _ in range(MAX_SEARCH_DEPTH):
        level = [sub for folder in level for sub in _subfolders(folder)]
        if not level:
            break
        levels.append(level)

    for accept in (lambda folder: folder.name == "VTK", lambda folder: True):
        for level in levels:
            found = [folder for folder in level if accept(folder) and _holds_steps(folder)]
            if found:
                return _pick_one(found)
    return None


def _pick_one(folders: list[Path]) -> Path:
    if len(folders) > 1:
        raise SeriesError(f"several folders contain time steps: {', '.join(map(str, folders))}; "
                          "give one of them as INPUT")
    return folders[0]


def _subfolders(folder: Path) -> list[Path]:
    # Hidden folders and macOS resource forks never hold a case.
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        logger.debug("cannot list %s: %s", folder, error)
        return []
    return [entry for entry in entries
            if entry.is_dir() and not entry.name.startswith((".", "__MACOSX"))]


def _holds_steps(folder: Path) -> bool:
    """Return whether a folder contains step files, or only foamToVTK legacy patch folders."""
    try:
        if any(_is_step_file(entry) or entry.name.endswith((".series", ".pvd"))
               for entry in folder.iterdir() if entry.is_file()):
            return True
    except OSError:
        return False
    return any(_numbered(sub.glob(f"{sub.name}_*.vtk"), expected_case=sub.name) for sub in _subfolders(folder))


def _is_step_file(path: Path) -> bool:
    return path.suffix.lower() in STEP_SUFFIXES and not path.name.startswith(".")


# --- Discovery inside one folder ---------------------------------------------


def _discover_folder(root: Path) -> TimeSeries | None:
    found = _steps_from_collections(root)
    if found is not None:
        steps, layout = found
        if all(step.first_file().suffix == ".vtm" for step in steps):
            steps = [_expand_vtm_step(step) for step in steps]
            layout = "foam-xml"
        else:
            steps = _attach_legacy_patches(root, steps)
        return TimeSeries(root, layout, tuple(steps))

    files = sorted(entry for entry in root.iterdir() if entry.is_file() and _is_step_file(entry))
    for layout, finder in (("foam-xml", _foam_xml_candidates),
                           ("foam-legacy", _foam_legacy_candidates),
                           ("files", _numbered_file_candidates)):
        candidates = finder(root, files)
        if candidates:
            steps = _order_candidates(candidates)
            if layout == "foam-xml":
                steps = [_expand_vtm_step(step) for step in steps]
            return TimeSeries(root, layout, tuple(steps))
    return None


def _steps_from_collections(root: Path) -> tuple[list[TimeStep], str] | None:
    """Return the steps and layout of the first ``.series`` or ``.pvd`` file whose names all resolve."""
    collections = sorted(root.glob("*.series")) + sorted(root.glob("*.pvd"))
    # foamToVTK's XML series lists the multiblock steps, the most complete view.
    collections.sort(key=lambda item: (not item.name.endswith(".vtm.series"), item.suffix == ".pvd"))
    for collection in collections:
        if collection.suffix == ".pvd":
            steps, layout = _steps_from_pvd(collection), "pvd"
        else:
            steps, layout = _steps_from_series_file(collection)
        if steps:
            logger.debug("using the times in %s", collection)
            return steps, layout
    return None


def _steps_from_series_file(path: Path) -> tuple[list[TimeStep] | None, str]:
    """Parse a ``.series`` JSON file into its steps and layout.

    The steps are None when the file is invalid or a name does not resolve.
    The layout is "foam-legacy" for a v1912 legacy series (see
    :func:`_legacy_series_file`), else "series".
    """
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["files"]
        listed = [(str(entry["name"]), float(entry["time"])) for entry in entries]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring %s: not a valid .series file (%s)", path, error)
        return None, "series"

    if listed and not any(_listed_file_exists(path.parent, name) for name, _ in listed):
        legacy = [_legacy_series_file(path, name) for name, _ in listed]
        if all(file is not None and file.is_file() for file in legacy):
            logger.debug("%s names steps as foamToVTK v1912 -legacy does, e.g. %r for %s",
                         path, listed[0][0], legacy[0])
            listed = [(file.relative_to(path.parent).as_posix(), time) for file, (_, time) in zip(legacy, listed)]
            return _resolve_listed(path, listed), "foam-legacy"
    return _resolve_listed(path, listed), "series"


def _listed_file_exists(folder: Path, name: str) -> bool:
    file = _contained_file(folder, name)
    return file is not None and file.is_file()


def _steps_from_pvd(path: Path) -> list[TimeStep] | None:
    """Parse a ``.pvd`` collection; None when it is invalid or a name does not resolve."""
    try:
        tree = ElementTree.parse(path)
        listed = [(item.attrib["file"], float(item.attrib.get("timestep", "nan")))
                  for item in tree.iter("DataSet")]
    except (OSError, ElementTree.ParseError, KeyError, ValueError) as error:
        logger.warning("ignoring %s: not a valid .pvd file (%s)", path, error)
        return None
    return _resolve_listed(path, listed)


def _contained_file(folder: Path, name: str) -> Path | None:
    """Return ``folder / name``, or None when the name is absolute or climbs out with ``..``.

    Collection files come from uploads, so they must not point the reader at
    other files on the server.
    """
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        return None
    return folder.joinpath(*relative.parts)


def _legacy_series_file(collection: Path, name: str) -> Path | None:
    """Return ``<case><name>.vtk`` beside a v1912 legacy ``<case>.vtk.series``, or None.

    foamToVTK v1912 with ``-legacy`` writes names such as ``"_20"`` in
    ``cavity.vtk.series`` for the file ``cavity_20.vtk``.
    """
    suffix = ".vtk.series"
    if not collection.name.lower().endswith(suffix) or not name.startswith("_"):
        return None
    case = collection.name[: -len(suffix)]
    return _contained_file(collection.parent, f"{case}{name}.vtk")


def _resolve_listed(collection: Path, listed: list[tuple[str, float]]) -> list[TimeStep] | None:
    folder = collection.parent
    files = [_contained_file(folder, name) for name, _ in listed]
    missing = [name for (name, _), file in zip(listed, files) if file is None or not file.is_file()]
    if missing:
        logger.warning("ignoring %s: %d of its %d names match no file inside %s (first: %r); "
                       "ordering by the files instead", collection, len(missing), len(listed), folder, missing[0])
        return None

    # A .pvd may list several parts of one time (its "part" attribute). Only
    # the first file of each time is kept, as for duplicates elsewhere.
    candidates = []
    for (name, time), file in zip(listed, files):
        if math.isnan(time):
            time = _number_in_name(file)
        if time is None or math.isnan(time):
            logger.warning("ignoring %s in %s: no time given", name, collection)
            continue
        candidates.append(_Candidate(time, _stem(file), {INTERNAL: file}))
    return _unique_by_time(sorted(candidates, key=lambda item: item.number), times=None)


def _attach_legacy_patches(root: Path, steps: list[TimeStep]) -> list[TimeStep]:
    """Add ``<patch>/<patch>_<n>.vtk`` to each step whose file is a foamToVTK ``<case>_<n>.vtk`` in ``root``."""
    patch_folders = _subfolders(root)
    completed = []
    for step in steps:
        internal = step.parts[INTERNAL]
        match = _FOAM_NAME.match(_stem(internal))
        if match is None or internal.suffix != ".vtk" or internal.parent != root:
            completed.append(step)
            continue

        parts = dict(step.parts)
        for folder in patch_folders:
            patch_file = folder / f"{folder.name}_{match['number']}.vtk"
            if patch_file.is_file():
                parts[folder.name] = patch_file
        completed.append(TimeStep(step.time, step.label, parts))
    return completed


def _foam_xml_candidates(root: Path, files: list[Path]) -> list[_Candidate]:
    groups = _group_by_case([file for file in files if file.suffix == ".vtm"])
    return _largest_group(root, groups)


def _foam_legacy_candidates(root: Path, files: list[Path]) -> list[_Candidate]:
    """Pair ``<case>_<n>.vtk`` with ``<patch>/<patch>_<n>.vtk`` by the index ``n``."""
    internal = _largest_group(root, _group_by_case([file for file in files if file.suffix == ".vtk"]))
    by_number: dict[float, _Candidate] = {item.number: item for item in internal}

    for folder in _subfolders(root):
        patch_files = [file for file in sorted(folder.glob(f"{folder.name}_*.vtk")) if file.is_file()]
        for number, file in _numbered(patch_files, expected_case=folder.name):
            if number not in by_number:
                by_number[number] = _Candidate(number, _stem(file), {})
            by_number[number].parts[folder.name] = file

    if not internal and by_number:
        logger.info("no internal mesh files in %s; the steps hold boundary patches only", root)
    return list(by_number.values())


def _numbered_file_candidates(root: Path, files: list[Path]) -> list[_Candidate]:
    groups: dict[tuple[str, str], list[_Candidate]] = {}
    for file in files:
        if file.suffix == ".vtm":
            continue
        match = _TRAILING_NUMBER.match(_stem(file))
        if match is None:
            logger.debug("skipping %s: its name does not end in a number", file)
            continue
        key = (match["prefix"], file.suffix)
        groups.setdefault(key, []).append(_Candidate(float(match["number"]), _stem(file), {INTERNAL: file}))
    return _largest_group(root, groups)


def _group_by_case(files: list[Path]) -> dict[str, list[_Candidate]]:
    groups: dict[str, list[_Candidate]] = {}
    for number, file in _numbered(files):
        case = _FOAM_NAME.match(_stem(file))["case"]
        groups.setdefault(case, []).append(_Candidate(number, _stem(file), {INTERNAL: file}))
    return groups


def _numbered(files: Iterable[Path], expected_case: str | None = None) -> list[tuple[float, Path]]:
    """Return (number, file) for files named ``<case>_<number>``, logging the others."""
    numbered = []
    for file in files:
        match = _FOAM_NAME.match(_stem(file))
        if match is None or (expected_case is not None and match["case"] != expected_case):
            logger.debug("skipping %s: its name does not end in _<number>", file)
            continue
        numbered.append((float(match["number"]), file))
    return numbered


def _largest_group(root: Path, groups: Mapping[object, list[_Candidate]]) -> list[_Candidate]:
    if not groups:
        return []
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), str(item[0])))
    if len(ranked) > 1:
        logger.warning("several series in %s: %s; using %r", root,
                       ", ".join(f"{key!r} ({len(items)} files)" for key, items in ranked), ranked[0][0])
    return ranked[0][1]


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _number_in_name(path: Path) -> float | None:
    match = _TRAILING_NUMBER.match(_stem(path))
    return float(match["number"]) if match else None


# --- Ordering by time ----------------------------------------------------------


def _order_candidates(candidates: list[_Candidate]) -> list[TimeStep]:
    """Order by the TimeValue in the files when every step has one, else by the name's number."""
    candidates = sorted(candidates, key=lambda item: item.number)
    times = [read_time_value(_first_file(item.parts)) for item in candidates]
    if all(time is not None for time in times):
        return _unique_by_time(candidates, times)

    without = sum(time is None for time in times)
    if without < len(times):
        logger.warning("%d of %d steps have no TimeValue; ordering all steps by the index in their name",
                       without, len(times))
    else:
        logger.info("no TimeValue in the files; using the index in each name as the time")
    return _unique_by_time(candidates, times=None)


def _first_file(parts: Mapping[str, Path]) -> Path:
    return parts[INTERNAL] if INTERNAL in parts else next(iter(parts.values()))


def _unique_by_time(candidates: list[_Candidate], times: list[float | None] | None) -> list[TimeStep]:
    """Build steps sorted by time; the first file of a repeated time wins."""
    timed = [(item.number if times is None else times[index], index, item)
             for index, item in enumerate(candidates)]
    timed.sort(key=lambda entry: (entry[0], entry[1]))

    steps: list[TimeStep] = []
    kept_by_time: dict[float, _Candidate] = {}
    for time, _, item in timed:
        if time in kept_by_time:
            logger.warning("duplicate time %g: keeping %s, skipping %s", time,
                           _first_file(kept_by_time[time].parts), _first_file(item.parts))
            continue
        kept_by_time[time] = item
        steps.append(TimeStep(time, item.label, dict(item.parts)))
    return steps


def read_time_value(path: Path) -> float | None:
    """Read the ``TimeValue`` field data from the head of a VTK file.

    Parameters
    ----------
    path
        A legacy ``.vtk`` file (ASCII or big-endian BINARY) or an XML file
        whose TimeValue is stored inline as ASCII or base64.

    Returns
    -------
    float or None
        The time, or None when the head of the file contains no readable TimeValue.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(-1 if path.suffix == ".vtm" else HEAD_BYTES)
    except OSError as error:
        logger.debug("cannot read %s: %s", path, error)
        return None

    value = None
    if head.startswith(b"# vtk DataFile"):
        value = _legacy_time_value(head)
    elif head.lstrip().startswith(b"<"):
        value = _xml_time_value(head)

    if value is not None and not math.isfinite(value):
        logger.warning("ignoring the TimeValue %r in %s: not a finite number", value, path)
        return None
    return value


def _legacy_time_value(head: bytes) -> float | None:
    match = _LEGACY_TIME.search(head)
    if match is None:
        return None

    binary = b"\nBINARY" in head[: match.start()]
    data = head[match.end():]
    if binary:
        size, code = (8, ">d") if match[1] == b"double" else (4, ">f")
        if len(data) < size:
            return None
        value = struct.unpack(code, data[:size])[0]
        return _shortest_float32(value) if size == 4 else value

    tokens = data.split(maxsplit=1)
    try:
        return float(tokens[0])
    except (IndexError, ValueError):
        return None


def _xml_time_value(head: bytes) -> float | None:
    match = _XML_TIME.search(head)
    if match is None:
        return None
    tag = match.group(0).decode("ascii", "replace")
    attributes = dict(_XML_ATTRIBUTE.findall(tag))
    end = head.find(b"</DataArray>", match.end())
    if end < 0:
        return None
    text = head[match.end():end].decode("ascii", "replace").strip()

    format_ = attributes.get("format", "ascii")
    try:
        if format_ == "ascii":
            return float(text.split()[0])
        if format_ == "binary":
            value = _decode_base64_value(text, attributes.get("type", "Float64"), _xml_header_info(head))
            return _shortest_float32(value) if attributes.get("type") == "Float32" else value
    except (ValueError, IndexError, struct.error, zlib.error):
        logger.debug("cannot decode the TimeValue %r", text[:80])
    # Appended data sits after the XML header; reading it is not worth the cost.
    return None


def _shortest_float32(value: float) -> float:
    """Return the shortest decimal that rounds to the same float32, so 0.05 stays 0.05."""
    packed = struct.pack(">f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return value


_XML_TYPES = {"Float32": "f", "Float64": "d", "Int32": "i", "Int64": "q", "UInt32": "I", "UInt64": "Q"}


def _xml_header_info(head: bytes) -> tuple[str, str, bool]:
    """Return (byte order, header integer code, compressed) from the VTKFile element."""
    start = head.find(b"<VTKFile")
    tag = head[start: head.find(b">", start)].decode("ascii", "replace")
    attributes = dict(_XML_ATTRIBUTE.findall(tag))
    order = "<" if attributes.get("byte_order", "LittleEndian") == "LittleEndian" else ">"
    header = "Q" if attributes.get("header_type") == "UInt64" else "I"
    return order, header, "compressor" in attributes


def _decode_base64_value(text: str, type_name: str, header_info: tuple[str, str, bool]) -> float:
    order, header_code, compressed = header_info
    value_code = order + _XML_TYPES[type_name]
    header_size = struct.calcsize(header_code)

    if not compressed:
        raw = base64.b64decode(text)
        return struct.unpack_from(value_code, raw, header_size)[0]

    # Compressed inline data is a base64 block header (blocks, block size, last
    # size, compressed sizes) followed by the separately encoded blocks.
    header_chars = 4 * math.ceil(4 * header_size / 3)
    header = base64.b64decode(text[:header_chars])
    blocks = struct.unpack_from(order + header_code, header)[0]
    if blocks != 1:
        raise ValueError(f"{blocks} compressed blocks for one value")
    data = zlib.decompress(base64.b64decode(text[header_chars:]))
    return struct.unpack_from(value_code, data)[0]


# --- Multiblock (.vtm) steps ------------------------------------------------------


def _expand_vtm_step(step: TimeStep) -> TimeStep:
    """Replace a ``.vtm`` step file by its parts: ``internal`` and one entry per patch."""
    vtm = step.first_file()
    parts = read_vtm_parts(vtm)
    if not parts:
        raise SeriesError(f"multiblock step {vtm} lists no dataset files; check that foamToVTK finished")
    return TimeStep(step.time, step.label, parts)


def read_vtm_parts(path: Path) -> dict[str, Path]:
    """Parse a ``.vtm`` file into ``{part name: file}``.

    The dataset named ``internal`` becomes part ``"internal"`` and each other
    dataset is named after its ``name`` attribute (a patch name for foamToVTK),
    prefixed with its enclosing block's name when that name is already taken.

    Raises
    ------
    SeriesError
        If the file is not valid XML.
    """
    try:
        tree = ElementTree.parse(path)
    except (OSError, ElementTree.ParseError) as error:
        raise SeriesError(f"cannot parse multiblock step {path}: {error}") from None

    parts: dict[str, Path] = {}
    _collect_vtm_datasets(tree.getroot(), "", path.parent, parts)
    return parts


def _collect_vtm_datasets(element: ElementTree.Element, block: str, folder: Path,
                          parts: dict[str, Path]) -> None:
    for child in element:
        if child.tag == "DataSet":
            _add_vtm_dataset(child, block, folder, parts)
        else:
            _collect_vtm_datasets(child, child.attrib.get("name", block), folder, parts)


def _add_vtm_dataset(element: ElementTree.Element, block: str, folder: Path, parts: dict[str, Path]) -> None:
    file_name = element.attrib.get("file")
    if not file_name:
        return
    file = _contained_file(folder, file_name)
    if file is None:
        logger.warning("multiblock part file %r is outside %s; skipping it", file_name, folder)
        return
    name = element.attrib.get("name") or _stem(file)
    if name in parts:
        name = f"{block}/{name}" if block else f"{name}_{len(parts)}"
    if not file.is_file():
        logger.warning("multiblock part %r points to missing file %s; skipping it", name, file)
        return
    parts[name] = file
