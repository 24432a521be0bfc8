"""Benchmark kvis against ParaView (pvbatch + ffmpeg) and a PyVista loop; write results and plots.

    python -m bench.run                 # full run: bench/RESULTS.md and bench/*.png
    python -m bench.run --quick         # one small workload, one repetition, into bench/out/quick/
    python -m bench.run --workloads transient --sizes 1280x720 --ranks 1,2,3 --repetitions 5

Method (see bench/README.md): every workload is prepared and its colour range
computed before timing. Each tool runs once per workload as a warm-up. Then
each repetition runs every tool configuration on every workload and size, and
the order of the tools rotates from one repetition to the next. Results are
medians with their spread. Tools that are not installed are skipped with a
message.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import environment
from .report import write_report
from .runners import PEERS, Encoding, RunResult, RunSpec, commands, execute, missing_reason, run_measured
from .workloads import DEFAULT_CACHE, REPO_ROOT, SPECS, Workload, WorkloadUnavailable, prepare

logger = logging.getLogger(__name__)

FULL_WORKLOADS = ("cavity", "damBreak", "transient", "synthetic-2d", "synthetic-3d")
QUICK_WORKLOADS = ("cavity",)
FULL_SIZES = ("1280x720", "1920x1080")
MEMORY_WORKLOADS = ("memory-100", "memory-2000")
MEMORY_SIZE = "320x240"


@dataclass(frozen=True)
class Plan:
    """Settings of one benchmark run: what it measures and how often."""

    workloads: tuple[str, ...]
    sizes: tuple[str, ...]
    ranks: tuple[int, ...]
    peers: tuple[str, ...]
    repetitions: int
    warmup: bool
    memory: bool
    profile: bool
    encoding: Encoding
    timeout_s: float
    kvis_options: tuple[str, ...] = ()
    kvis_env: tuple[tuple[str, str], ...] = ()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"Known workloads: {', '.join(SPECS)}.")

    parser.add_argument("--quick", action="store_true",
                        help="small run: cavity at 1280x720, kvis with 1 rank and all cores, "
                             "1 repetition, no memory check; writes into bench/out/quick/")
    parser.add_argument("--workloads", help=f"comma-separated workloads (default: {','.join(FULL_WORKLOADS)})")
    parser.add_argument("--sizes", help=f"comma-separated frame sizes WxH (default: {','.join(FULL_SIZES)})")
    parser.add_argument("--ranks", help=f"comma-separated kvis rank counts; counts above the {cores} cores "
                                        f"are reported as oversubscribed (default: 1 to {cores})")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="comma-separated peers to compare with, or 'none' (default: %(default)s)")
    parser.add_argument("--repetitions", type=int, help="timed repetitions per configuration (default: 3, quick: 1)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                        help=f"measure rank 0's peak memory for 100 and 2,000 frames at {MEMORY_SIZE} "
                             "(default: on, off with --quick)")
    parser.add_argument("--profile", action="store_true",
                        help="also run kvis under cProfile on every rank, once per rank count up to the cores, "
                             "on the first workload and size")

    parser.add_argument("--fps", type=int, default=10, help="movie frame rate for every tool (default: %(default)s)")
    parser.add_argument("--crf", type=int, default=23, help="libx264 CRF for every tool (default: %(default)s)")
    parser.add_argument("--preset", default="veryfast", help="libx264 preset for every tool (default: %(default)s)")

    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before one run is ended (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder for runs and results.json (default: bench/out/full or bench/out/quick)")
    parser.add_argument("--markdown", type=Path, help="results page to write (default: bench/RESULTS.md, quick: OUT/RESULTS.md)")
    parser.add_argument("--plots", type=Path, help="folder for the PNG plots (default: bench/, quick: OUT)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for generated workloads (default: %(default)s)")
    parser.add_argument("--note", action="append", default=[], help="a line to add to the page's list of conditions")
    parser.add_argument("--kvis-option", action="append", default=[], metavar="OPTION",
                        help="extra option for every kvis run, e.g. --kvis-option=--encoder-rank=dedicated (repeatable)")
    parser.add_argument("--kvis-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for every kvis run, e.g. LP_NUM_THREADS=2 (repeatable)")
    return parser.parse_args(argv)


def make_plan(arguments: argparse.Namespace) -> Plan:
    """Resolve the options (and the --quick defaults) into a :class:`Plan`."""
    cores = os.cpu_count() or 1
    quick = arguments.quick
    workloads = _split(arguments.workloads) or (QUICK_WORKLOADS if quick else FULL_WORKLOADS)
    unknown = [name for name in workloads if name not in SPECS]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; known workloads: {', '.join(SPECS)}")

    sizes = _split(arguments.sizes) or (FULL_SIZES[:1] if quick else FULL_SIZES)
    for size in sizes:
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise SystemExit(f"invalid size {size!r}: give WxH in pixels, e.g. 1280x720")

    if arguments.ranks:
        ranks = tuple(int(value) for value in _split(arguments.ranks))
    else:
        ranks = tuple(sorted({1, cores})) if quick else tuple(range(1, cores + 1))

    peers = () if arguments.peers == "none" else _split(arguments.peers)
    unknown = [name for name in peers if name not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; known peers: {', '.join(PEERS)} or 'none'")

    repetitions = arguments.repetitions or (1 if quick else 3)
    memory = arguments.memory if arguments.memory is not None else not quick
    kvis_env = []
    for item in arguments.kvis_env:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise SystemExit(f"invalid --kvis-env {item!r}: give NAME=VALUE, e.g. LP_NUM_THREADS=2")
        kvis_env.append((name, value))

    return Plan(workloads=workloads, sizes=sizes, ranks=ranks, peers=peers, repetitions=repetitions,
                warmup=not arguments.no_warmup, memory=memory, profile=arguments.profile,
                encoding=Encoding(arguments.fps, arguments.crf, arguments.preset), timeout_s=arguments.timeout,
                kvis_options=tuple(arguments.kvis_option), kvis_env=tuple(kvis_env))


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(piece.strip() for piece in text.split(",") if piece.strip()) if text else ()


def available_specs(plan: Plan, skipped: list[str]) -> list[RunSpec]:
    """Return the tool configurations that can run here; append a message for each skipped tool."""
    specs = []
    for tool in ("kvis", *plan.peers):
        reason = missing_reason(tool)
        if reason:
            message = f"{tool}: {reason}"
            print(f"skipping {message}")
            skipped.append(message)
            continue
        if tool == "kvis":
            specs += [RunSpec("kvis", ranks) for ranks in plan.ranks]
        else:
            specs.append(RunSpec(tool))
    return specs


def prepare_workloads(names: Sequence[str], cache: Path, skipped: list[str]) -> list[Workload]:
    """Prepare each workload; one that cannot be prepared is skipped with a message."""
    prepared = []
    for name in names:
        try:
            workload = prepare(name, cache)
        except WorkloadUnavailable as error:
            message = f"workload {name}: {error}"
            print(f"skipping {message}")
            skipped.append(message)
            continue
        print(f"workload {name}: {workload.steps} steps, {workload.cells} cells, field {workload.field} "
              f"({workload.association}), range {workload.range_text}, {workload.input_dir}")
        prepared.append(workload)
    return prepared


class Session:
    """Runs configurations, numbers them for the progress lines and keeps every result."""

    def __init__(self, plan: Plan, out: Path, cores: int):
        self.plan = plan
        self.out = out
        self.cores = cores
        self.results: list[RunResult] = []
        self.done = 0
        self.total = 0

    def files_list(self, workload: Workload) -> Path:
        path = self.out / "lists" / f"{workload.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{file.resolve()}\n" for file in workload.files))
        return path

    def run(self, spec: RunSpec, workload: Workload, size: str, repetition: int, warmup: bool) -> RunResult:
        run_dir = self.out / "runs" / f"{workload.name}-{size}-{spec.label}"
        result = execute(spec, workload, size, self.plan.encoding, run_dir, self.files_list(workload),
                         repetition=repetition, warmup=warmup, cores=self.cores, timeout_s=self.plan.timeout_s,
                         kvis_options=self.plan.kvis_options, kvis_env=dict(self.plan.kvis_env))
        self.done += 1
        self.results.append(result)
        self._print(result)
        return result

    def _print(self, result: RunResult) -> None:
        kind = "warm-up" if result.warmup else f"rep {result.repetition + 1}"
        prefix = f"[{self.done}/{self.total}] {result.workload} {result.size} {result.label} {kind}:"
        if result.ok:
            print(f"{prefix} {result.wall_s:.2f} s, {result.fps:.2f} frames/s, CPU {result.cpu_s:.2f} s, "
                  f"peak {result.peak_rss_mb:.0f} MiB",
                  flush=True)
        else:
            print(f"{prefix} FAILED: {result.error}", flush=True)


def run_timed(session: Session, specs: Sequence[RunSpec], workloads: Sequence[Workload]) -> None:
    """Run the warm-ups, then every repetition in interleaved, rotating order."""
    plan = session.plan
    warmups = [(spec, workload) for workload in workloads for spec in _warmup_specs(specs)] if plan.warmup else []
    session.total = len(warmups) + plan.repetitions * len(workloads) * len(plan.sizes) * len(specs)

    for spec, workload in warmups:
        session.run(spec, workload, plan.sizes[0], repetition=-1, warmup=True)

    for repetition in range(plan.repetitions):
        for workload in workloads:
            for size in plan.sizes:
                shift = repetition % len(specs)
                for spec in [*specs[shift:], *specs[:shift]]:
                    session.run(spec, workload, size, repetition, warmup=False)


def _warmup_specs(specs: Sequence[RunSpec]) -> list[RunSpec]:
    # One warm-up per tool fills the file cache and compiles bytecode; kvis
    # warms up with its largest rank count.
    kvis = [spec for spec in specs if spec.tool == "kvis"]
    chosen = [max(kvis, key=lambda spec: spec.ranks)] if kvis else []
    return chosen + [spec for spec in specs if spec.tool != "kvis"]


def run_memory(session: Session, cache: Path, skipped: list[str]) -> list[RunResult]:
    """Run kvis on the 100- and 2,000-frame series at a small size; return both runs.

    kvis uses the largest rank count that fits the cores (the largest count
    when none fits).
    """
    if missing_reason("kvis"):
        return []
    workloads = prepare_workloads(MEMORY_WORKLOADS, cache, skipped)
    ranks = max([ranks for ranks in session.plan.ranks if ranks <= session.cores] or session.plan.ranks)
    session.total += len(workloads)
    before = len(session.results)
    for workload in workloads:
        session.run(RunSpec("kvis", ranks), workload, MEMORY_SIZE, repetition=0, warmup=False)
    memory = session.results[before:]
    del session.results[before:]
    return memory


def run_profiles(session: Session, workload: Workload, size: str) -> dict[str, str]:
    """Profile kvis once per rank count that fits the cores; return each rank's top functions."""
    fitting = [ranks for ranks in session.plan.ranks if ranks <= session.cores] or [min(session.plan.ranks)]
    profiles = {}
    for ranks in fitting:
        profiles.update(run_profile(session, workload, size, ranks))
    return profiles


