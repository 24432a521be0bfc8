#!/usr/bin/env python3
"""Synthetic foamToVTK time series in the LEGACY layout (numpy only).

Writes ``OUTDIR/VTK/<case>_<index>.vtk`` (UNSTRUCTURED_GRID of hexahedra) and
one POLYDATA file per boundary patch, ``OUTDIR/VTK/<patch>/<patch>_<index>.vtk``,
byte-for-byte in the layout foamToVTK writes (see datasets/README.md for the
facts this is modelled on; tests/test_datasets.py checks that the writer
reproduces a real foamToVTK v1912 file exactly from its own arrays).

Two flavours:

* default: OpenFOAM v1912 ``foamToVTK -legacy`` -- dataset-level
  ``FIELD FieldData 1`` / ``TimeValue 1 1 float``, ``CELL_DATA n`` +
  ``FIELD FieldData K`` (p, U; ``cellID``/``patchID`` int first with
  ``cell_id=True`` as ``-with-ids`` does), ``POINT_DATA m`` + ``FIELD
  FieldData K`` (the same fields at the points), blank line between sections,
  ASCII with 6 values per line, plus the ``<case>.vtk.series`` file v1912
  writes (with its unresolvable ``"_<index>"`` names, as v1912 does).
* ``old_foam=True``: foamToVTK 2.x -- no TimeValue, ``FIELD attributes K``
  with ``cellID`` (int) first, ``patchID`` (float) first on patches,
  ``POINT_DATA  m`` (two spaces), no blank lines, ASCII 10 values per line
  (11 on the first), the empty ``frontAndBack`` patch of 2-D meshes written
  as geometry without data, no .series file, and time 0 carrying a different
  field set (``U`` only, no ``p``) as a case's ``0/`` folder often does.

Use as a module::

    from datasets.synthetic import write_series
    vtk_dir = write_series(tmp_path, cells=2000, steps=5, dims=2)

or from the shell::

    python datasets/synthetic.py OUTDIR --cells 20000 --steps 200 --dims 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "HexMesh",
    "block_mesh",
    "mesh_dims",
    "patch_faces",
    "local_patch",
    "write_legacy",
    "read_legacy",
    "write_series",
    "series_times",
    "main",
]

VTK_HEXAHEDRON = 12

# ---------------------------------------------------------------------------
# mesh
# ---------------------------------------------------------------------------


@dataclass
class HexMesh:
    """A blockMesh-like single block: nx*ny*nz hexahedra on [0,L]^3."""

    nx: int
    ny: int
    nz: int
    lengths: tuple[float, float, float]
    points: np.ndarray  # (nPoints, 3) float64
    cells: np.ndarray  # (nCells, 8) int32, VTK hexahedron order
    centres: np.ndarray  # (nCells, 3) float64
    _patches: dict = field(default_factory=dict, repr=False)
    _encoded: dict = field(default_factory=dict, repr=False)

    @property
    def n_cells(self) -> int:
        return self.cells.shape[0]

    @property
    def n_points(self) -> int:
        return self.points.shape[0]

    def pid(self, i, j, k):
        return i + (self.nx + 1) * (j + (self.ny + 1) * k)

    def patch(self, name: str):
        """(global point ids, local faces, face centres) of a named patch."""
        if name not in self._patches:
            faces = patch_faces(self, name)
            ids, local = local_patch(faces)
            centres = self.points[faces].mean(axis=1)
            self._patches[name] = (ids, local, centres)
        return self._patches[name]


def mesh_dims(cells: int, dims: int) -> tuple[int, int, int]:
    """Grid sizes close to ``cells`` in total; x is twice as long as y (and z)."""
    cells = max(int(cells), 1)
    if dims == 2:
        ny = max(1, round(math.sqrt(cells / 2)))
        nx = max(1, round(cells / ny))
        return nx, ny, 1
    if dims == 3:
        ny = max(1, round((cells / 2) ** (1 / 3)))
        nz = ny
        nx = max(1, round(cells / (ny * nz)))
        return nx, ny, nz
    raise ValueError(f"dims must be 2 or 3, not {dims!r}")


def block_mesh(nx: int, ny: int, nz: int, lengths=None) -> HexMesh:
    """Points and hexahedra in the order blockMesh + foamToVTK produce them.

    Points: i fastest, then j, then k. Cells likewise. Each hexahedron's
    vertices are listed as foamToVTK v1912 lists those of a blockMesh block
    (checked against real 2-D and 3-D foamToVTK output, see the tests).
    For 2-D meshes (nz == 1) the z thickness is one cell size in x, as in
    OpenFOAM's one-cell-thick 2-D cases.
    """
    if lengths is None:
        lx, ly = 2.0, 1.0
        lz = 1.0 if nz > 1 else lx / nx
        lengths = (lx, ly, lz)
    lx, ly, lz = (float(v) for v in lengths)
    xs = np.linspace(0.0, lx, nx + 1)
    ys = np.linspace(0.0, ly, ny + 1)
    zs = np.linspace(0.0, lz, nz + 1)
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    points = np.column_stack([x.ravel(), y.ravel(), z.ravel()])

    sx, sy, sz = 1, nx + 1, (nx + 1) * (ny + 1)
    k, j, i = np.meshgrid(
        np.arange(nz, dtype=np.int64),
        np.arange(ny, dtype=np.int64),
        np.arange(nx, dtype=np.int64),
        indexing="ij",
    )
    base = (i * sx + j * sy + k * sz).ravel()
    # foamToVTK takes each cell's shape from OpenFOAM's cellMatcher, which
    # starts from the cell's first face: its lowest-numbered owned face. For a
    # blockMesh block that is the internal x+ face, else y+, else z+, else
    # its first boundary face (movingWall, y+, with the cavity patch order).
    # The hexahedron's base is that face, reversed; the top is the opposite
    # face.
    offsets = np.array(
        [
            [sx, sx + sz, sx + sy + sz, sx + sy, 0, sz, sy + sz, sy],  # x+
            [sy, sx + sy, sx + sy + sz, sy + sz, 0, sx, sx + sz, sz],  # y+
            [sz, sy + sz, sx + sy + sz, sx + sz, 0, sy, sx + sy, sx],  # z+
        ],
        dtype=np.int64,
    )
    i, j, k = i.ravel(), j.ravel(), k.ravel()
    kind = np.where(
        i < nx - 1, 0, np.where(j < ny - 1, 1, np.where(k < nz - 1, 2, 1))
    )
    cells = (base[:, None] + offsets[kind]).astype(np.int32)

    cx = (xs[:-1] + xs[1:]) / 2
    cy = (ys[:-1] + ys[1:]) / 2
    cz = (zs[:-1] + zs[1:]) / 2
    z, y, x = np.meshgrid(cz, cy, cx, indexing="ij")
    centres = np.column_stack([x.ravel(), y.ravel(), z.ravel()])
    return HexMesh(nx, ny, nz, (lx, ly, lz), points, cells, centres)


def _faces(mesh: HexMesh, plane: str) -> np.ndarray:
    """Boundary faces of one side, vertices ordered for an outward normal."""
    nx, ny, nz = mesh.nx, mesh.ny, mesh.nz
    P = mesh.pid
    if plane in ("x-", "x+"):
        k, j = np.meshgrid(np.arange(nz), np.arange(ny), indexing="ij")
        k, j = k.ravel(), j.ravel()
        if plane == "x-":
            return np.stack([P(0, j, k), P(0, j, k + 1), P(0, j + 1, k + 1), P(0, j + 1, k)], 1)
        return np.stack([P(nx, j, k), P(nx, j + 1, k), P(nx, j + 1, k + 1), P(nx, j, k + 1)], 1)
    # face order within a side as blockMesh writes it (checked on a 3-D
    # cavity): x sides j fastest, y sides k fastest, z sides j fastest
    if plane in ("y-", "y+"):
        i, k = np.meshgrid(np.arange(nx), np.arange(nz), indexing="ij")
        k, i = k.ravel(), i.ravel()
        if plane == "y-":
            return np.stack([P(i, 0, k), P(i + 1, 0, k), P(i + 1, 0, k + 1), P(i, 0, k + 1)], 1)
        return np.stack([P(i, ny, k), P(i, ny, k + 1), P(i + 1, ny, k + 1), P(i + 1, ny, k)], 1)
    if plane in ("z-", "z+"):
        i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        j, i = j.ravel(), i.ravel()
        if plane == "z-":
            return np.stack([P(i, j, 0), P(i, j + 1, 0), P(i + 1, j + 1, 0), P(i + 1, j, 0)], 1)
        return np.stack([P(i, j, nz), P(i + 1, j, nz), P(i + 1, j + 1, nz), P(i, j + 1, nz)], 1)
    raise ValueError(plane)


def patch_faces(mesh: HexMesh, name: str) -> np.ndarray:
    """Faces (nFaces, 4) of the cavity-style patches.

    movingWall: y = Ly. fixedWalls: x = 0, x = Lx, y = 0 (and z = 0, z = Lz
    in 3-D). frontAndBack: z = 0 and z = Lz of a 2-D mesh (an ``empty`` patch
    in OpenFOAM: v1912 skips it, 2.x writes its geometry without data).
    """
    if name == "movingWall":
        sides = ["y+"]
    elif name == "fixedWalls":
        sides = ["x-", "x+", "y-"] + (["z-", "z+"] if mesh.nz > 1 else [])
    elif name == "frontAndBack":
        sides = ["z-", "z+"]
    else:
        raise ValueError(f"unknown patch {name!r}")
    return np.concatenate([_faces(mesh, s) for s in sides]).astype(np.int64)


def local_patch(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber patch points in order of first appearance (OpenFOAM's
    PrimitivePatch::meshPoints / localFaces)."""
    flat = faces.ravel()
    uniq, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return uniq[order], rank[inverse].reshape(faces.shape).astype(np.int32)


