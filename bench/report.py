"""Turn a benchmark's ``results.json`` into the Markdown results page and PNG plots.

``python -m bench.report RESULTS_JSON... [--markdown FILE] [--plots DIR]`` rebuilds
them from saved results without running anything, merging several runs into one page. Text between the
``<!-- findings -->`` and ``<!-- /findings -->`` lines of an existing page is
written by hand (profiling findings, explanations) and kept on rebuilds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

from .runners import PEERS, RunResult
from .stats import SUMMARY_STAGES, measured, paired_ratios, pipeline_bound, rank0_peak_mb, spread

logger = logging.getLogger(__name__)

FINDINGS_START = "<!-- findings -->"
FINDINGS_END = "<!-- /findings -->"
TIMING_COLUMNS = ("workload", "size", "tool", "ranks", "steps", "wall s", "frames/s",
                  "CPU s", "peak RSS MiB", "runs")
RATIO_COLUMNS = ("workload", "size", "kvis", "peer", "kvis/peer time", "speedup (peer/kvis)",
                 "kvis/peer CPU", "pairs")
BOUND_COLUMNS = ("workload", "size", "ranks", "render work / render ranks s", "encode s",
                 "all work / ranks s", "bound s", "limited by", "pipeline wall s",
                 "process wall s", "pipeline over bound")

# The project's targets: (workload, size, kvis label, peer, minimum speedup).
SPEEDUP_TARGETS = (
    ("transient", "1280x720", "kvis-2", "paraview", 8.0),
    ("transient", "1280x720", "kvis-2", "pyvista", 8.0),
    ("synthetic-3d", "1280x720", "kvis-2", "paraview", 3.0),
)
BOUND_TARGET = ("transient", "1280x720", 2, 0.15)
MEMORY_TOLERANCE = 0.10


def load(paths: Sequence[Path]) -> tuple[dict, list[RunResult], list[RunResult]]:
    """Read one or more ``results.json``: the metadata, the timed runs and the memory runs.

    Several files are merged into one page. The first file's metadata is
    kept, and the others' commands, times, load averages, notes and profiles
    are added. Their repetition numbers are offset by 100 per file, so ratios
    only pair runs of the same file.
    """
    document: dict = {}
    results: list[RunResult] = []
    memory: list[RunResult] = []
    for index, path in enumerate(paths):
        part = json.loads(path.read_text())
        runs = [RunResult.from_dict(values) for values in part.get("results", [])]
        for run in runs:
            if run.repetition >= 0:
                run.repetition += 100 * index
        results += runs
        memory += [RunResult.from_dict(values) for values in part.get("memory", [])]
        if not document:
            document = part
            continue
        document["finished"] = part.get("finished", document.get("finished"))
        document["load_after"] = part.get("load_after")
        document.setdefault("steps", {}).update(part.get("steps", {}))
        document["notes"] = document.get("notes", []) + [
            note for note in part.get("notes", []) if note not in document.get("notes", [])]
        document["skipped"] = document.get("skipped", []) + [
            message for message in part.get("skipped", []) if message not in document.get("skipped", [])]
        document.setdefault("profiles", {}).update(part.get("profiles", {}))
        document.setdefault("runs", []).append(
            f"`{part.get('command')}`: {part.get('started')} to {part.get('finished')}, "
            f"{_repetitions(part.get('method', {}).get('repetitions'))}, "
            f"load {part.get('load_before')} before, {part.get('load_after')} after")
    return document, results, memory


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a GitHub Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def timing_rows(results: Sequence[RunResult], steps: dict[str, int]) -> list[list[object]]:
    """Return one row per workload, size and tool configuration: wall time, frames/s and memory."""
    rows = []
    for workload, size, label in _groups(results):
        runs = [r for r in measured(results) if (r.workload, r.size, r.label) == (workload, size, label)]
        failed = [r for r in results if (r.workload, r.size, r.label) == (workload, size, label)
                  and not r.ok and not r.warmup]
        if not runs and not failed:
            continue

        first = (runs or failed)[0]
        ranks = f"{first.ranks} (oversubscribed)" if first.oversubscribed else str(first.ranks)
        if not runs:
            rows.append([workload, size, first.tool, ranks, steps.get(workload, "?"),
                         f"failed: {failed[0].error}", "", "", "", 0])
            continue
        rows.append([workload, size, first.tool, ranks, steps.get(workload, "?"),
                     spread(r.wall_s for r in runs).format(), spread(r.fps for r in runs).format(1),
                     spread(r.cpu_s for r in runs).format(1), spread(r.peak_rss_mb for r in runs).format(0),
                     len(runs)])
    return rows


def ratio_rows(results: Sequence[RunResult]) -> list[list[object]]:
    """Return one row per kvis configuration and peer: paired ratios over repetitions."""
    rows = []
    for workload, size in _workload_sizes(results):
        labels = sorted({r.label for r in measured(results)
                         if (r.workload, r.size) == (workload, size) and r.tool == "kvis"},
                        key=_label_order)
        for label in labels:
            for peer in PEERS:
                ratios = paired_ratios(results, workload, size, label, peer)
                if not ratios:
                    continue
                cpu = paired_ratios(results, workload, size, label, peer, metric="cpu_s")
                rows.append([workload, size, label, peer, spread(ratios).format(3),
                             spread(1 / ratio for ratio in ratios).format(1), spread(cpu).format(3), len(ratios)])
    return rows


def stage_rows(results: Sequence[RunResult]) -> list[list[object]]:
    """Return the median of each kvis summary stage (seconds summed over ranks) per configuration."""
    rows = []
    for workload, size, label in _groups(results):
        runs = [r for r in measured(results)
                if (r.workload, r.size, r.label) == (workload, size, label) and r.summary]
        if not runs or runs[0].tool != "kvis":
            continue
        cells = [spread(float((r.summary.get("stages") or {}).get(stage, math.nan)) for r in runs).format()
                 for stage in SUMMARY_STAGES]
        wall = spread(float(r.summary.get("wall_s", math.nan)) for r in runs).format()
        rows.append([workload, size, runs[0].ranks, *cells, wall])
    return rows


def peer_stage_rows(results: Sequence[RunResult]) -> list[list[object]]:
    """Return the peers' own stage times (median) and the split between their processes."""
    rows = []
    for workload, size, label in _groups(results):
        runs = [r for r in measured(results)
                if (r.workload, r.size, r.label) == (workload, size, label) and r.tool in PEERS]
        if not runs:
            continue
        names = sorted({name for r in runs for name in ((r.summary or {}).get("stages") or {})})
        parts = [f"{name} {spread(((r.summary or {}).get('stages') or {}).get(name, math.nan) for r in runs).format()}"
                 for name in names]
        processes = sorted({name for r in runs for name in r.steps_wall_s})
        parts += [f"process {name} {spread(r.steps_wall_s.get(name, math.nan) for r in runs).format()}"
                  for name in processes]
        rows.append([workload, size, label, "; ".join(parts)])
    return rows


