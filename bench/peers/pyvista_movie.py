"""Render a time series to an H.264 movie with the usual PyVista loop.

One off-screen ``Plotter``, ``open_movie`` (imageio-ffmpeg's libx264 writer),
then for each step: ``pyvista.read`` the internal-mesh file, ``add_mesh`` it
under a fixed actor name (which replaces the previous step's actor) with a
fixed colour range, and ``write_frame``::

    python bench/peers/pyvista_movie.py --files-from LIST --field p \\
        --association cell --range=-4,5 --size 1280x720 -o movie.mp4 --summary FILE

PyVista's defaults stay as a user gets them: its theme turns on 8x MSAA
(PyVista 0.49), and ``add_mesh`` and the scalar bar each render once more
besides ``write_frame``. ``--tuned`` shows what a careful user gains: no
anti-aliasing and no extra renders.

Encoder settings are given to ffmpeg so that all three tools encode alike:
libx264, yuv420p, the same CRF and preset, and ``macro_block_size=2`` so that
imageio-ffmpeg keeps 1920x1080 instead of padding it to a multiple of 16.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

started = time.perf_counter()

# Without a display, VTK's X window would fail; EGL renders off-screen. A user
# on a headless node sets the same variable (or runs under xvfb-run).
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import pyvista  # noqa: E402  (the import time is part of what is measured)

imported = time.perf_counter()


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files-from", type=Path, required=True,
                        help="text file with one internal-mesh file per line, in time order")
    parser.add_argument("--field", required=True, help="array to colour by")
    parser.add_argument("--association", choices=("cell", "point"), default="cell")
    parser.add_argument("--range", required=True, help="fixed colour range MIN,MAX")
    parser.add_argument("--size", default="1280x720", help="frame size WxH in pixels")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2,
                        help="2 looks straight down +z, 3 uses an isometric view")
    parser.add_argument("--fps", type=int, default=10, help="frames per second of the movie")
    parser.add_argument("--crf", type=int, default=23, help="libx264 constant rate factor")
    parser.add_argument("--preset", default="veryfast", help="libx264 preset")
    parser.add_argument("-o", "--output", type=Path, required=True, help="movie file (.mp4)")
    parser.add_argument("--summary", type=Path, help="write stage times as JSON here")
    parser.add_argument("--tuned", action="store_true",
                        help="turn anti-aliasing off and render only in write_frame")
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    files = [line.strip() for line in arguments.files_from.read_text().splitlines() if line.strip()]
    width, height = (int(value) for value in arguments.size.lower().split("x"))
    low, high = (float(value) for value in arguments.range.split(","))
    preference = "cell" if arguments.association == "cell" else "point"
    stages = {"read": 0.0, "add_mesh": 0.0, "write_frame": 0.0}

    plotter = pyvista.Plotter(off_screen=True, window_size=(width, height))
    if arguments.tuned:
        plotter.disable_anti_aliasing()
    plotter.open_movie(str(arguments.output), framerate=arguments.fps, quality=None,
                       macro_block_size=2, codec="libx264",
                       output_params=["-crf", str(arguments.crf), "-preset", arguments.preset])

    for index, path in enumerate(files):
        tick = time.perf_counter()
        mesh = pyvista.read(path)
        read_done = time.perf_counter()

        plotter.add_mesh(mesh, scalars=arguments.field, preference=preference, clim=(low, high),
                         cmap="viridis", name="flow", scalar_bar_args={"title": arguments.field},
                         render=not arguments.tuned)
        if index == 0:
            if arguments.dims == 2:
                plotter.view_xy()
                plotter.enable_parallel_projection()
            else:
                plotter.view_isometric()
        mesh_done = time.perf_counter()

        plotter.write_frame()
        frame_done = time.perf_counter()

        stages["read"] += read_done - tick
        stages["add_mesh"] += mesh_done - read_done
        stages["write_frame"] += frame_done - mesh_done

    closing = time.perf_counter()
    plotter.close()
    finished = time.perf_counter()
    stages["close"] = finished - closing
    stages["import"] = imported - started

    if arguments.summary:
        summary = {"frames": len(files), "wall_s": finished - started, "stages": stages}
        arguments.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