# ---------------------------------------------------------------------------
# legacy VTK writer
# ---------------------------------------------------------------------------


def _ascii_block(values: np.ndarray, old: bool) -> bytes:
    flat = np.asarray(values).ravel()
    if flat.dtype.kind in "iu":
        strs = [str(v) for v in flat.tolist()]
    else:
        strs = ["%.6g" % v for v in flat.astype(np.float64).tolist()]
    if not strs:
        return b"\n"
    if old:
        # foamToVTK 2.x writeFuns::write: newline after i>0 && i%10==0
        seps = [" "] * len(strs)
        seps[10::10] = ["\n"] * len(seps[10::10])
        return ("".join(s + t for s, t in zip(strs, seps)) + "\n").encode()
    lines = [" ".join(strs[i : i + 6]) for i in range(0, len(strs), 6)]
    return ("\n".join(lines) + "\n").encode()


def _block(values: np.ndarray, ascii: bool, old: bool) -> bytes:
    """One data block followed by its newline, as foamToVTK writes it."""
    arr = np.asarray(values)
    if ascii:
        return _ascii_block(arr, old)
    dt = ">i4" if arr.dtype.kind in "iu" else ">f4"
    return np.ascontiguousarray(arr, dtype=dt).tobytes() + b"\n"


def _fmt_time(t: float) -> str:
    return "%.6g" % t


