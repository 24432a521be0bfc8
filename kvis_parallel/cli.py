"""Command-line front end: ``python -m kvis_parallel render|inspect ...`` and ``kvis``.

The same parser checks the server's query parameters: :func:`parse_args` and
:func:`scene_from_args` raise :class:`~kvis_parallel.errors.UserError` instead
of exiting, so a bad option becomes an HTTP 400 there and exit status 2 here.

Under MPI every rank runs :func:`main`. Only rank 0 writes to the user; the
other ranks log errors only, or everything with ``-v``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .errors import EXIT_BUG, EXIT_OK, EXIT_USER_ERROR, UserError
from .progress import PROGRESS_MODES, Progress, default_progress_mode, make_progress
from .scene import ASSOCIATIONS, BASE_COLORMAPS, COMPONENTS, PRESETS, VIEWS, Scene

logger = logging.getLogger(__name__)

DEFAULTS = Scene()
SERIES_SUFFIXES = (".series", ".pvd")

# The shell's status for a process ended by SIGINT; also used after SIGTERM.
EXIT_INTERRUPTED = 130

# The shell's status for a process ended by SIGPIPE, used when the reader of
# stdout goes away (as in "kvis inspect VTK | head -1").
EXIT_BROKEN_PIPE = 141

# Movie suffixes that players take for MP4; another suffix is rejected, none is accepted with a warning.
MOVIE_SUFFIXES = (".mp4", ".m4v", ".mov")

# Environment variables in which launchers give each process its rank, read
# before MPI starts so that option errors are written by rank 0 only.
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


class UsageError(UserError):
    """An invalid command line or option value."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that raises :class:`UsageError` instead of exiting.

    It also accepts ``--range -1,1`` and ``--slice -0.5,0,0,0,0,1``: argparse
    alone takes a value that starts with "-" and contains a comma for an option.
    """

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        arguments = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(_join_negative_values(arguments), namespace)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


_NUMBER_LIST_OPTIONS = ("--range", "--slice")


def _join_negative_values(arguments: list[str]) -> list[str]:
    """Rewrite "--range -1,1" as "--range=-1,1" so that argparse reads the value."""
    joined: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        following = arguments[index + 1] if index + 1 < len(arguments) else ""
        if argument in _NUMBER_LIST_OPTIONS and following.startswith("-") and "," in following:
            joined.append(f"{argument}={following}")
            index += 2
            continue
        joined.append(str(argument))
        index += 1
    return joined


# --- Option values -----------------------------------------------------------------


def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    pieces = text.split(",")
    try:
        values = tuple(float(piece) for piece in pieces)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give {what}")
    return values


def parse_range(text: str) -> tuple[float, float]:
    """Parse ``MIN,MAX`` for ``--range``."""
    low, high = _numbers(text, 2, "two numbers MIN,MAX, e.g. 0,1.5")
    if not low < high:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: MIN must be below MAX")
    return low, high


def parse_slice(text: str) -> tuple[float, float, float, float, float, float]:
    """Parse ``OX,OY,OZ,NX,NY,NZ`` (plane origin and normal) for ``--slice``."""
    values = _numbers(text, 6, "six numbers OX,OY,OZ,NX,NY,NZ (origin, then normal), e.g. 0,0,0.005,0,0,1")
    if not any(values[3:]):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: the normal NX,NY,NZ must not be zero")
    return values  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` in pixels for ``--size``."""
    width, _, height = text.lower().partition("x")
    try:
        size = (int(width), int(height))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give WIDTHxHEIGHT in pixels, "
                                         "e.g. 1280x720") from None
    return size


def parse_cache_mb(text: str) -> float:
    """Parse the MiB of ``--cache-mb``: a finite number, zero or above."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give MiB as a number, 0 or above "
                                         "(0 reads every step twice)")
    return value


def parse_parts(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of part names for ``--parts``."""
    parts = tuple(piece.strip() for piece in text.split(",") if piece.strip())
    if not parts:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give internal and/or patch names, "
                                         "e.g. internal,movingWall")
    return parts


