"""Statistics over repeated runs: medians and spreads, paired ratios and the pipeline bound.

Ratios are paired: a kvis run is divided by the peer run of the same
workload, size and repetition, which ran next to it in the interleaved order.
Pairing cancels much of the slow drift of load from other work on a shared
machine, and the spread of the ratios shows what is left of it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .runners import RunResult

# Stages of the kvis summary that render ranks spend on a frame. "send"
# (an Ssend that also waits for rank 0 to post the receive) and "wait" are
# idle time rather than work, so the bound leaves them out.
RENDER_STAGES = ("read", "geometry", "render", "readback", "convert")
ENCODE_STAGE = "encode"
SUMMARY_STAGES = ("read", "geometry", "render", "readback", "convert", "send", "encode", "wait")


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of a sample, and its size."""

    median: float
    low: float
    high: float
    count: int

    def format(self, digits: int = 2) -> str:
        if self.count == 0:
            return "n/a"
        if self.count == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}–{self.high:.{digits}f}]"


@dataclass(frozen=True)
class Bound:
    """The time the slowest stage of one kvis run would need alone, and how close the run came.

    ``render_s`` is the render ranks' work divided by their number,
    ``encode_s`` the encoder's time, ``shared_s`` all work divided by all
    ranks (the bound when rank 0 both renders and encodes). ``bound_s`` is the
    largest of the three and ``limit`` names it. ``efficiency`` is
    ``bound_s / pipeline_wall_s``: 1.0 means the pipeline hides every other
    stage behind the slowest one.
    """

    render_s: float
    encode_s: float
    shared_s: float
    bound_s: float
    limit: str
    render_ranks: int
    pipeline_wall_s: float

    @property
    def efficiency(self) -> float:
        return self.bound_s / self.pipeline_wall_s if self.pipeline_wall_s > 0 else math.nan

    @property
    def overhead(self) -> float:
        """Fraction by which the pipeline's wall time exceeds the bound."""
        return self.pipeline_wall_s / self.bound_s - 1.0 if self.bound_s > 0 else math.nan


def spread(values: Iterable[float]) -> Spread:
    """Return the median, minimum and maximum of the finite values."""
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        return Spread(math.nan, math.nan, math.nan, 0)
    return Spread(statistics.median(finite), min(finite), max(finite), len(finite))


def measured(results: Iterable[RunResult]) -> list[RunResult]:
    """Return the successful runs that are not warm-ups."""
    return [result for result in results if result.ok and not result.warmup]


def paired_ratios(results: Sequence[RunResult], workload: str, size: str,
                  numerator: str, denominator: str, metric: str = "wall_s") -> list[float]:
    """Return ``numerator / denominator`` of ``metric`` for each repetition that has both runs.

    ``numerator`` and ``denominator`` are run labels such as ``kvis-2`` or
    ``paraview``; ``metric`` is ``wall_s`` or ``cpu_s``.
    """
    by_key = {(result.label, result.repetition): getattr(result, metric)
              for result in measured(results)
              if result.workload == workload and result.size == size}
    repetitions = sorted({repetition for _, repetition in by_key})
    return [by_key[(numerator, repetition)] / by_key[(denominator, repetition)]
            for repetition in repetitions
            if (numerator, repetition) in by_key and (denominator, repetition) in by_key]


def pipeline_bound(summary: dict) -> Bound | None:
    """Compute the bound of one kvis run from its ``--summary`` JSON; None if stages are missing."""
    stages = summary.get("stages") or {}
    if not stages or "wall_s" not in summary:
        return None

    ranks = int(summary.get("ranks") or 1)
    per_rank = summary.get("per_rank") or []
    render_ranks = sum(1 for entry in per_rank if entry.get("frames", 0) > 0) or ranks

    render_work = sum(float(stages.get(name, 0.0)) for name in RENDER_STAGES)
    encode = float(stages.get(ENCODE_STAGE, 0.0))
    terms = {"render": render_work / render_ranks, "encode": encode,
             "shared": (render_work + encode) / ranks}
    limit = max(terms, key=terms.get)
    return Bound(render_s=terms["render"], encode_s=encode, shared_s=terms["shared"],
                 bound_s=terms[limit], limit=limit, render_ranks=render_ranks,
                 pipeline_wall_s=float(summary["wall_s"]))


def rank0_peak_mb(summary: dict | None) -> float:
    """Return rank 0's peak resident memory (MiB) from a kvis summary, NaN when absent."""
    for entry in (summary or {}).get("per_rank") or []:
        if entry.get("rank") == 0 and "peak_rss_mb" in entry:
            return float(entry["peak_rss_mb"])
    return math.nan