def _field_blocks(fields, n: int, ascii: bool, old: bool) -> list[bytes]:
    out = []
    for name, arr in fields:
        arr = np.asarray(arr)
        ncomp = 1 if arr.ndim == 1 else arr.shape[1]
        if arr.shape[0] != n:
            raise ValueError(f"field {name}: {arr.shape[0]} values for {n} items")
        kind = "int" if arr.dtype.kind in "iu" else "float"
        out.append(f"{name} {ncomp} {n} {kind}\n".encode())
        out.append(_block(arr, ascii, old))
    return out


def encode_geometry(
    dataset: str, points: np.ndarray, conn: np.ndarray, ascii: bool, old: bool
) -> bytes:
    """POINTS + CELLS/CELL_TYPES (UNSTRUCTURED_GRID) or POLYGONS (POLYDATA)."""
    sep = b"" if old else b"\n"
    n, k = conn.shape
    parts = [f"POINTS {points.shape[0]} float\n".encode(), _block(np.asarray(points, np.float32), ascii, old)]
    flat = np.empty((n, k + 1), dtype=np.int32)
    flat[:, 0] = k
    flat[:, 1:] = conn
    if dataset == "UNSTRUCTURED_GRID":
        parts += [sep, f"CELLS {n} {n * (k + 1)}\n".encode(), _block(flat, ascii, old)]
        types = np.full(n, VTK_HEXAHEDRON, dtype=np.int32)
        parts += [sep, f"CELL_TYPES {n}\n".encode(), _block(types, ascii, old)]
    elif dataset == "POLYDATA":
        parts += [sep, f"POLYGONS {n} {n * (k + 1)}\n".encode(), _block(flat, ascii, old)]
    else:
        raise ValueError(dataset)
    return b"".join(parts)