# --- Parser ------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    """Build the parser of ``kvis render`` and ``kvis inspect``."""
    parser = ArgumentParser(
        prog="kvis",
        description="Render foamToVTK time series into H.264 movies, in parallel under MPI.",
        epilog="Exit status: 0 on success, 2 for bad input or options, 1 for a bug in kvis.",
    )
    parser.add_argument("--version", action="version", version=f"kvis {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = commands.add_parser(
        "render", help="render a time series into a movie",
        description="Render one frame per time step, in time order, with one colour range for the whole movie.",
    )
    _add_input_arguments(render)
    render.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.mp4",
                        help="the movie file to write (H.264 in MP4), ending in .mp4, .m4v or .mov")
    _add_scene_arguments(render)
    _add_output_arguments(render)
    _add_job_arguments(render)

    inspect = commands.add_parser(
        "inspect", help="list the time steps, parts and fields of a time series",
        description="Print the layout, times, parts and fields (with their range over all steps).",
    )
    _add_input_arguments(inspect)
    inspect.add_argument("--parts", type=parse_parts, default=None, metavar="internal,PATCH,...",
                         help="parts whose fields are listed (default: internal, or every part when "
                              "there is no internal mesh)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    inspect.add_argument("--workdir", type=Path, metavar="DIR",
                         help="folder for the files extracted from an archive INPUT "
                              "(default: the folder of the archive)")
    inspect.add_argument("-v", "--verbose", action="store_true", help="log debug messages on stderr")
    inspect.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    return parser


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="a folder with foamToVTK output (a VTK/ folder or one above it), "
                             "a .tar/.tar.gz/.tgz archive of one, or a .series/.pvd file")


