"""Benchmark workloads: the committed foamToVTK samples, a longer transient run and synthetic series.

A workload is one time series plus the colouring every tool must use: the
field, its association and a fixed colour range. Generated series (the
transient OpenFOAM run and the synthetic ones) are written once under the
cache folder (``bench/out/workloads`` by default, git-ignored) and reused.

The colour range is computed once from the data, before any timed run, and
cached in ``<cache>/<name>.json``. Every tool gets the same ``MIN,MAX``, so
none of them spends time on a pre-pass of its own.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvis_parallel.series import INTERNAL, discover_series

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS = REPO_ROOT / "datasets"
DEFAULT_CACHE = REPO_ROOT / "bench" / "out" / "workloads"

# Scalar fields tried in order when a workload names none; OpenFOAM's usual
# names first. Vector fields are avoided because the three tools reduce them
# to a scalar in different ways.
PREFERRED_FIELDS = ("p", "alpha.water", "p_rgh", "T", "k", "nut", "scalar", "s")
ID_ARRAYS = ("cellID", "vtkOriginalCellIds", "vtkGhostType")


class WorkloadUnavailable(RuntimeError):
    """A workload cannot be prepared here (a generator script or tool is missing)."""


@dataclass(frozen=True)
class WorkloadSpec:
    """How to obtain one workload and how to colour it."""

    name: str
    description: str
    dims: int
    create: Callable[[Path], Path]
    fields: tuple[str, ...] = PREFERRED_FIELDS
    association: str = "cell"


@dataclass(frozen=True)
class Workload:
    """A prepared time series with the colouring shared by every tool.

    ``files`` are the internal-mesh files, one per time step in time order.
    The peers render exactly these files. kvis reads ``input_dir`` with
    ``--parts internal``, which selects the same files.
    """

    name: str
    description: str
    input_dir: Path
    dims: int
    field: str
    association: str
    scalar_range: tuple[float, float]
    cells: int
    files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def steps(self) -> int:
        return len(self.files)

    @property
    def range_text(self) -> str:
        """The colour range as the ``MIN,MAX`` text the command lines take."""
        low, high = self.scalar_range
        return f"{low!r},{high!r}"


def _committed(relative: str) -> Callable[[Path], Path]:
    def create(cache: Path) -> Path:
        path = DATASETS / relative
        if not path.is_dir():
            raise WorkloadUnavailable(f"sample {path} not found; regenerate it with datasets/make_foam_samples.sh")
        return path

    return create


def _transient(cache: Path) -> Path:
    outdir = cache / "transient"
    if (outdir / ".complete").exists():
        return _vtk_folder(outdir)

    script = DATASETS / "make_transient.sh"
    if not script.exists():
        raise WorkloadUnavailable(f"{script} not found; the transient workload needs it")

    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    logger.info("generating the transient OpenFOAM run under %s (takes a few minutes)", outdir)
    completed = subprocess.run(["bash", str(script), str(outdir)], capture_output=True, text=True)
    if completed.returncode != 0:
        raise WorkloadUnavailable(
            f"{script} failed with status {completed.returncode}: {completed.stderr.strip()[-500:]}"
        )
    (outdir / ".complete").write_text("ok\n")
    return _vtk_folder(outdir)


def _vtk_folder(outdir: Path) -> Path:
    """Return the VTK folder a generator wrote: ``outdir/VTK``, one below, or ``outdir`` itself."""
    if (outdir / "VTK").is_dir():
        return outdir / "VTK"
    found = sorted(outdir.glob("*/VTK"))
    return found[0] if found else outdir


def _synthetic(name: str, cells: int, steps: int, dims: int) -> Callable[[Path], Path]:
    def create(cache: Path) -> Path:
        outdir = cache / name
        marker = outdir / ".complete"
        parameters = f"cells={cells} steps={steps} dims={dims}\n"
        if marker.exists() and marker.read_text() == parameters:
            return _vtk_folder(outdir)

        shutil.rmtree(outdir, ignore_errors=True)
        outdir.mkdir(parents=True)
        logger.info("writing synthetic series %s (%s)", name, parameters.strip())
        _load_synthetic_module().write_series(outdir, cells=cells, steps=steps, dims=dims)
        marker.write_text(parameters)
        return _vtk_folder(outdir)

    return create


def _load_synthetic_module():
    path = DATASETS / "synthetic.py"
    if not path.exists():
        raise WorkloadUnavailable(f"{path} not found; the synthetic workloads need it")
    spec = importlib.util.spec_from_file_location("kvis_datasets_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SPECS: dict[str, WorkloadSpec] = {
    spec.name: spec
    for spec in (
        WorkloadSpec("cavity", "icoFoam cavity, legacy layout (committed sample)", 2,
                     _committed("cavity/VTK"), fields=("p",)),
        WorkloadSpec("damBreak", "interFoam damBreak, XML layout (committed sample)", 2,
                     _committed("damBreak/VTK"), fields=("alpha.water",)),
        WorkloadSpec("transient", "interFoam damBreak, 101 steps, legacy layout (datasets/make_transient.sh)",
                     2, _transient, fields=("alpha.water", "p")),
        WorkloadSpec("synthetic-2d", "synthetic 2-D series, 200 steps", 2,
                     _synthetic("synthetic-2d", cells=40_000, steps=200, dims=2)),
        WorkloadSpec("synthetic-3d", "synthetic 3-D series, about 1 million cells", 3,
                     _synthetic("synthetic-3d", cells=1_000_000, steps=10, dims=3)),
        WorkloadSpec("memory-100", "small synthetic 2-D series, 100 steps (memory check)", 2,
                     _synthetic("memory-100", cells=2_000, steps=100, dims=2)),
        WorkloadSpec("memory-2000", "small synthetic 2-D series, 2,000 steps (memory check)", 2,
                     _synthetic("memory-2000", cells=2_000, steps=2_000, dims=2)),
        WorkloadSpec("tiny", "tiny synthetic 2-D series for tests, 4 steps", 2,
                     _synthetic("tiny", cells=200, steps=4, dims=2)),
    )
}


def prepare(name: str, cache: Path = DEFAULT_CACHE) -> Workload:
    """Create (or reuse) a workload's data and work out its file list, field and colour range.

    Parameters
    ----------
    name
        A key of :data:`SPECS`.
    cache
        Folder for generated series and the cached field metadata.

    Returns
    -------
    Workload

    Raises
    ------
    KeyError
        If ``name`` is not a known workload.
    WorkloadUnavailable
        If the data cannot be found or generated here.
    """
    spec = SPECS[name]
    cache.mkdir(parents=True, exist_ok=True)
    input_dir = spec.create(cache)

    files = internal_files(input_dir)
    if not files:
        raise WorkloadUnavailable(f"no internal-mesh files found under {input_dir}")

    metadata = _cached_metadata(cache / f"{name}.json", input_dir, files, spec)
    return Workload(
        name=name,
        description=spec.description,
        input_dir=input_dir,
        dims=spec.dims,
        field=metadata["field"],
        association=spec.association,
        scalar_range=tuple(metadata["range"]),
        cells=metadata["cells"],
        files=tuple(files),
    )


def internal_files(input_dir: Path) -> list[Path]:
    """Return the internal-mesh file of each time step, in time order, as kvis orders them."""
    series = discover_series(input_dir)
    return [step.parts[INTERNAL] if INTERNAL in step.parts else step.first_file() for step in series.steps]


def _cached_metadata(path: Path, input_dir: Path, files: Sequence[Path], spec: WorkloadSpec) -> dict:
    key = {"input_dir": str(input_dir), "steps": len(files), "last": str(files[-1]),
           "fields": list(spec.fields), "association": spec.association}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached

    field_name, scalar_range, cells = scan_field(files, spec.fields, spec.association)
    metadata = {"key": key, "field": field_name, "range": list(scalar_range), "cells": cells}
    path.write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def scan_field(files: Sequence[Path], preferred: Sequence[str], association: str
               ) -> tuple[str, tuple[float, float], int]:
    """Choose the field and compute its range over all steps.

    Returns
    -------
    tuple
        The field name, its (min, max) over every step (magnitude for vectors),
        and the cell count of the last step.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy
    import numpy

    field_name: str | None = None
    low, high = math.inf, -math.inf
    cells = 0
    for path in files:
        dataset = _read_dataset(path)
        arrays = dataset.GetCellData() if association == "cell" else dataset.GetPointData()
        if field_name is None:
            field_name = _choose_field(arrays, preferred, path)

        array = arrays.GetArray(field_name)
        if array is None:
            continue
        values = vtk_to_numpy(array).astype(numpy.float64)
        if values.ndim == 2:
            values = numpy.linalg.norm(values, axis=1)
        values = values[numpy.isfinite(values)]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        cells = dataset.GetNumberOfCells()

    if not math.isfinite(low):
        raise WorkloadUnavailable(f"field {field_name!r} has no finite value in {files[0].parent}")
    if low == high:
        high = low + 1.0
    return field_name, (low, high), cells


def _choose_field(arrays, preferred: Sequence[str], path: Path) -> str:
    names = [arrays.GetArrayName(i) for i in range(arrays.GetNumberOfArrays())]
    for name in preferred:
        if name in names:
            return name

    scalars = [name for name in names
               if name not in ID_ARRAYS and arrays.GetArray(name).GetNumberOfComponents() == 1]
    if not scalars:
        raise WorkloadUnavailable(f"no scalar field in {path}; arrays found: {names}")
    return scalars[0]


def _read_dataset(path: Path):
    if path.suffix == ".vtk":
        from vtkmodules.vtkIOLegacy import vtkDataSetReader

        reader = vtkDataSetReader()
        reader.ReadAllScalarsOn()
        reader.ReadAllVectorsOn()
        reader.ReadAllFieldsOn()
    else:
        from vtkmodules.vtkIOXML import vtkXMLGenericDataObjectReader

        reader = vtkXMLGenericDataObjectReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()