def write_legacy(
    path,
    title: str,
    dataset: str,
    points: np.ndarray | None = None,
    conn: np.ndarray | None = None,
    cell_fields=(),
    point_fields=(),
    time: float | None = None,
    ascii: bool = False,
    old_foam: bool = False,
    geometry: bytes | None = None,
    n_cells: int | None = None,
    n_points: int | None = None,
) -> Path:
    """Write one legacy .vtk file in foamToVTK's layout.

    ``dataset`` is ``UNSTRUCTURED_GRID`` (hexahedra) or ``POLYDATA`` (quads).
    ``cell_fields``/``point_fields`` are ``(name, array)`` pairs written in
    order; int arrays are written as ``int``, anything else as ``float``
    (32-bit, big-endian when binary). ``time`` is written as the dataset's
    TimeValue (v1912 flavour only). ``geometry`` may carry the pre-encoded
    output of :func:`encode_geometry` (then give ``n_cells``/``n_points``).
    Empty ``cell_fields`` writes no CELL_DATA/POINT_DATA sections at all.
    """
    path = Path(path)
    if geometry is None:
        geometry = encode_geometry(dataset, points, conn, ascii, old_foam)
        n_cells, n_points = conn.shape[0], points.shape[0]
    sep = b"" if old_foam else b"\n"
    label = "attributes" if old_foam else "FieldData"
    parts = [
        f"# vtk DataFile Version 2.0\n{title}\n{'ASCII' if ascii else 'BINARY'}\n"
        f"DATASET {dataset}\n".encode()
    ]
    if time is not None and not old_foam:
        parts.append(b"FIELD FieldData 1\nTimeValue 1 1 float\n")
        parts.append(_block(np.array([time], np.float32), ascii, old_foam))
        parts.append(sep)
    parts.append(geometry)
    if cell_fields:
        parts.append(sep)
        parts.append(f"CELL_DATA {n_cells}\nFIELD {label} {len(cell_fields)}\n".encode())
        parts += _field_blocks(cell_fields, n_cells, ascii, old_foam)
        if point_fields:
            parts.append(sep)
            pd = "POINT_DATA  " if old_foam else "POINT_DATA "
            parts.append(f"{pd}{n_points}\nFIELD {label} {len(point_fields)}\n".encode())
            parts += _field_blocks(point_fields, n_points, ascii, old_foam)
    with open(path, "wb") as fh:
        fh.writelines(parts)
    return path


def read_legacy(path) -> dict:
    """Minimal numpy parser for foamToVTK-layout legacy files (binary or
    ASCII, either flavour): returns title, dataset, ascii, time (or None),
    points, conn (cells/polygons without the leading count), cell_fields and
    point_fields as lists of (name, array). Enough to round-trip a file
    through :func:`write_legacy`; not a general VTK reader."""
    b = Path(path).read_bytes()
    pos = 0

    def line() -> str:
        nonlocal pos
        end = b.index(b"\n", pos)
        text = b[pos:end].decode("ascii")
        pos = end + 1
        return text

    def data(count: int, kind: str) -> np.ndarray:
        nonlocal pos
        if is_ascii:
            vals = []
            while len(vals) < count:
                vals += line().split()
            dtype = np.int32 if kind == "int" else np.float32
            return np.array(vals[:count], dtype=np.float64).astype(dtype)
        dt = ">i4" if kind == "int" else ">f4"
        arr = np.frombuffer(b, dtype=dt, count=count, offset=pos)
        pos += 4 * count
        return arr.astype(dt[1:])

    line()
    out = {"title": line()}
    is_ascii = line().strip() == "ASCII"
    out["ascii"] = is_ascii
    out["dataset"] = line().split()[1]
    out.update(time=None, cell_fields=[], point_fields=[], conn=None)
    current = None
    while pos < len(b):
        words = line().split()
        if not words or words[0] == "FIELD":
            continue
        key = words[0]
        if key == "POINTS":
            out["points"] = data(3 * int(words[1]), "float").reshape(-1, 3)
        elif key in ("CELLS", "POLYGONS"):
            n, size = int(words[1]), int(words[2])
            flat = data(size, "int")
            if size % n:
                raise ValueError("mixed cell sizes are not supported")
            out["conn"] = flat.reshape(n, -1)[:, 1:]
        elif key == "CELL_TYPES":
            out["cell_types"] = data(int(words[1]), "int")
        elif key == "CELL_DATA":
            current = out["cell_fields"]
        elif key == "POINT_DATA":
            current = out["point_fields"]
        else:
            name, ncomp, n, kind = words[0], int(words[1]), int(words[2]), words[3]
            arr = data(ncomp * n, kind)
            if ncomp > 1:
                arr = arr.reshape(n, ncomp)
            if current is None and name == "TimeValue":
                out["time"] = float(arr[0])
            else:
                current.append((name, arr))
    return out