def _add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what is drawn")
    group.add_argument("--field", metavar="NAME",
                       help="field to colour by (default: the first field that is not an id array)")
    group.add_argument("--association", choices=ASSOCIATIONS, default=DEFAULTS.association,
                       help="use the point or cell data of the field (default: %(default)s, point data first)")
    group.add_argument("--component", choices=COMPONENTS, default=DEFAULTS.component,
                       help="vector component to draw, or its magnitude (default: %(default)s)")
    group.add_argument("--parts", type=parse_parts, default=DEFAULTS.parts, metavar="internal,PATCH,...",
                       help="comma-separated parts: internal (the mesh) and/or patch names (default: internal)")
    colormaps = ", ".join(BASE_COLORMAPS)
    group.add_argument("--colormap", default=DEFAULTS.colormap, metavar="NAME",
                       help=f"colormap: {colormaps}; add _r to reverse (default: %(default)s)")
    group.add_argument("--range", type=parse_range, metavar="MIN,MAX",
                       help="colour range in the field's units (default: minimum and maximum over all "
                            "steps); skips reading every step before the first frame")
    group.add_argument("--log", action="store_true",
                       help="logarithmic colour scale; the range must be above zero, so a field with "
                            "values of zero or below needs --range MIN,MAX with MIN > 0")
    group.add_argument("--view", choices=VIEWS, default=DEFAULTS.view,
                       help="direction the camera looks (default: %(default)s: down the thinnest axis of "
                            "what is drawn when it is flat, such as a 2-D case, a patch or a slice; iso otherwise)")
    group.add_argument("--zoom", type=float, default=DEFAULTS.zoom, metavar="F",
                       help="magnification; 2 draws the data twice as large (default: %(default)s)")
    group.add_argument("--slice", type=parse_slice, metavar="OX,OY,OZ,NX,NY,NZ",
                       help="draw a plane cut through the volume instead of its outer surface: "
                            "origin and normal, in the mesh's length units")
    group.add_argument("--edges", action="store_true", help="draw cell edges")
    group.add_argument("--title", metavar="TEXT",
                       help="title at the top of every frame, shortened with '...' to the width of the data")
    group.add_argument("--time-format", default=DEFAULTS.time_format, metavar="FMT",
                       help="time label, a Python format string with the fields {time} (the step's "
                            "time in seconds), {index} (the frame's position in the movie, from 0) and "
                            "{label} (the step's name, e.g. cavity_20); widths and precisions up to 64 "
                            "(default: '%(default)s')")
    group.add_argument("--fxaa", action="store_true", help="smooth edges with FXAA (cheap anti-aliasing)")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("movie and images")
    group.add_argument("--size", type=parse_size, default=DEFAULTS.size, metavar="WxH",
                       help="frame size in pixels, 16 to 7680; odd numbers are rounded up to even; frames "
                            "too small for the title, time label or scalar bar (such as 16x16) leave them out "
                            "(default: 1280x720)")
    group.add_argument("--fps", type=int, default=DEFAULTS.fps, metavar="N",
                       help="frames per second of the movie; one frame per time step (default: %(default)s)")
    group.add_argument("--crf", type=int, default=DEFAULTS.crf, metavar="N",
                       help="H.264 constant rate factor, 0 (lossless) to 51; lower is better and larger "
                            "(default: %(default)s)")
    group.add_argument("--preset", choices=PRESETS, default=DEFAULTS.preset, metavar="NAME",
                       help="libx264 speed preset, ultrafast to veryslow (default: %(default)s)")
    group.add_argument("--frames", type=Path, metavar="DIR",
                       help="also write every frame as DIR/frame_00000.png, ... (created if missing; "
                            "frame_*.png files of an earlier run in it are removed)")
    group.add_argument("--poster", type=Path, metavar="FILE.jpg",
                       help="also write the middle frame as an image: JPEG for .jpg or .jpeg, PNG for .png")
    group.add_argument("--list-fields", action="store_true",
                       help="print each field with its association, components and range over all steps, "
                            "then exit without rendering")


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("job")
    group.add_argument("--progress", choices=PROGRESS_MODES, default=None,
                       help="bar: a progress bar on stderr; json: one JSON object per line on stdout; "
                            "none (default: bar on a terminal, none otherwise)")
    group.add_argument("--summary", type=Path, metavar="FILE",
                       help="write the run summary (frames, seconds per stage, memory per rank) as JSON")
    group.add_argument("--workdir", type=Path, metavar="DIR",
                       help="folder for the files extracted from an archive INPUT; every rank must see it "
                            "(default: the folder of the output file)")
    group.add_argument("--encoder-rank", choices=("auto", "dedicated", "shared"), default="auto",
                       help="whether rank 0 only encodes (dedicated) or also renders (shared); "
                            "auto: dedicated from 5 ranks up; a single process is always shared "
                            "(default: %(default)s)")
    group.add_argument("--cache-mb", type=parse_cache_mb, default=None, metavar="MB",
                       help="memory per rank, in MiB, for surfaces kept between the range pass and "
                            "rendering; 0 reads every step twice (default: a quarter of the node's "
                            "available memory, shared by its ranks)")
    group.add_argument("-v", "--verbose", action="store_true", help="log debug messages on stderr")
    group.add_argument("-q", "--quiet", action="store_true", help="log only errors; no summary")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line.

    Raises
    ------
    UsageError
        Naming the invalid option and value.
    """
    return build_parser().parse_args(argv)


def scene_from_args(args: argparse.Namespace) -> Scene:
    """Build and validate the :class:`Scene` of a parsed ``render`` command line.

    An odd width or height is rounded up to even, as yuv420p requires.

    Raises
    ------
    UserError
        Naming the invalid setting and what is accepted.
    """
    scene = Scene(
        field=args.field, association=args.association, component=args.component,
        parts=tuple(args.parts), colormap=args.colormap, range=args.range, log=args.log,
        view=args.view, zoom=args.zoom, slice=args.slice, edges=args.edges, size=tuple(args.size),
        fps=args.fps, crf=args.crf, preset=args.preset, title=args.title,
        time_format=args.time_format, fxaa=args.fxaa,
    )
    scene.validate()

    even = scene.even_size()
    if even != scene.size:
        logger.info("frame size %dx%d rounded up to %dx%d: H.264 in yuv420p needs an even width and height",
                    *scene.size, *even)
        scene = scene.replace(size=even)
    return scene


# --- Logging and output ----------------------------------------------------------------


def launcher_rank() -> int:
    """Return this process's rank as the MPI launcher set it, 0 when run alone."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def configure_logging(verbose: bool, quiet: bool, rank: int) -> None:
    """Send log records to stderr: info and up on rank 0, errors only on other ranks.

    ``verbose`` shows debug records on every rank, prefixed with the rank.
    """
    if verbose:
        level = logging.DEBUG
    elif quiet or rank != 0:
        level = logging.ERROR
    else:
        level = logging.INFO

    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(_VerboseFormatter(rank))
    else:
        handler.setFormatter(_LevelPrefixFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class _LevelPrefixFormatter(logging.Formatter):
    """Format records as "kvis: message", "kvis: warning: message" and so on.

    Every line of a message that spans several (VTK's messages do) gets the
    prefix; a traceback follows unprefixed.
    """

    def format(self, record: logging.LogRecord) -> str:
        prefix = self.prefix(record)
        text = "\n".join(f"{prefix}{line}" for line in record.getMessage().splitlines() or [""])
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text

    def prefix(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"kvis: {record.levelname.lower()}: "
        return "kvis: "


class _VerboseFormatter(_LevelPrefixFormatter):
    """Format records as "kvis[rank] LEVEL logger: message" for ``-v``."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def prefix(self, record: logging.LogRecord) -> str:
        return f"kvis[{self.rank}] {record.levelname} {record.name}: "


def route_vtk_output() -> None:
    """Send VTK's error and warning output to the ``vtk`` logger instead of straight to stderr.

    Call it after :func:`~kvis_parallel.offscreen.configure_offscreen`,
    because it imports VTK. Reading a step still captures VTK's output
    itself, to put it in the error message.
    """
    from vtkmodules.util.misc import calldata_type
    from vtkmodules.vtkCommonCore import VTK_STRING, vtkCommand, vtkLogger, vtkOutputWindow

    vtk_logger = logging.getLogger("vtk")
    window = vtkOutputWindow.GetInstance()

    def forward(level: int) -> Callable[[object, str, object], None]:
        @calldata_type(VTK_STRING)
        def log(_caller: object, _event: str, text: object = None) -> None:
            message = str(text or "").strip()
            if message:
                vtk_logger.log(level, "%s", message)
        return log

    window.AddObserver(vtkCommand.ErrorEvent, forward(logging.ERROR))
    window.AddObserver(vtkCommand.WarningEvent, forward(logging.WARNING))
    window.AddObserver(vtkCommand.MessageEvent, forward(logging.DEBUG))
    window.SetDisplayModeToNever()
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)


def quiet_broken_pipe() -> int:
    """Point stdout at /dev/null after its reader went away, and return :data:`EXIT_BROKEN_PIPE`.

    Without the redirection Python fails again when it flushes stdout at exit.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def print_error(message: str) -> None:
    """Write the one-line error that ends a failed run, as the last line on stderr."""
    one_line = " ".join(message.split())
    sys.stderr.write(f"kvis: error: {one_line}\n")
    sys.stderr.flush()


# --- Entry point -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` and return the exit status (0, 1 or 2)."""
    rank = launcher_rank()
    try:
        args = parse_args(argv)
    except UsageError as error:
        if rank == 0:
            print_error(str(error))
        return EXIT_USER_ERROR

    configure_logging(args.verbose, args.quiet, rank)
    try:
        if args.command == "inspect":
            return _run_on_rank_zero_only(rank, lambda: inspect_command(args))
        return render_command(args)
    except BrokenPipeError:
        return quiet_broken_pipe()


# --- Input -------------------------------------------------------------------------------


@contextmanager
def prepared_input(path: Path, workdir: Path) -> Iterator[Path]:
    """Yield a path for :func:`~kvis_parallel.series.discover_series`, extracting an archive first.

    An archive is extracted into a new temporary folder inside ``workdir``,
    removed when the ``with`` block ends.

    Raises
    ------
    UserError
        If ``path`` does not exist, or ``workdir`` is not a folder or not writable.
    ArchiveError
        If the archive is invalid.
    """
    from . import archive

    if not path.exists():
        raise UserError(f"input {path} not found; give a VTK folder, a .tar.gz of one, or a .series/.pvd file")
    if path.is_dir() or path.suffix.lower() in SERIES_SUFFIXES or not archive.is_archive(path):
        yield path
        return

    if not workdir.is_dir():
        raise UserError(f"invalid --workdir {workdir}: the folder does not exist; create it or choose another")
    try:
        folder = Path(tempfile.mkdtemp(prefix=".kvis-input-", dir=workdir))
    except OSError as error:
        raise UserError(f"cannot write to folder {workdir}: {error.strerror or error}; "
                        "choose another --workdir") from None
    try:
        logger.debug("extracting %s into %s", path, folder)
        yield archive.extract_archive(path, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def discover(path: Path) -> Any:
    """Find the time series under ``path``; raise SeriesError when there is none."""
    from .errors import SeriesError
    from .series import discover_series

    series = discover_series(path)
    if not series.steps:
        raise SeriesError(f"no time steps found under {path}; give the VTK folder that foamToVTK wrote")
    logger.debug("%d time steps (%s layout) from t = %g to %g", len(series.steps), series.layout,
                series.steps[0].time, series.steps[-1].time)
    return series


# --- inspect and --list-fields ---------------------------------------------------------------


def default_parts(series: Any) -> tuple[str, ...]:
    """Return ("internal",) when the series has an internal mesh, else all its parts."""
    names = series.part_names
    return ("internal",) if "internal" in names else tuple(names)


def series_fields(series: Any, parts: Sequence[str]) -> list[dict[str, Any]]:
    """Return every field of ``parts`` with its range over all steps, as JSON-ready dicts.

    A field missing from some steps is listed with the range of the steps that have it.
    """
    from . import reader

    fields: dict[tuple[str, str], dict[str, Any]] = {}
    for step in series.steps:
        for info in reader.list_fields(reader.read_parts(step, parts)):
            entry = fields.setdefault((info.name, info.association), {
                "name": info.name, "association": info.association,
                "components": info.components, "range": [math.inf, -math.inf],
            })
            low, high = info.range
            if math.isfinite(low) and math.isfinite(high):
                entry["range"] = [min(entry["range"][0], low), max(entry["range"][1], high)]

    for entry in fields.values():
        if not math.isfinite(entry["range"][0]):
            entry["range"] = [None, None]
    return list(fields.values())


def inspect_series(path: Path, parts: Sequence[str] | None) -> dict[str, Any]:
    """Return the ``inspect --json`` object for the series under ``path``."""
    series = discover(path)
    parts = tuple(parts) if parts else default_parts(series)
    return {
        "layout": series.layout,
        "steps": len(series.steps),
        "first_time": series.steps[0].time,
        "last_time": series.steps[-1].time,
        "parts": list(series.part_names),
        "fields": series_fields(series, parts),
    }


def format_fields(fields: Sequence[dict[str, Any]]) -> str:
    """Return one line per field: name, association, components and range."""
    lines = []
    for entry in fields:
        low, high = entry["range"]
        span = "no finite values" if low is None else f"{low:.6g} to {high:.6g}"
        lines.append(f"  {entry['name']:<16} {entry['association']:<5} "
                     f"{entry['components']} component{'s' if entry['components'] != 1 else ''}, {span}")
    return "\n".join(lines) if lines else "  (no fields)"


def format_report(report: dict[str, Any]) -> str:
    """Return the text form of :func:`inspect_series`'s report."""
    return "\n".join([
        f"layout: {report['layout']}",
        f"steps: {report['steps']}, from t = {report['first_time']:g} to t = {report['last_time']:g}",
        f"parts: {', '.join(report['parts'])}",
        "fields (range over all steps):",
        format_fields(report["fields"]),
    ])


def inspect_command(args: argparse.Namespace) -> int:
    """Print the layout, steps, parts and fields of ``args.input``."""
    with prepared_input(args.input, workdir=args.workdir or args.input.parent) as series_path:
        report = inspect_series(series_path, args.parts)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        print(format_report(report))
    return EXIT_OK


def _run_on_rank_zero_only(rank: int, command: Callable[[], int]) -> int:
    if rank != 0:
        return EXIT_OK
    try:
        return command()
    except BrokenPipeError:
        return quiet_broken_pipe()
    except UserError as error:
        print_error(str(error))
        return EXIT_USER_ERROR
    except Exception as error:  # noqa: BLE001  the last line must name the failure
        logger.exception("bug in kvis")
        print_error(f"bug in kvis: {type(error).__name__}: {error}")
        return EXIT_BUG


# --- render ---------------------------------------------------------------------------------


def partial_movie_path(output: Path) -> Path:
    """Return the hidden file the movie is written to before it is renamed to ``output``."""
    return output.with_name(f".{output.name}.{os.getpid()}.part.mp4")


def check_writable_folder(folder: Path, options: str) -> None:
    """Create and remove a probe file in ``folder``, so that an unwritable folder fails before any work.

    Raises
    ------
    UserError
        Naming the folder, the reason and ``options``, the options that choose another folder.
    """
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".kvis-probe-", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(f"cannot write to folder {folder}: {reason}; choose another {options}") from None


def check_output_file(path: Path, option: str, example: str) -> None:
    """Check that ``path`` can be written as a file: its folder exists and is writable, and it is no folder.

    Raises
    ------
    UserError
        Naming ``option``, the path and the fix.
    """
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"invalid {option} {path}: the folder {folder} does not exist; create it first")
    if path.is_dir():
        raise UserError(f"invalid {option} {path}: it is a folder; give a file name such as {example}")
    check_writable_folder(folder, option)


def check_movie_suffix(path: Path) -> None:
    """Reject a movie name with a suffix other than :data:`MOVIE_SUFFIXES`; warn when it has none."""
    suffix = path.suffix.lower()
    if not suffix:
        logger.warning("-o %s has no suffix; the movie is MP4, so players may need the name %s.mp4",
                       path, path.name)
    elif suffix not in MOVIE_SUFFIXES:
        raise UserError(f"invalid -o {path}: kvis writes H.264 in MP4, so the name must end in "
                        f"{', '.join(MOVIE_SUFFIXES)}, e.g. {path.with_suffix('.mp4')}")


def prepare_frames_folder(folder: Path) -> None:
    """Create the ``--frames`` folder, check that it is writable, and remove frames of an earlier run.

    Raises
    ------
    UserError
        If ``folder`` is an existing file, cannot be created or is not writable.
    """
    from . import images

    if folder.exists() and not folder.is_dir():
        raise UserError(f"invalid --frames {folder}: it is a file; give a folder for the frame_*.png files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(f"invalid --frames {folder}: cannot create the folder ({reason}); "
                        "choose another --frames") from None
    check_writable_folder(folder, "--frames")
    images.remove_old_frames(folder)


def _check_output(args: argparse.Namespace) -> None:
    from . import archive, images

    check_movie_suffix(args.output)
    check_output_file(args.output, "-o", "movie.mp4")
    if args.poster is not None:
        images.poster_format(args.poster)
        check_output_file(args.poster, "--poster", "poster.jpg")
    if args.summary is not None:
        check_output_file(args.summary, "--summary", "summary.json")

    if args.input.is_file() and args.input.suffix.lower() not in SERIES_SUFFIXES and archive.is_archive(args.input):
        workdir = args.workdir if args.workdir is not None else args.output.parent
        if not workdir.is_dir():
            raise UserError(f"invalid --workdir {workdir}: the folder does not exist; create it or choose another")
        check_writable_folder(workdir, "--workdir" if args.workdir is not None else "-o or --workdir")

    # Created last, so that no folder is left behind when another output is invalid.
    if args.frames is not None:
        prepare_frames_folder(args.frames)


def _prepare_job(args: argparse.Namespace, scene: Scene, stack: ExitStack, progress: Progress) -> Any:
    """Find the steps and settle the field on rank 0; return the RenderJob or None after --list-fields."""
    from .parallel import RenderJob, resolve_field

    _check_output(args)
    progress.stage("discover", 0)
    workdir = args.workdir if args.workdir is not None else args.output.parent
    series = discover(stack.enter_context(prepared_input(args.input, workdir)))

    if args.list_fields:
        print(format_fields(series_fields(series, scene.parts)))
        return None

    scene = resolve_field(series, scene)
    partial = partial_movie_path(args.output)
    stack.callback(partial.unlink, missing_ok=True)
    return RenderJob(series=series, scene=scene, output=partial, frames_dir=args.frames,
                     poster=args.poster, encoder=args.encoder_rank, cache_mb=args.cache_mb)


def _finish_job(args: argparse.Namespace, job: Any, summary: Any, progress: Progress, started: float) -> None:
    try:
        os.replace(job.output, args.output)
    except OSError as error:
        raise UserError(f"cannot write the movie {args.output}: {error.strerror or error}; "
                        "choose another -o") from None
    summary.output = str(args.output)
    # Count the set-up on rank 0 too: finding the steps, extracting an archive, choosing the field.
    summary.wall_s = time.monotonic() - started
    if args.summary is not None:
        try:
            args.summary.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise UserError(f"cannot write --summary {args.summary}: {error.strerror or error}; "
                            f"the movie is in {args.output}; choose another --summary") from None
    progress.finish(summary)
    # With --progress json a program reads the summary from the last JSON line instead.
    if not args.quiet and args.progress != "json":
        sys.stderr.write(f"kvis: wrote {args.output}\n{summary.format_text()}\n")
        sys.stderr.flush()


def render_command(args: argparse.Namespace) -> int:
    """Run ``render`` on this rank; every rank of the MPI job calls it."""
    try:
        scene = scene_from_args(args)
    except UserError as error:
        if launcher_rank() == 0:
            print_error(str(error))
        return EXIT_USER_ERROR

    from mpi4py import MPI

    from . import offscreen, parallel

    # The window class and llvmpipe threads must be set before VTK is imported.
    local_rank, local_ranks = parallel.local_rank_count(MPI.COMM_WORLD)
    offscreen.configure_offscreen(local_ranks, local_rank=local_rank)
    route_vtk_output()
    context = parallel.make_context(MPI.COMM_WORLD)
    if context.rank == 0 and args.encoder_rank == "dedicated" and context.size == 1:
        logger.warning("--encoder-rank dedicated needs at least 2 processes; with 1 the only rank "
                       "renders and encodes (shared)")
    if context.rank == 0:
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        mode = args.progress or default_progress_mode(sys.stderr)
        progress = make_progress("none" if args.quiet and args.progress is None else mode)
    else:
        # mpiexec passes SIGTERM to every rank: rank 0 alone cleans up and then
        # ends the others with MPI_Abort, so they must not die first.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        progress = Progress()

    status, must_abort = _render_and_clean_up(args, scene, context, progress)
    if must_abort and context.size > 1:
        parallel.abort_job(context.world, status)
    return status


def _render_and_clean_up(args: argparse.Namespace, scene: Scene, context: Any,
                         progress: Progress) -> tuple[int, bool]:
    """Run the job; return (exit status, whether the other ranks must be aborted)."""
    from . import parallel

    running = False
    started = time.monotonic()
    with ExitStack() as stack:
        try:
            job = parallel.share_from_root(context, lambda: _prepare_job(args, scene, stack, progress))
            if job is None:
                return EXIT_OK, False
            running = True
            summary = parallel.run_render(job, context, progress)
            if context.rank == 0:
                _finish_job(args, job, summary, progress, started)
            return EXIT_OK, False
        except parallel.SetupFailed as failed:
            return failed.status, False
        except KeyboardInterrupt as error:
            if context.rank == 0:
                # Ctrl-C raises a KeyboardInterrupt without a message.
                message = str(error) or "interrupted by SIGINT (Ctrl-C)"
                progress.fail("user", message)
                print_error(message)
            return EXIT_INTERRUPTED, running
        except BrokenPipeError:
            # The reader of --progress json or --list-fields went away: end quietly, like other tools.
            return quiet_broken_pipe(), running
        except Exception as error:  # noqa: BLE001  every failure must end the job with a reason
            failure = parallel.failure_from(context, None, error)
            if context.rank != 0:
                parallel.report_failure_to_root(context, failure.kind, str(failure), failure.details)
            _report_failure(failure, error, progress)
            return failure.exit_status, running


def _report_failure(failure: Any, error: BaseException, progress: Progress) -> None:
    if failure.details:
        logger.error("%s", failure.details.rstrip())
    message = str(failure) if failure.kind == "user" else f"bug in kvis: {failure}"
    progress.fail(failure.kind, message)
    print_error(message)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"interrupted by {signal.Signals(signum).name}")