def bound_rows(results: Sequence[RunResult]) -> list[list[object]]:
    """Return, per kvis configuration, the bound of its slowest stage and how close the run came."""
    rows = []
    for workload, size, label in _groups(results):
        runs = [r for r in measured(results)
                if (r.workload, r.size, r.label) == (workload, size, label) and r.tool == "kvis" and r.summary]
        bounds = [(r, pipeline_bound(r.summary)) for r in runs]
        bounds = [(r, b) for r, b in bounds if b is not None]
        if not bounds:
            continue
        limits = sorted({b.limit for _, b in bounds})
        rows.append([
            workload, size, runs[0].ranks,
            spread(b.render_s for _, b in bounds).format(), spread(b.encode_s for _, b in bounds).format(),
            spread(b.shared_s for _, b in bounds).format(), spread(b.bound_s for _, b in bounds).format(),
            "/".join(limits), spread(b.pipeline_wall_s for _, b in bounds).format(),
            spread(r.wall_s for r, _ in bounds).format(),
            spread(100 * b.overhead for _, b in bounds).format(0) + " %",
        ])
    return rows


def rank_memory_rows(results: Sequence[RunResult]) -> list[list[object]]:
    """Return each kvis configuration's per-rank peak memory (median over repetitions, MiB)."""
    rows = []
    for workload, size, label in _groups(results):
        runs = [r for r in measured(results)
                if (r.workload, r.size, r.label) == (workload, size, label) and r.tool == "kvis" and r.summary]
        if not runs:
            continue
        ranks = sorted({entry.get("rank") for r in runs for entry in r.summary.get("per_rank") or []})
        cells = []
        for rank in ranks:
            values = [float(entry.get("peak_rss_mb", math.nan)) for r in runs
                      for entry in r.summary.get("per_rank") or [] if entry.get("rank") == rank]
            cells.append(f"{rank}: {spread(values).format(0)}")
        rows.append([workload, size, runs[0].ranks, ", ".join(cells)])
    return rows