# ---------------------------------------------------------------------------
# fields
# ---------------------------------------------------------------------------


def _fields(xyz: np.ndarray, t: float, lengths, period: float, three_d: bool):
    """Travelling wave along x: p scalar, U vector (Uz = 0 in 2-D); float32."""
    lx, ly, lz = lengths
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    phase = 2 * np.pi * (2.0 * x / lx - t / period)
    p = np.sin(phase) * np.cos(np.pi * y / ly)
    if three_d:
        p = p + 0.25 * np.sin(2 * np.pi * z / lz - phase)
    U = np.empty((xyz.shape[0], 3), dtype=np.float32)
    U[:, 0] = 1.0 + 0.5 * p
    U[:, 1] = 0.5 * np.cos(phase) * np.sin(np.pi * y / ly)
    U[:, 2] = 0.1 * np.sin(phase) if three_d else 0.0
    return p.astype(np.float32), U


def series_times(steps: int, dt: float, index_stride: int = 1, irregular: bool = False):
    """(index, time) pairs: time = step*dt, index = step*index_stride, or
    with ``irregular`` increments cycling through 1..3 times the stride (like
    an adaptive time step)."""
    out, index = [], 0
    for s in range(steps):
        out.append((index, s * dt))
        index += index_stride * ((s % 3) + 1 if irregular else 1)
    return out


