"""Build and run the renderer's command line: ``mpiexec -n N python -m kvis_parallel ...``.

The command is always an argument list, never a shell string. The launcher
prefix comes from a template that the operator sets, such as ``srun -n {ranks}``
on a batch system. Request values only become single ``--name=value``
arguments, and only after the renderer's own parser has accepted them. Each child runs
in a session of its own, so cancelling or timing out a job kills the whole
process group: mpiexec, its proxies and every rank.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shlex
import signal
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

logger = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL when a job is stopped.
KILL_GRACE_S = 5.0
STDERR_TAIL_LINES = 40
MAX_LINE_BYTES = 1 << 20
ERROR_PREFIX = "kvis: error: "
# Host names contain no colon or space, so the prefix ends at the first ": ".
_RANK_ZERO_PREFIX = re.compile(r"^rank 0 of \d+ on [^\s:]+: ")

# Render options a request may set, by query or form name, with the CLI flag.
# Server-owned flags (-o, --progress, --summary, --poster, --frames) are absent.
VALUE_OPTIONS = {
    "field": "--field",
    "association": "--association",
    "component": "--component",
    "parts": "--parts",
    "colormap": "--colormap",
    "range": "--range",
    "view": "--view",
    "zoom": "--zoom",
    "slice": "--slice",
    "size": "--size",
    "fps": "--fps",
    "crf": "--crf",
    "preset": "--preset",
    "title": "--title",
    "time_format": "--time-format",
    "time-format": "--time-format",
}
FLAG_OPTIONS = {"log": "--log", "edges": "--edges", "fxaa": "--fxaa"}
# CLI flag to query name, for rewriting the renderer's advice to HTTP clients.
_QUERY_NAMES = {flag: name for name, flag in {**VALUE_OPTIONS, **FLAG_OPTIONS}.items() if name != "time-format"}
_CLI_OPTION = re.compile(r"(--[a-z][a-z-]*)(?: ([\w.+-]+(?:,[\w.+-]+)*))?")
# A value in the renderer's advice: a placeholder (MIN,MAX), a number or a component name.
_OPTION_VALUE = re.compile(r"[A-Z0-9+-]\S*|mag|[xyz]")
_CLI_ADVICE = (
    ("give one of them as INPUT", "put only one of them in the archive"),
    ("see 'kvis render --help'", "see the render options in docs/server.md"),
    ("kvis render --help", "the render options in docs/server.md"),
    ("INPUT", "one folder in the archive"),
)
_LETTER = re.compile(r"[A-Za-z]")
_ERROR_WORDS = re.compile(r"error|not found|unrecognized|unknown|invalid|cannot|can't|failed|denied|no such",
                          re.IGNORECASE)
_VIEW_AXES = ("x", "y", "z")
_ARGPARSE_PREFIX = re.compile(r"^argument (--[a-z-]+): ")
_TRUE = ("", "1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def render_arguments(options: Mapping[str, str]) -> list[str]:
    """Turn request options into renderer arguments of the form ``--name=value``.

    The ``=`` form keeps a value that starts with ``-`` from being read as a
    flag. Flags (``log``, ``edges``, ``fxaa``) take 1/true/yes/on or 0/false/no/off.

    Raises
    ------
    UserError
        For an unknown option name or an invalid flag value.
    """
    arguments: list[str] = []
    for name, value in options.items():
        if "\x00" in value:
            raise UserError(f"invalid option {name}: the value contains a NUL character")

        if name == "view" and value.strip() in _VIEW_AXES:
            # Tornado strips the space that an unencoded "+z" becomes, leaving "z".
            axis = value.strip()
            raise UserError(f"invalid option view={value!r}: give +{axis} or -{axis}; a '+' in a URL query "
                            f"string means a space, so URL-encode + as %2B (view=%2B{axis}) or send it as a "
                            "form field")
        if name in VALUE_OPTIONS:
            arguments.append(f"{VALUE_OPTIONS[name]}={value}")
        elif name in FLAG_OPTIONS:
            if value.lower() in _TRUE:
                arguments.append(FLAG_OPTIONS[name])
            elif value.lower() not in _FALSE:
                raise UserError(f"invalid option {name}={value!r}: give 1, true, yes or on, or 0, false, no or off")
        else:
            known = ", ".join(sorted({*VALUE_OPTIONS, *FLAG_OPTIONS} - {"time-format"}))
            raise UserError(f"unknown option {name!r}; render options are: {known}")
    return arguments


def validate_render_arguments(arguments: list[str]) -> None:
    """Check render arguments with the CLI's own parser and scene validation.

    Raises
    ------
    UserError
        Naming the invalid option, with the CLI's message.
    """
    from .. import cli

    argv = ["render", "input", "-o", "movie.mp4", *arguments]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = cli.build_parser().parse_args(argv)
    except SystemExit:
        # A parser that exits instead of raising UserError leaves its message on stderr.
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        message = lines[-1] if lines else "invalid render option"
        raise UserError(_parser_advice(message.split("error: ", 1)[-1])) from None
    except UserError as error:
        raise UserError(_parser_advice(str(error))) from None

    scene = cli.scene_from_args(parsed)
    try:
        scene.validate()
    except UserError as error:
        raise UserError(to_http_advice(str(error))) from None


def _parser_advice(message: str) -> str:
    # "argument --view: invalid choice" names a flag the HTTP client never typed.
    def option_name(match: re.Match) -> str:
        return f"invalid option {_QUERY_NAMES.get(match.group(1), match.group(1))}: "

    return to_http_advice(_ARGPARSE_PREFIX.sub(option_name, message))


def _resolve_mpiexec(prefix: list[str], python: str) -> list[str]:
    # A bare mpiexec would find the system MPI first on PATH; mpi4py in this
    # environment is built against the MPI next to the interpreter, and a
    # mismatched mpiexec starts N singleton rank-0 processes. Wrappers such as
    # "nice -n 5 mpiexec" or "timeout 1h mpirun" put it after the first word.
    for index, argument in enumerate(prefix):
        if argument in ("mpiexec", "mpirun"):
            beside = Path(python).parent / argument
            if beside.exists():
                return [*prefix[:index], str(beside), *prefix[index + 1:]]
            break
    return prefix


def build_command(launcher: str, python: str, ranks: int, job_id: str, workdir: Path,
                  tail: list[str]) -> list[str]:
    """Build the job's argument list: the launcher prefix, then ``python -m kvis_parallel ...``.

    Parameters
    ----------
    launcher
        Template such as ``mpiexec -n {ranks}``, split with :func:`shlex.split`.
        ``{ranks}``, ``{python}``, ``{job}`` and ``{workdir}`` are replaced in
        each argument; other braces are left as they are. The first argument
        that is a bare ``mpiexec`` or ``mpirun``, at any position, becomes the
        one next to ``python`` when that exists.
    python
        Interpreter that runs ``-m kvis_parallel``.
    ranks
        MPI ranks for the job.
    job_id
        Job id, for launchers that name their jobs.
    workdir
        Job folder.
    tail
        Arguments after ``-m kvis_parallel`` (sub-command, input, options).
    """
    values = {"{ranks}": str(ranks), "{python}": python, "{job}": job_id, "{workdir}": str(workdir)}
    prefix = []
    for argument in shlex.split(launcher):
        for placeholder, value in values.items():
            argument = argument.replace(placeholder, value)
        prefix.append(argument)

    prefix = _resolve_mpiexec(prefix, python)
    return [*prefix, python, "-m", "kvis_parallel", *tail]


def strip_rank_zero(message: str) -> str:
    """Remove a leading ``rank 0 of N on HOST: `` from a user error's message.

    Rank 0 checks the input before any step is rendered, so for an HTTP
    client the rank and host add nothing to a user error. Other ranks' and
    bugs' messages keep them, because they locate a crash.
    """
    return _RANK_ZERO_PREFIX.sub("", message, count=1)


def error_message(stderr_lines: list[str]) -> str:
    """Return the reason from the last ``kvis: error: ...`` line, else the last line."""
    reason = kvis_error_line(stderr_lines)
    if reason is not None:
        return reason
    return stderr_lines[-1].strip() if stderr_lines else ""


def kvis_error_line(stderr_lines: list[str]) -> str | None:
    """Return the reason from the last ``kvis: error: ...`` line, or None when there is none."""
    for line in reversed(stderr_lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    return None


def launcher_failure_line(stderr_lines: list[str]) -> str:
    """Return the first stderr line that looks like an error, else the last non-empty one.

    Launchers such as mpiexec follow their error with usage hints and rules
    of dashes, so the last line alone rarely names the failure.
    """
    lines = [line.strip() for line in stderr_lines if _LETTER.search(line)]
    for line in lines:
        if _ERROR_WORDS.search(line):
            return line
    return lines[-1] if lines else ""


def to_http_advice(message: str, input_root: Path | None = None) -> str:
    """Rewrite a renderer message for an HTTP client.

    Paths under the job's input folder become paths inside the archive
    (``a/VTK``), and command-line advice becomes query-parameter advice
    (``--field`` to ``field=``, ``INPUT`` to a folder in the archive).
    """
    if input_root is not None:
        root = str(input_root).rstrip("/")
        message = message.replace(f"{root}/", "")
        message = re.sub(rf"{re.escape(root)}(?![\w/.-])", "the archive", message)

    for advice, replacement in _CLI_ADVICE:
        message = message.replace(advice, replacement)
    return _CLI_OPTION.sub(_query_form, message)


def _query_form(match: re.Match) -> str:
    flag, value = match.group(1), match.group(2)
    name = _QUERY_NAMES.get(flag)
    if name is None:
        return match.group(0)
    if flag in FLAG_OPTIONS.values():
        return f"{name}=1" + (f" {value}" if value else "")
    if value and _OPTION_VALUE.fullmatch(value):
        return f"{name}={value}"
    return f"{name}=" + (f" {value}" if value else "")


@dataclass
class RunResult:
    """Exit status, stderr tail and JSON error line of a finished child process."""

    returncode: int
    stderr_tail: list[str]
    error: dict[str, Any] | None = None
    stdout_json: list[dict[str, Any]] = field(default_factory=list)

    @property
    def message(self) -> str:
        """The one-line failure reason: the JSON error line, else the last stderr line."""
        if self.error and self.error.get("message"):
            return " ".join(str(self.error["message"]).split())
        return error_message(self.stderr_tail)

    @property
    def failure_reason(self) -> str:
        """The reason a run failed without a user error, for the job's error text.

        The renderer's own JSON error line or ``kvis: error:`` line comes
        first. Without one, the launcher or a signal stopped the run, and
        the last stderr line is often a usage hint or a rule of dashes.
        """
        if self.error and self.error.get("message"):
            return self.message
        reason = kvis_error_line(self.stderr_tail)
        if reason is not None:
            return reason
        if self.killed_by_signal is not None:
            return f"renderer killed by signal {self.killed_by_signal} ({_signal_name(self.killed_by_signal)})"
        line = launcher_failure_line(self.stderr_tail)
        return f"launcher command exited with status {self.returncode}" + (f": {line}" if line else "")

    @property
    def killed_by_signal(self) -> int | None:
        """The signal that ended the launcher, or None when it exited by itself."""
        return -self.returncode if self.returncode < 0 else None

    def to_client(self, input_root: Path) -> None:
        """Rewrite the error message and stderr lines for an HTTP client (see :func:`to_http_advice`)."""
        if self.error and isinstance(self.error.get("message"), str):
            self.error["message"] = to_http_advice(self.error["message"], input_root)
        self.stderr_tail = [to_http_advice(line, input_root) for line in self.stderr_tail]

    @property
    def client_message(self) -> str:
        """The message for the HTTP client: :attr:`message`, without rank 0's prefix on user errors."""
        return strip_rank_zero(self.message) if self.is_user_error else self.message

    @property
    def is_user_error(self) -> bool:
        """Whether the renderer reported bad input (exit status 2) rather than a bug."""
        if self.error is not None and self.error.get("kind") == "user":
            return True
        return self.returncode == 2


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"