def run_profile(session: Session, workload: Workload, size: str, ranks: int) -> dict[str, str]:
    """Run kvis once under cProfile on every rank; return each rank's top functions."""
    spec = RunSpec("kvis", ranks)
    run_dir = session.out / "profile" / f"{workload.name}-{size}-{spec.label}"
    run_dir.mkdir(parents=True, exist_ok=True)
    command = commands(spec, workload, size, session.plan.encoding, run_dir, session.files_list(workload),
                       session.plan.kvis_options)[0]
    module_at = command.index("kvis_parallel")
    command[module_at - 1:module_at + 1] = ["-m", "bench.profile_rank", str(run_dir)]

    env = {**os.environ, **dict(session.plan.kvis_env)}
    wall, _, status = run_measured(command, run_dir / "log.txt", session.plan.timeout_s, env)
    print(f"profile {workload.name} {size} {spec.label}: {wall:.2f} s, status {status}, files in {run_dir}")
    name = f"{workload.name} {size} {spec.label}"
    return {f"{name}, rank {path.stem.removeprefix('rank')}": path.read_text()
            for path in sorted(run_dir.glob("rank*.txt"))}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    arguments = parse_arguments(argv)
    plan = make_plan(arguments)
    out = arguments.out or REPO_ROOT / "bench" / "out" / ("quick" if arguments.quick else "full")
    markdown = arguments.markdown or (out / "RESULTS.md" if arguments.quick else REPO_ROOT / "bench" / "RESULTS.md")
    plots = arguments.plots or (out if arguments.quick else REPO_ROOT / "bench")
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1

    skipped: list[str] = []
    specs = available_specs(plan, skipped)
    workloads = prepare_workloads(plan.workloads, arguments.cache, skipped)
    document = {
        "command": " ".join(["python -m bench.run", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "started": _now(), "machine": environment.machine(), "versions": environment.versions(),
        "load_before": environment.load_average(),
        "method": {"repetitions": plan.repetitions, "warmup": "one run per tool and workload" if plan.warmup else "none",
                   "encoding": f"CRF {plan.encoding.crf}, preset {plan.encoding.preset}, {plan.encoding.fps} frames/s"},
        "steps": {workload.name: workload.steps for workload in workloads},
        "notes": list(arguments.note) + _setting_notes(plan), "skipped": skipped,
    }

    session = Session(plan, out, cores)
    if specs and workloads:
        run_timed(session, specs, workloads)
    memory = run_memory(session, arguments.cache, skipped) if plan.memory else []
    if plan.profile and workloads and not missing_reason("kvis"):
        document["profiles"] = run_profiles(session, workloads[0], plan.sizes[0])

    document.update(finished=_now(), load_after=environment.load_average(),
                    results=[result.to_dict() for result in session.results],
                    memory=[result.to_dict() for result in memory])
    results_json = out / "results.json"
    results_json.write_text(json.dumps(document, indent=1) + "\n")
    plots.mkdir(parents=True, exist_ok=True)
    write_report(results_json, markdown, plots)
    print(f"results: {results_json}\npage: {markdown}")

    failed = [result for result in session.results + memory if not result.ok]
    return 1 if failed else 0


def _setting_notes(plan: Plan) -> list[str]:
    notes = []
    if plan.kvis_options:
        notes.append("Extra kvis options: `" + " ".join(plan.kvis_options) + "`.")
    if plan.kvis_env:
        notes.append("Extra kvis environment: `" + " ".join(f"{n}={v}" for n, v in plan.kvis_env) + "`.")
    return notes


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


if __name__ == "__main__":
    raise SystemExit(main())
