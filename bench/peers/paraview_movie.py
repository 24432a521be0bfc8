"""Render a time series to numbered PNG frames with ParaView, as a ParaView user would script it.

Run under ``pvbatch`` (ParaView's Python, not the benchmark's virtual
environment), usually through ``xvfb-run -a`` so it has a display::

    xvfb-run -a pvbatch bench/peers/paraview_movie.py --files-from LIST \\
        --field p --association cell --range -4,5 --size 1280x720 \\
        --frames DIR --summary FILE

The benchmark then encodes the PNG frames with ``ffmpeg -c:v libx264``. The
script opens the list of internal-mesh files as one file series
(``OpenDataFile``) and colours by one field with a fixed range. The camera
looks down +z for a 2-D case and from an isometric direction for 3-D.
``SaveAnimation`` writes one frame per data time step. Only the standard library and
``paraview.simple`` are used, so it runs under any pvbatch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

started = time.perf_counter()

from paraview.simple import (  # noqa: E402  (the import time is part of what is measured)
    ColorBy,
    GetAnimationScene,
    GetColorTransferFunction,
    GetActiveViewOrCreate,
    OpenDataFile,
    SaveAnimation,
    Show,
)

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
    parser.add_argument("--frames", type=Path, required=True, help="folder for frame.NNNN.png")
    parser.add_argument("--summary", type=Path, help="write stage times as JSON here")
    return parser.parse_args()


def place_camera(view, bounds, dims: int) -> None:
    """Point the camera at the data: straight down +z for 2-D, along (1, 1, 1) for 3-D."""
    centre = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
    direction = (0.0, 0.0, 1.0) if dims == 2 else (1.0, 1.0, 1.0)
    view.CameraFocalPoint = centre
    view.CameraPosition = [c + d for c, d in zip(centre, direction)]
    view.CameraViewUp = [0.0, 1.0, 0.0] if dims == 2 else [0.0, 0.0, 1.0]
    view.CameraParallelProjection = 1 if dims == 2 else 0
    view.ResetCamera()


def main() -> None:
    arguments = parse_arguments()
    files = [line.strip() for line in arguments.files_from.read_text().splitlines() if line.strip()]
    width, height = (int(value) for value in arguments.size.lower().split("x"))
    low, high = (float(value) for value in arguments.range.split(","))
    arguments.frames.mkdir(parents=True, exist_ok=True)

    # Open the whole list as one file series; ParaView makes one time step per file.
    reader = OpenDataFile(files)
    if reader is None:
        raise SystemExit(f"ParaView found no reader for {files[0]}")
    reader.UpdatePipelineInformation()

    view = GetActiveViewOrCreate("RenderView")
    view.ViewSize = [width, height]
    view.OrientationAxesVisibility = 0
    display = Show(reader, view)
    ColorBy(display, ("CELLS" if arguments.association == "cell" else "POINTS", arguments.field))

    lookup_table = GetColorTransferFunction(arguments.field)
    lookup_table.ApplyPreset("Viridis (matplotlib)", True)
    lookup_table.AutomaticRescaleRangeMode = "Never"
    lookup_table.RescaleTransferFunction(low, high)
    display.SetScalarBarVisibility(view, True)

    reader.UpdatePipeline()
    place_camera(view, reader.GetDataInformation().GetBounds(), arguments.dims)

    scene = GetAnimationScene()
    scene.UpdateAnimationUsingDataTimeSteps()
    set_up = time.perf_counter()

    SaveAnimation(str(arguments.frames / "frame.png"), view,
                  ImageResolution=[width, height], FrameWindow=[0, len(files) - 1])
    finished = time.perf_counter()

    if arguments.summary:
        summary = {
            "frames": len(list(arguments.frames.glob("frame.*.png"))),
            "wall_s": finished - started,
            "stages": {"import": imported - started, "setup": set_up - imported,
                       "save_animation": finished - set_up},
        }
        arguments.summary.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    # NOTE: ending with `raise SystemExit(...)` makes pvbatch 5.11 tear down its
    # GLX context in the wrong order (GLXBadContext, exit status 1) after all
    # frames are written, so a normal return ends the script.
    main()