def write_series(
    outdir,
    cells: int = 20000,
    steps: int = 10,
    dims: int = 2,
    dt: float = 0.01,
    index_stride: int = 1,
    ascii: bool = False,
    grow: float = 0.0,
    nan_step: int | None = None,
    old_foam: bool = False,
    case: str = "synthetic",
    cell_id: bool = False,
    patches: bool = True,
    point_data: bool = True,
    irregular: bool = False,
    series_file: bool | None = None,
) -> Path:
    """Write a synthetic foamToVTK legacy series; returns ``outdir/VTK``.

    cells: approximate total cell count (of the first step); steps: number of
    written times; dims: 2 (one cell thick in z) or 3; dt: time between
    written steps; index_stride: file index increment per step (so the index
    differs from the time); grow: the last step has (1+grow) times the cells
    of the first, growing linearly; nan_step: step whose p and U are all NaN
    (cell, point and patch data); old_foam: foamToVTK 2.x layout (see module
    doc); cell_id: v1912 ``-with-ids`` (cellID/patchID first); patches:
    write movingWall and fixedWalls; point_data: write POINT_DATA;
    irregular: irregular index increments; series_file: write
    ``<case>.vtk.series`` (default: yes for v1912, no for old_foam).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    vtk_dir = Path(outdir) / "VTK"
    vtk_dir.mkdir(parents=True, exist_ok=True)
    if series_file is None:
        series_file = not old_foam
    patch_names = []
    if patches:
        patch_names = ["movingWall", "fixedWalls"]
        if old_foam and dims == 2:
            patch_names.append("frontAndBack")
        for name in patch_names:
            (vtk_dir / name).mkdir(exist_ok=True)

    meshes: dict[tuple, HexMesh] = {}
    period = max(steps, 2) * dt / 2.0  # the wave travels two wavelengths
    times = series_times(steps, dt, index_stride, irregular)
    for s, (index, t) in enumerate(times):
        frac = s / (steps - 1) if steps > 1 else 0.0
        dims_s = mesh_dims(cells * (1.0 + grow * frac), dims)
        if dims_s not in meshes:
            if grow:
                meshes.clear()  # keep at most one mesh in memory
            # same physical domain for every step, whatever the resolution
            first = mesh_dims(cells, dims)
            lz = 1.0 if dims == 3 else 2.0 / first[0]
            meshes[dims_s] = block_mesh(*dims_s, lengths=(2.0, 1.0, lz))
        mesh = meshes[dims_s]
        _write_step(
            vtk_dir, case, mesh, s, index, t, period, ascii, old_foam,
            nan=(nan_step is not None and s == nan_step), cell_id=cell_id,
            patch_names=patch_names, point_data=point_data,
        )
    if series_file:
        _write_vtk_series(vtk_dir / f"{case}.vtk.series", times)
    return vtk_dir


def _write_vtk_series(path: Path, times) -> None:
    # v1912 writes the names without the case prefix and extension ("_20"),
    # so they do not resolve; reproduced on purpose, see datasets/README.md.
    rows = ",\n".join(
        f'    {{ "name" : "_{i}", "time" : {_fmt_time(t)} }}' for i, t in times
    )
    path.write_text(
        '{\n  "file-series-version" : "1.0",\n  "files" : [\n' + rows + "\n  ]\n}\n"
    )


def _encoded(mesh: HexMesh, key, dataset, points, conn, ascii, old):
    k = (key, ascii, old)
    if k not in mesh._encoded:
        mesh._encoded[k] = encode_geometry(dataset, points, conn, ascii, old)
    return mesh._encoded[k]


def _write_step(vtk_dir, case, mesh, s, index, t, period, ascii, old, nan,
                cell_id, patch_names, point_data):
    def values(xyz):
        p, U = _fields(xyz, t, mesh.lengths, period, mesh.nz > 1)
        if nan:
            p[:] = np.nan
            U[:] = np.nan
        if old and s == 0:
            return [("U", U)]  # time 0 of an old case: no p yet
        return [("p", p), ("U", U)]

    cf = values(mesh.centres)
    pf = values(mesh.points) if point_data else []
    if old:
        cf = [("cellID", np.arange(mesh.n_cells, dtype=np.int32))] + cf
    elif cell_id:
        cf = [("cellID", np.arange(mesh.n_cells, dtype=np.int32))] + cf
    geom = _encoded(mesh, "internal", "UNSTRUCTURED_GRID", mesh.points, mesh.cells, ascii, old)
    write_legacy(
        vtk_dir / f"{case}_{index}.vtk", case, "UNSTRUCTURED_GRID",
        cell_fields=cf, point_fields=pf, time=t, ascii=ascii, old_foam=old,
        geometry=geom, n_cells=mesh.n_cells, n_points=mesh.n_points,
    )
    for patch_id, name in enumerate(patch_names):
        ids, local, centres = mesh.patch(name)
        geom = _encoded(mesh, name, "POLYDATA", mesh.points[ids], local, ascii, old)
        if name == "frontAndBack":  # empty patch: geometry only (2.x)
            cf = []
            pf = []
        else:
            cf = values(centres)
            pf = values(mesh.points[ids]) if point_data else []
            if old:
                cf = [("patchID", np.full(len(local), patch_id, np.float32))] + cf
            elif cell_id:
                cf = [("patchID", np.full(len(local), patch_id, np.int32))] + cf
        write_legacy(
            vtk_dir / name / f"{name}_{index}.vtk", name, "POLYDATA",
            cell_fields=cf, point_fields=pf, time=t, ascii=ascii, old_foam=old,
            geometry=geom, n_cells=len(local), n_points=len(ids),
        )


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Write a synthetic foamToVTK legacy time series (OUTDIR/VTK/...)."
    )
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--cells", type=int, default=20000, help="approximate cell count (default 20000)")
    ap.add_argument("--steps", type=int, default=10, help="number of written times (default 10)")
    ap.add_argument("--dims", type=int, choices=(2, 3), default=2)
    ap.add_argument("--dt", type=float, default=0.01, help="time between steps (default 0.01)")
    ap.add_argument("--index-stride", type=int, default=1, help="file index increment per step")
    ap.add_argument("--irregular", action="store_true", help="irregular index increments")
    ap.add_argument("--ascii", action="store_true", help="ASCII instead of big-endian binary")
    ap.add_argument("--grow", type=float, default=0.0,
                    help="last step has (1+GROW) times the cells of the first")
    ap.add_argument("--nan-step", type=int, default=None, help="step whose fields are all NaN")
    ap.add_argument("--old-foam", action="store_true", help="foamToVTK 2.x layout")
    ap.add_argument("--cell-id", action="store_true", help="cellID/patchID fields (-with-ids)")
    ap.add_argument("--case", default="synthetic", help="case name (file prefix)")
    ap.add_argument("--no-patches", action="store_true")
    ap.add_argument("--no-point-data", action="store_true")
    a = ap.parse_args(argv)
    t0 = _time.perf_counter()
    out = write_series(
        a.outdir, cells=a.cells, steps=a.steps, dims=a.dims, dt=a.dt,
        index_stride=a.index_stride, ascii=a.ascii, grow=a.grow,
        nan_step=a.nan_step, old_foam=a.old_foam, case=a.case,
        cell_id=a.cell_id, patches=not a.no_patches,
        point_data=not a.no_point_data, irregular=a.irregular,
    )
    nx, ny, nz = mesh_dims(a.cells, a.dims)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(
        f"wrote {a.steps} steps of {nx}x{ny}x{nz} = {nx * ny * nz} cells "
        f"({size / 1e6:.1f} MB) to {out} in {_time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