def signal_group(pgid: int, signum: int) -> None:
    """Send a signal to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def stop_process_group(process: asyncio.subprocess.Process, grace_s: float = KILL_GRACE_S) -> None:
    """Stop a child's whole process group: SIGTERM, then SIGKILL after ``grace_s``."""
    if process.returncode is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            logger.warning("process group %d ignored SIGTERM for %.0f s; sending SIGKILL", process.pid, grace_s)

    # Ranks can outlive mpiexec, so the group is killed even after a clean exit.
    signal_group(process.pid, signal.SIGKILL)
    await process.wait()


async def run_process(command: list[str], *, cwd: Path, timeout_s: float, log_path: Path | None = None,
                      on_json: Callable[[dict[str, Any]], None] | None = None,
                      on_start: Callable[[int], None] | None = None) -> RunResult:
    """Run a command in its own session, reading JSON lines from stdout.

    Parameters
    ----------
    command
        Argument list.
    cwd
        Working folder.
    timeout_s
        Time limit; on expiry the process group is killed and TimeoutError raised.
    log_path
        File that receives stderr and any stdout line that is not JSON.
    on_json
        Called with each JSON object printed on stdout.
    on_start
        Called with the process id (which is also its process group id).

    Raises
    ------
    TimeoutError
        If the command ran past ``timeout_s``.
    asyncio.CancelledError
        If the calling task was cancelled; the group is killed first.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=environment, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, limit=MAX_LINE_BYTES)
    logger.debug("started process group %d: %s", process.pid, shlex.join(command))
    if on_start is not None:
        on_start(process.pid)

    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    result = RunResult(returncode=-1, stderr_tail=[])
    log = open(log_path, "a", encoding="utf-8") if log_path is not None else None
    readers = [
        asyncio.ensure_future(_read_stdout(process.stdout, result, on_json, log)),
        asyncio.ensure_future(_read_stderr(process.stderr, stderr_tail, log)),
    ]
    try:
        async with asyncio.timeout(timeout_s):
            await process.wait()
    finally:
        await stop_process_group(process)
        await _finish_readers(readers)
        if log is not None:
            log.close()

    result.returncode = process.returncode
    result.stderr_tail = list(stderr_tail)
    return result


async def _finish_readers(readers: list[asyncio.Future]) -> None:
    # Pipes close once the whole group is dead; the bound only guards against
    # a process that escaped the group and still holds them open.
    done, pending = await asyncio.wait(readers, timeout=5.0)
    for reader in pending:
        reader.cancel()
    for reader in done:
        if reader.exception() is not None:
            logger.warning("reading the job's output failed: %s", reader.exception())


async def _read_lines(stream: asyncio.StreamReader):
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # The line passed MAX_LINE_BYTES; skip the rest of it.
            with contextlib.suppress(asyncio.LimitOverrunError, ValueError):
                await stream.read(MAX_LINE_BYTES)
            continue
        if not line:
            return
        yield line.decode("utf-8", "replace").rstrip("\r\n")


async def _read_stdout(stream, result: RunResult, on_json, log) -> None:
    async for line in _read_lines(stream):
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            if log is not None:
                log.write(line + "\n")
            continue

        if message.get("stage") == "error":
            result.error = message
        result.stdout_json.append(message)
        del result.stdout_json[:-4]
        if on_json is not None:
            on_json(message)


async def _read_stderr(stream, tail: deque[str], log) -> None:
    async for line in _read_lines(stream):
        if line.strip():
            tail.append(line)
        if log is not None:
            log.write(line + "\n")
            log.flush()


async def run_inspect(python: str, folder: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``python -m kvis_parallel inspect FOLDER --json`` and return its summary.

    Raises
    ------
    UserError
        If the renderer rejects the data (exit status 2), with its message.
    TimeoutError
        If inspecting takes longer than ``timeout_s``.
    RuntimeError
        If the command fails otherwise or prints no JSON object.
    """
    command = [python, "-m", "kvis_parallel", "inspect", str(folder), "--json"]
    summaries: list[dict[str, Any]] = []
    result = await run_process(command, cwd=folder, timeout_s=timeout_s, on_json=summaries.append)
    result.to_client(folder)

    if result.returncode == 2 or result.is_user_error:
        raise UserError(result.client_message or "no readable time steps found in the archive")
    if result.returncode != 0 or not summaries:
        raise RuntimeError(f"inspect exited with status {result.returncode}: {result.message}")
    return summaries[-1]