def memory_rows(memory: Sequence[RunResult]) -> list[list[object]]:
    """Return rank 0's peak memory for each memory-check series and its ratio to the smallest."""
    runs = sorted(measured(memory), key=lambda r: r.frames)
    if not runs:
        return []
    by_frames: dict[int, list[float]] = {}
    for r in runs:
        by_frames.setdefault(r.frames, []).append(rank0_peak_mb(r.summary))
    base = spread(by_frames[min(by_frames)]).median
    return [[frames, runs[0].size, runs[0].ranks, spread(values).format(1),
             f"{spread(values).median / base:.3f}"] for frames, values in sorted(by_frames.items())]


def target_rows(results: Sequence[RunResult], memory: Sequence[RunResult]) -> list[list[object]]:
    """Evaluate the project's targets against the measured runs."""
    rows = []
    for workload, size, label, peer, minimum in SPEEDUP_TARGETS:
        ratios = paired_ratios(results, workload, size, label, peer)
        if not ratios:
            rows.append([f"{workload} {size}: {label} ≥ {minimum:g}x faster than {peer}", "not measured", "—"])
            continue
        speedup = spread(1 / ratio for ratio in ratios)
        rows.append([f"{workload} {size}: {label} ≥ {minimum:g}x faster than {peer}",
                     f"{speedup.format(1)}x", "yes" if speedup.median >= minimum else "no"])

    workload, size, ranks, tolerance = BOUND_TARGET
    bounds = [pipeline_bound(r.summary) for r in measured(results)
              if (r.workload, r.size, r.tool, r.ranks) == (workload, size, "kvis", ranks) and r.summary]
    overheads = [b.overhead for b in bounds if b is not None]
    if overheads:
        median = spread(overheads).median
        rows.append([f"{workload} {size}: kvis-{ranks} pipeline within {tolerance:.0%} of its bound",
                     f"{100 * median:.0f} % over", "yes" if median <= tolerance else "no"])
    else:
        rows.append([f"{workload} {size}: kvis-{ranks} pipeline within {tolerance:.0%} of its bound",
                     "not measured", "—"])

    memory_table = memory_rows(memory)
    if len(memory_table) >= 2:
        ratio = float(memory_table[-1][-1])
        rows.append([f"rank 0 peak memory, {memory_table[-1][0]} vs {memory_table[0][0]} frames, within "
                     f"{MEMORY_TOLERANCE:.0%}", f"ratio {ratio:.3f}",
                     "yes" if abs(ratio - 1) <= MEMORY_TOLERANCE else "no"])
    else:
        rows.append(["rank 0 peak memory same for 100 and 2,000 frames", "not measured", "—"])
    return rows


def _repetitions(count: int | None) -> str:
    if count is None:
        return "? repetitions"
    if count == 1:
        return "1 repetition"
    return f"{count} repetitions"


def _groups(results: Sequence[RunResult]) -> list[tuple[str, str, str]]:
    keys = {(r.workload, r.size, r.label) for r in results if not r.warmup}
    order = {name: index for index, name in enumerate(dict.fromkeys(r.workload for r in results))}
    return sorted(keys, key=lambda key: (order[key[0]], _size_order(key[1]), _label_order(key[2])))


def _workload_sizes(results: Sequence[RunResult]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((workload, size) for workload, size, _ in _groups(results)))


def _size_order(size: str) -> int:
    width, height = size.split("x")
    return int(width) * int(height)


def _label_order(label: str) -> tuple[int, int]:
    if label.startswith("kvis-"):
        return 0, int(label.split("-")[1])
    return 1, PEERS.index(label) if label in PEERS else 99


