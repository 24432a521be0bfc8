"""The machine and software versions a benchmark ran on, for the results page."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path


def machine() -> dict:
    """Describe the CPU, core count, memory and operating system."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    memory_gb = float("nan")
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass

    return {"cpu": model, "cores": os.cpu_count() or 1, "memory_gb": round(memory_gb, 1),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def versions() -> dict[str, str]:
    """Return the versions of kvis, its libraries and the peer tools ("not installed" when absent)."""
    found = {}
    for label, distribution in (("kvis", "kvis-parallel"), ("VTK", "vtk"), ("PyAV", "av"),
                                ("mpi4py", "mpi4py"), ("MPICH", "mpich"), ("NumPy", "numpy"),
                                ("PyVista", "pyvista"), ("imageio-ffmpeg", "imageio-ffmpeg")):
        try:
            found[label] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[label] = "not installed"

    found["kvis commit"] = _kvis_commit()
    found["ParaView"] = _first_line(["pvbatch", "--version"], prefix="paraview version ")
    found["ffmpeg"] = _first_line(["ffmpeg", "-version"], prefix="ffmpeg version ")
    return found


def _kvis_commit() -> str:
    """Return the checked-out commit, marked "+ changes" when the working tree differs from it."""
    repository = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repository), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        changed = subprocess.run(["git", "-C", str(repository), "status", "--porcelain", "--", "kvis_parallel"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit} + changes in kvis_parallel" if changed else commit


def _first_line(command: list[str], prefix: str) -> str:
    if shutil.which(command[0]) is None:
        return "not installed"
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"

    for line in output.splitlines():
        if line.lower().startswith(prefix):
            return line[len(prefix):].split()[0]
    return output.strip().splitlines()[0] if output.strip() else "unknown"
