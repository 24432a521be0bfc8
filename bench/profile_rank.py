"""Run the kvis command line under cProfile, one profile file per MPI rank.

    mpiexec -n 2 python -m bench.profile_rank OUTDIR render INPUT -o movie.mp4 ...

Each rank writes ``OUTDIR/rank<r>.prof`` (pstats format) and
``OUTDIR/rank<r>.txt`` (the functions with the most own time). The rank is
read from the launcher's environment (``PMI_RANK`` for MPICH's Hydra) so that
MPI need not be initialised before kvis does it. Functions implemented in C,
such as VTK's ``Render`` or PyAV's ``encode``, appear as single entries with
their whole time.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
from pathlib import Path

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
TOP_FUNCTIONS = 18


def launcher_rank() -> int:
    """Return this process's rank as the MPI launcher set it, 0 when run alone."""
    for name in RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


def top_functions(stats: pstats.Stats, count: int = TOP_FUNCTIONS) -> str:
    """Return the ``count`` functions with the most own time, as pstats prints them."""
    buffer = io.StringIO()
    stats.stream = buffer
    stats.sort_stats("tottime").print_stats(count)
    lines = buffer.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    header = next((line.strip() for line in lines if "function calls" in line), "")
    return "\n".join([header, *lines[start:]]).rstrip() + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    rank = launcher_rank()

    from kvis_parallel.cli import main as kvis_main

    profiler = cProfile.Profile()
    status = 1
    try:
        status = profiler.runcall(kvis_main, argv[1:])
    finally:
        profiler.dump_stats(outdir / f"rank{rank}.prof")
        stats = pstats.Stats(str(outdir / f"rank{rank}.prof"))
        (outdir / f"rank{rank}.txt").write_text(top_functions(stats))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