def render_markdown(document: dict, results: Sequence[RunResult], memory: Sequence[RunResult],
                    findings: str, plot_names: Sequence[str]) -> str:
    """Build the whole results page."""
    steps = document.get("steps", {})
    machine = document.get("machine", {})
    versions = document.get("versions", {})
    method = document.get("method", {})
    sections = [
        "# kvis benchmark results",
        "",
        (f"Measured by `{document.get('command', 'python -m bench.run')}` from {document.get('started', '?')} "
         f"to {document.get('finished', '?')}." if not document.get("runs") else
         f"Measured by several runs from {document.get('started', '?')} to {document.get('finished', '?')}, "
         "listed below and merged by `python -m bench.report`.") + " The method is in [README.md](README.md).",
        "",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('memory_gb', '?')} GB memory, {machine.get('system', '?')}, Python {machine.get('python', '?')}.",
        f"- Load average (1, 5, 15 min) before the first run: {document.get('load_before')}, after the last: "
        f"{document.get('load_after')}.",
        "- Versions: " + ", ".join(f"{name} {value}" for name, value in versions.items()) + ".",
        (f"- Repetitions: {method.get('repetitions', '?')} per configuration" if not document.get("runs")
         else "- Repetitions: as listed for each run below") +
        ", in interleaved order (the order of the tools rotates each repetition); warm-up: "
        f"{method.get('warmup', '?')}. Cells show the median with [minimum–maximum] over repetitions.",
        f"- Encoding for every tool: libx264, yuv420p, {method.get('encoding', '?')}.",
    ]
    if document.get("runs"):
        sections.append(f"- Run: `{document.get('command')}`: from {document.get('started')}, "
                        f"{_repetitions(method.get('repetitions'))}, load {document.get('load_before')} before.")
        sections += [f"- Run: {line}." for line in document["runs"]]
    for note in document.get("notes", []):
        sections.append(f"- {note}")
    for skipped in document.get("skipped", []):
        sections.append(f"- Skipped: {skipped}")

    sections += ["", "## Targets", "", markdown_table(("target", "measured", "met"), target_rows(results, memory))]
    sections += ["", "## Findings", "", FINDINGS_START, findings.strip() or "(none written yet)", FINDINGS_END]
    sections += ["", "## Whole-process time", "",
                 "Wall time from starting the tool to its finished MP4 (for ParaView: pvbatch writing PNG "
                 "frames plus ffmpeg). CPU s is user plus system time of every process of the run, which "
                 "other work on the machine disturbs less than the wall time. Peak RSS is the largest "
                 "resident set of any process of the run.", "",
                 markdown_table(TIMING_COLUMNS, timing_rows(results, steps))]
    sections += ["", "## Ratios, paired by repetition", "",
                 "kvis time divided by the peer's time in the same repetition; below 1 means kvis is faster. "
                 "The CPU column divides CPU seconds (user plus system, all processes) the same way.", "",
                 markdown_table(RATIO_COLUMNS, ratio_rows(results))]
    sections += ["", "## kvis stages", "",
                 "Seconds from kvis's `--summary` JSON, summed over ranks; the last column is the "
                 "pipeline's own wall time (inside the MPI job).", "",
                 markdown_table(("workload", "size", "ranks", *SUMMARY_STAGES, "pipeline wall s"),
                                stage_rows(results))]
    sections += ["", "## Bound of the slowest stage", "",
                 "The time the slowest stage would need alone: the render ranks' work (read, geometry, "
                 "render, readback, convert) divided by their number, the encoder's time, or all work "
                 "divided by all ranks when rank 0 both renders and encodes. The last column is how much "
                 "longer the pipeline took than that bound.", "",
                 markdown_table(BOUND_COLUMNS, bound_rows(results))]
    sections += ["", "## Peak memory per rank (kvis)", "",
                 markdown_table(("workload", "size", "ranks", "rank: peak RSS MiB"), rank_memory_rows(results))]
    sections += ["", "## Rank 0 memory against movie length", "",
                 markdown_table(("frames", "size", "ranks", "rank 0 peak RSS MiB", "ratio to shortest"),
                                memory_rows(memory))]
    sections += ["", "## Peer stages", "",
                 "The peers' own timers (seconds, from their summary files) and the wall time of each process.", "",
                 markdown_table(("workload", "size", "tool", "stages"), peer_stage_rows(results))]
    if document.get("profiles"):
        sections += ["", "## Profiles (cProfile per rank, top functions by own time)", ""]
        for name, text in document["profiles"].items():
            sections += [f"### {name}", "", "```", text.rstrip(), "```", ""]
    if plot_names:
        sections += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plot_names]
    return "\n".join(sections).rstrip() + "\n"


def existing_findings(path: Path) -> str:
    """Return the hand-written findings of an existing page, or an empty string."""
    if not path.exists():
        return ""
    text = path.read_text()
    if FINDINGS_START not in text or FINDINGS_END not in text:
        return ""
    return text.split(FINDINGS_START, 1)[1].split(FINDINGS_END, 1)[0].strip()


def write_plots(results: Sequence[RunResult], folder: Path) -> list[str]:
    """Draw frames/s against ranks and the kvis stage breakdown; return the PNG file names written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        logger.warning("matplotlib not importable, so no plots; install it with: pip install matplotlib")
        return []

    names = []
    pairs = _workload_sizes(measured(results))
    if pairs:
        names.append(_plot_fps(pyplot, results, pairs, folder / "fps_vs_ranks.png"))
    stage_data = _stage_shares(results)
    if stage_data:
        names.append(_plot_stages(pyplot, stage_data, folder / "stages.png"))
    return names


def _plot_fps(pyplot, results, pairs, path: Path) -> str:
    columns = min(3, len(pairs))
    rows = math.ceil(len(pairs) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False)

    for axis, (workload, size) in zip(axes.flat, pairs):
        runs = [r for r in measured(results) if (r.workload, r.size) == (workload, size)]
        kvis = sorted({r.ranks for r in runs if r.tool == "kvis"})
        medians = [spread(r.fps for r in runs if r.tool == "kvis" and r.ranks == n) for n in kvis]
        if kvis:
            axis.errorbar(kvis, [m.median for m in medians],
                          yerr=[[m.median - m.low for m in medians], [m.high - m.median for m in medians]],
                          marker="o", capsize=3, label="kvis")
        for peer, style in zip(PEERS, ("--", ":")):
            fps = spread(r.fps for r in runs if r.tool == peer)
            if fps.count:
                axis.axhline(fps.median, linestyle=style, color="grey" if peer == "paraview" else "black",
                             label=f"{peer} (1 process)")
        axis.set_title(f"{workload} {size}")
        axis.set_xlabel("kvis ranks")
        axis.set_ylabel("frames/s, whole process")
        oversubscribed = {r.ranks for r in runs if r.tool == "kvis" and r.oversubscribed}
        axis.set_xticks(kvis or [1], [f"{n} (oversubscribed)" if n in oversubscribed else str(n)
                                      for n in kvis] or ["1"])
        axis.set_ylim(bottom=0)
        axis.legend(fontsize="small")

    for axis in list(axes.flat)[len(pairs):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path.name


def _stage_shares(results: Sequence[RunResult]) -> list[tuple[str, dict[str, float]]]:
    """Return, per kvis configuration, each stage's median milliseconds per frame (summed over ranks)."""
    data = []
    for workload, size, label in _groups(results):
        runs = [r for r in measured(results)
                if (r.workload, r.size, r.label) == (workload, size, label) and r.tool == "kvis" and r.summary]
        if not runs:
            continue
        shares = {stage: spread(1000 * float((r.summary.get("stages") or {}).get(stage, 0.0)) / max(r.frames, 1)
                                for r in runs).median for stage in SUMMARY_STAGES}
        data.append((f"{workload} {size} {label}", shares))
    return data


def _plot_stages(pyplot, data, path: Path) -> str:
    figure, axis = pyplot.subplots(figsize=(10, 0.45 * len(data) + 2.2))
    labels = [label for label, _ in data]
    left = [0.0] * len(data)
    for stage in SUMMARY_STAGES:
        widths = [shares[stage] for _, shares in data]
        axis.barh(labels, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    axis.invert_yaxis()
    axis.set_xlabel("ms per frame, summed over ranks")
    axis.set_title("kvis stage breakdown (median over repetitions)")
    figure.legend(*axis.get_legend_handles_labels(), ncol=len(SUMMARY_STAGES), fontsize="small",
                  loc="lower center")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path.name


def write_report(results_json: Path | Sequence[Path], markdown: Path, plots: Path | None) -> None:
    """Rebuild the results page (and plots, when a folder is given) from one or more ``results.json``."""
    paths = [results_json] if isinstance(results_json, Path) else list(results_json)
    document, results, memory = load(paths)
    plot_names = write_plots(results, plots) if plots else []
    relative = [os.path.relpath(plots / name, markdown.parent) for name in plot_names]
    findings = existing_findings(markdown)
    markdown.write_text(render_markdown(document, results, memory, findings, relative))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+",
                        help="results.json written by python -m bench.run; several are merged into one page")
    parser.add_argument("--markdown", type=Path, default=Path("bench/RESULTS.md"), help="page to write")
    parser.add_argument("--plots", type=Path, default=Path("bench"), help="folder for the PNG plots")
    arguments = parser.parse_args(argv)
    write_report(arguments.results, arguments.markdown, arguments.plots)
    print(f"wrote {arguments.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
