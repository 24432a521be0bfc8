"""One reusable offscreen render window per process: surface in, RGB frame out.

Call :func:`kvis_parallel.offscreen.configure_offscreen` before importing this
module, because VTK reads the window class from the environment.

:class:`FrameRenderer` builds the window, renderers, mapper, actor, lookup
table, scalar bar and text actors once; :meth:`FrameRenderer.render` only
swaps the mapper's input and the time label. :class:`Layout` keeps the title,
time label and scalar bar off the data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkLookupTable, vtkUnsignedCharArray
from vtkmodules.vtkCommonDataModel import vtkPolyData
from vtkmodules.vtkRenderingAnnotation import vtkScalarBarActor
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkRenderWindow,
    vtkTextActor,
    vtkTextProperty,
    vtkTextRenderer,
)

# Registers the OpenGL implementations of the classes above. Without it VTK
# creates abstract objects that cannot render.
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  isort: skip
# Registers the FreeType text renderer used by the text actors and scalar bar.
import vtkmodules.vtkRenderingFreeType  # noqa: F401  isort: skip

from .camera import CameraSpec
from .colormap import colormap_table_float
from .scene import Scene, format_time_label, scalar_bar_title, widen_constant_range

logger = logging.getLogger(__name__)

SCALARS = "kvis_scalars"
TABLE_SIZE = 256

TEXT_COLOR = (1.0, 1.0, 1.0)
EDGE_COLOR = (0.1, 0.1, 0.1)
LABEL_FORMAT = "%.4g"

# The data viewport keeps at least this fraction of the frame's width and
# height. The text rows and the scalar bar are dropped to make room.
MIN_DATA_FRACTION = 0.6

# VTK's default resolution of a render window, which sizes text in pixels.
TEXT_DPI = 72

ELLIPSIS = "..."

# Rounds of region labelling in faces_closed_outward before it gives up and
# the back faces are drawn. A sphere of 2 million triangles settled in 22.
MAX_LABEL_ROUNDS = 64

# Surfaces with more polygons are drawn with their back faces, unchecked.
# NOTE: the check took 1.1 s for a plane of 1 million squares and 5.5 s for a
# sphere of 2 million triangles (2-core VM), which a short movie may not win back.
MAX_CHECKED_POLYGONS = 1_000_000


@dataclass(frozen=True)
class Layout:
    """Pixel positions of the data viewport, text rows and scalar bar band in a frame.

    The data viewport sits between a row for the title at the top and a row
    for the time label at the bottom. A band on the right contains the scalar
    bar, so neither text nor the bar covers the data.
    """

    width: int
    height: int
    font_size: int
    band: int
    row: int

    @classmethod
    def for_size(cls, width: int, height: int) -> Layout:
        """Scale the text with the frame's shorter side, counted as a 16:9 height.

        In a frame too small or too narrow for them, the text rows
        (``row == 0``) and the scalar bar (``band == 0``) are left out, so
        the data viewport never shrinks below :data:`MIN_DATA_FRACTION` of
        the frame in either direction.
        """
        font_size = int(min(max(round(min(width * 9 / 16, height) / 34), 8), 64))
        row = round(1.8 * font_size)
        if 2 * row > (1 - MIN_DATA_FRACTION) * height:
            row = 0

        # Room for a 10-character label such as -1.234e-05 beside the bar.
        band = min(max(round(8 * font_size), round(0.1 * width)), round((1 - MIN_DATA_FRACTION) * width))
        # The bar needs a strip and short labels across, and its five labels up the side.
        if band < 4 * font_size or height < 6 * font_size:
            band = 0
        return cls(width, height, font_size, band, row)

    @property
    def shows_text(self) -> bool:
        """Whether the frame has rows for the title and the time label."""
        return self.row > 0

    @property
    def shows_scalar_bar(self) -> bool:
        """Whether the frame has a band for the scalar bar."""
        return self.band > 0

    @property
    def data_viewport(self) -> tuple[float, float, float, float]:
        """The data renderer's viewport (xmin, ymin, xmax, ymax) as fractions of the frame."""
        return (0.0, self.row / self.height, 1.0 - self.band / self.width, 1.0 - self.row / self.height)

    @property
    def data_aspect(self) -> float:
        """Width over height of the data viewport."""
        return (self.width - self.band) / (self.height - 2 * self.row)


def plot_aspect(width: int, height: int) -> float:
    """Return the width over height of the area the data is drawn in.

    Pass it to :func:`kvis_parallel.camera.fit_camera` so the camera fits the
    data viewport rather than the whole frame.
    """
    return Layout.for_size(width, height).data_aspect


class FrameRenderer:
    """Render surfaces into frames with fixed settings, camera and colour range.

    Parameters
    ----------
    scene : Scene
        The render settings. The frame size is ``scene.even_size()``.
    camera : CameraSpec
        The camera for every frame, from :func:`~kvis_parallel.camera.fit_camera`
        with the aspect from :func:`plot_aspect`.
    scalar_range : (float, float)
        The colour range for every frame; values outside it take the colour
        of the nearer end.
    field_name : str, optional
        The field's name in the scalar bar title; ``scene.field`` by default.
    components : int, optional
        The field's number of components, so that the title of a vector's
        magnitude reads ``|U|``; unknown by default, and the title is the name.
    cache_overlay : bool
        Draw the title and scalar bar once and copy their pixels into each
        frame, rather than drawing them every frame; the frames are the same.
    """

    def __init__(self, scene: Scene, camera: CameraSpec, scalar_range: tuple[float, float], *,
                 field_name: str | None = None, components: int | None = None,
                 cache_overlay: bool = True) -> None:
        self.scene = scene
        self.scalar_range = _check_range(scalar_range, scene.log)
        self.width, self.height = scene.even_size()
        if (self.width, self.height) != tuple(scene.size):
            logger.info("frame size %dx%d rounded up to %dx%d: H.264 in yuv420p needs even sizes",
                        *scene.size, self.width, self.height)
        self.layout = Layout.for_size(self.width, self.height)

        self.lookup_table = _build_lookup_table(scene, self.scalar_range)
        self.mapper = _build_mapper(self.lookup_table)
        self.actor = _build_actor(self.mapper, scene, camera.planar)
        self._build_annotations(scalar_bar_title(field_name or scene.field, scene.component, components))

        # The annotation renderer fills the frame with the background and
        # clears its depth. The data renderer in the layer above clears
        # neither colour nor depth. Not clearing depth twice took draw() on
        # damBreak at 1280x720 from 9.3 to 8.2 ms with LP_NUM_THREADS=1 and
        # from 6.8 to 6.1 ms with 2 (llvmpipe, median of 150 frames, 2-core VM
        # with other work running).
        self.data_renderer = vtkRenderer()
        self.data_renderer.SetLayer(1)
        self.data_renderer.PreserveDepthBufferOn()
        self.data_renderer.SetViewport(*self.layout.data_viewport)
        self.data_renderer.AddActor(self.actor)
        self.data_renderer.SetUseFXAA(scene.fxaa)
        self._apply_camera(camera)

        self.annotation_renderer = vtkRenderer()
        self.annotation_renderer.SetLayer(0)
        self.annotation_renderer.SetBackground(*scene.background)
        if self.layout.shows_text:
            self.annotation_renderer.AddViewProp(self.time_text)
            self.annotation_renderer.AddViewProp(self.title_text)
        if self.layout.shows_scalar_bar:
            self.annotation_renderer.AddViewProp(self.scalar_bar)

        self.window = vtkRenderWindow()
        self.window.SetOffScreenRendering(True)
        # Multisampling (4 or 8 samples) made frames 3-5x slower on llvmpipe
        # with 2 threads at 1280x720 and 1920x1080. FXAA is the cheap option.
        self.window.SetMultiSamples(0)
        # Offscreen frames are read from the buffer they are drawn in, so the
        # copy to the display buffer is wasted. Skipping it took draw() plus
        # read_pixels() on damBreak at 1280x720 from 13.0 to 12.0 ms with
        # LP_NUM_THREADS=1 and from 13.4 to 12.5 ms with 2 (llvmpipe, median
        # of 100 frames, 2-core VM with other work running).
        self.window.SetSwapBuffers(False)
        self.window.SetNumberOfLayers(2)
        self.window.SetSize(self.width, self.height)
        self.window.AddRenderer(self.annotation_renderer)
        self.window.AddRenderer(self.data_renderer)

        self._pixels = vtkUnsignedCharArray()
        self.frames_rendered = 0
        # The last surface's polygons and points with their modification
        # times, whether faces_closed_outward ran on them, and its result.
        self._mesh_key: tuple[object, int, object, int] | None = None
        self._mesh_checked = False
        self._closed_outward = False

        # Pixels of the title row and scalar bar band, top row first, copied
        # into each frame by read_pixels while _overlay_pasted is set.
        self._overlay: list[tuple[tuple[slice, slice], np.ndarray]] = []
        self._overlay_pasted = False
        if cache_overlay:
            self._overlay = self._capture_overlay()

    def render(self, surface: vtkPolyData, time: float, *, index: int = 0,
               label: str = "") -> np.ndarray:
        """Render one time step.

        Parameters
        ----------
        surface : vtkPolyData
            Geometry with a one-component ``kvis_scalars`` array in its point
            or cell data.
        time : float
            Physical time of the step, for the time label.
        index : int
            Frame number, for ``{index}`` in ``scene.time_format``.
        label : str
            Step label, for ``{label}`` in ``scene.time_format``.

        Returns
        -------
        numpy.ndarray
            Shape ``(height, width, 3)``, uint8 RGB, top row first.

        Raises
        ------
        ValueError
            If the surface has no ``kvis_scalars`` array or the renderer is closed.
        """
        self.draw(surface, time, index=index, label=label)
        return self.read_pixels()

    def draw(self, surface: vtkPolyData, time: float, *, index: int = 0, label: str = "") -> None:
        """Draw one time step without reading it back; :meth:`render` does both.

        The parameters and errors are those of :meth:`render`. Callers that
        time drawing and readback apart call this, then :meth:`read_pixels`.
        """
        if self.window is None:
            raise ValueError("this FrameRenderer is closed; create a new one to render again")
        self._set_input(surface)
        time_label = format_time_label(self.scene.time_format, time, index, label)
        self.time_text.SetInput(time_label)
        self._overlay_pasted = bool(self._overlay) and self._label_clear_of_overlay(time_label)
        self.title_text.SetVisibility(not self._overlay_pasted)
        self.scalar_bar.SetVisibility(not self._overlay_pasted)
        self.data_renderer.ResetCameraClippingRange()
        self.window.Render()
        # Without a buffer swap the drawing may still be in progress here.
        # Waiting keeps its time in draw() rather than read_pixels().
        self.window.WaitForCompletion()
        self.frames_rendered += 1

    def read_pixels(self) -> np.ndarray:
        """Copy the last rendered frame into a new ``(height, width, 3)`` array, top row first."""
        frame = self._read_window()
        if self._overlay_pasted:
            for region, pixels in self._overlay:
                frame[region] = pixels
        return frame

    def _read_window(self) -> np.ndarray:
        # Reading into one reused array took 1.3 ms at 1280x720, against
        # 1.7 ms through vtkWindowToImageFilter (median of 10, llvmpipe).
        self.window.GetPixelData(0, 0, self.width - 1, self.height - 1, 0, self._pixels, 0)
        bottom_up = vtk_to_numpy(self._pixels).reshape(self.height, self.width, 3)
        # OpenGL's first row is the bottom of the image: the one flip is here.
        return np.ascontiguousarray(bottom_up[::-1])

    def _overlay_regions(self) -> list[tuple[slice, slice]]:
        """Return the title row and the scalar bar band as (rows, columns), top row first."""
        layout = self.layout
        plot_width = layout.width - layout.band
        regions = []
        if layout.shows_text:
            regions.append((slice(0, layout.row), slice(0, plot_width)))
        if layout.shows_scalar_bar:
            regions.append((slice(0, layout.height), slice(plot_width, layout.width)))
        return regions

    def _capture_overlay(self) -> list[tuple[tuple[slice, slice], np.ndarray]]:
        """Draw the title and scalar bar alone and keep the pixels of their regions.

        Drawing them only once took draw() plus read_pixels() on damBreak at
        1280x720 from 12.5 to 11.9 ms with LP_NUM_THREADS=1 and from 10.0 to
        9.5 ms with 2 (llvmpipe, median of 100 frames, 2-core VM with other
        work running). When the title or scalar bar reaches outside these
        regions, returns no regions, so that every frame draws them.
        """
        regions = self._overlay_regions()
        if not regions:
            return []

        self.actor.VisibilityOff()
        self.time_text.VisibilityOff()
        self.window.Render()
        frame = self._read_window()
        self.actor.VisibilityOn()
        self.time_text.VisibilityOn()

        outside = np.ones(frame.shape[:2], dtype=bool)
        for region in regions:
            outside[region] = False
        background = frame[outside]
        if background.size and np.any(background != background[0]):
            logger.debug("the title or scalar bar reaches the data viewport: drawing them every frame")
            return []
        return [(region, frame[region].copy()) for region in regions]

    def _label_clear_of_overlay(self, time_label: str) -> bool:
        """Return whether the time label ends left of the scalar bar band, with half a character to spare."""
        margin = self.layout.font_size / 2
        end = margin + text_width(time_label, self.time_text.GetTextProperty())
        return end + margin <= self.layout.width - self.layout.band

    def close(self) -> None:
        """Release the OpenGL context and window. The renderer cannot render after this."""
        if self.window is not None:
            self.window.Finalize()
            self.window = None

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _set_input(self, surface: vtkPolyData) -> None:
        if surface.GetPointData().GetArray(SCALARS) is not None:
            self.mapper.SetScalarModeToUsePointFieldData()
        elif surface.GetCellData().GetArray(SCALARS) is not None:
            self.mapper.SetScalarModeToUseCellFieldData()
        else:
            raise ValueError(f"the surface has no {SCALARS!r} array in its point or cell data")
        self.mapper.SelectColorArray(SCALARS)
        self.mapper.SetInputData(surface)
        self._set_culling(surface)

    def _set_culling(self, surface: vtkPolyData) -> None:
        """Skip the back faces of a closed surface seen from outside, which are hidden anyway.

        The outer surface of a one-cell-thick 2-D mesh has a front and a back
        plane over the same pixels. Culling the back one took draw() on
        damBreak from 13.8 to 9.2 ms at 1280x720 (llvmpipe, LP_NUM_THREADS=1,
        median of 40 frames, 2-core VM with other work running).
        """
        polys, points = surface.GetPolys(), surface.GetPoints()
        if points is None:
            self.actor.GetProperty().BackfaceCullingOff()
            return

        # The loader hands consecutive steps the same polygons and points when
        # the mesh does not change. The check runs on the second step that
        # shows a mesh, so a mesh that changes every step is never checked.
        key = (polys, polys.GetMTime(), points, points.GetMTime())
        if key != self._mesh_key:
            self._mesh_key = key
            self._mesh_checked = False
            self._closed_outward = False
        elif not self._mesh_checked:
            self._mesh_checked = True
            self._closed_outward = (polys.GetNumberOfCells() <= MAX_CHECKED_POLYGONS
                                    and faces_closed_outward(surface))

        position = self.data_renderer.GetActiveCamera().GetPosition()
        bounds = surface.GetBounds()
        outside = any(not bounds[2 * axis] <= position[axis] <= bounds[2 * axis + 1] for axis in range(3))
        self.actor.GetProperty().SetBackfaceCulling(self._closed_outward and outside)

    def _apply_camera(self, spec: CameraSpec) -> None:
        camera = self.data_renderer.GetActiveCamera()
        camera.SetFocalPoint(*spec.focal_point)
        camera.SetPosition(*spec.position)
        camera.SetViewUp(*spec.view_up)
        camera.SetParallelProjection(spec.parallel_projection)
        camera.SetParallelScale(spec.parallel_scale)
        camera.SetViewAngle(spec.view_angle)

        aspect = self.layout.data_aspect
        if spec.aspect is not None and spec.aspect > aspect * 1.001:
            # The camera was fitted for a wider area than the data viewport,
            # so zoom out until its full width shows.
            logger.debug("camera fitted for aspect %.3f, data viewport has %.3f: zooming out",
                         spec.aspect, aspect)
            camera.Zoom(aspect / spec.aspect)

    def _build_annotations(self, field_name: str) -> None:
        layout = self.layout
        plot_width = layout.width - layout.band
        margin = layout.font_size / 2

        self.title_text = _build_text(round(layout.font_size * 1.15))
        self.title_text.SetInput(clip_text(self.scene.title or "", plot_width - 2 * margin,
                                           self.title_text.GetTextProperty()))
        self.title_text.GetTextProperty().SetJustificationToCentered()
        self.title_text.GetTextProperty().SetVerticalJustificationToCentered()
        self.title_text.SetDisplayPosition(round(plot_width / 2), round(layout.height - layout.row / 2))

        self.time_text = _build_text(layout.font_size)
        self.time_text.GetTextProperty().SetVerticalJustificationToCentered()
        self.time_text.SetDisplayPosition(round(margin), round(layout.row / 2))

        self.scalar_bar = _build_scalar_bar(self.lookup_table, field_name, layout.font_size)
        bar_position = self.scalar_bar.GetPositionCoordinate()
        bar_position.SetCoordinateSystemToDisplay()
        bar_position.SetValue(plot_width + margin, layout.row / 2)
        bar_size = self.scalar_bar.GetPosition2Coordinate()
        bar_size.SetCoordinateSystemToDisplay()
        bar_size.SetValue(layout.band - 2 * margin, layout.height - layout.row)
        # The colour strip is about one character wide; the labels take the rest.
        self.scalar_bar.SetBarRatio(min(0.5, 1.2 * layout.font_size / max(1.0, layout.band - 2 * margin)))


def text_width(text: str, text_property: vtkTextProperty) -> int:
    """Return the width in pixels of ``text`` drawn with ``text_property``, as FreeType measures it."""
    if not text:
        return 0
    box = [0, 0, 0, 0]
    vtkTextRenderer.GetInstance().GetBoundingBox(text_property, text, box, TEXT_DPI)
    return box[1] - box[0] + 1


def clip_text(text: str, width: float, text_property: vtkTextProperty) -> str:
    """Return ``text``, or its longest start followed by "..." that fits in ``width`` pixels."""
    if text_width(text, text_property) <= width:
        return text

    # Binary search for the number of characters kept before the ellipsis.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if text_width(text[:middle].rstrip() + ELLIPSIS, text_property) <= width:
            low = middle
        else:
            high = middle - 1
    if low == 0:
        return ""
    return text[:low].rstrip() + ELLIPSIS


def faces_closed_outward(surface: vtkPolyData) -> bool:
    """Return whether the polygons of ``surface`` bound solids and all face out of them.

    That is the case when every edge belongs to exactly two polygons that run
    along it in opposite directions, and each connected region encloses a
    positive volume. No back face of such a surface is visible from a camera outside it.
    Surfaces with triangle strips return False.
    """
    polys = surface.GetPolys()
    if surface.GetNumberOfStrips() > 0 or polys.GetNumberOfCells() == 0:
        return False
    offsets = vtk_to_numpy(polys.GetOffsetsArray()).astype(np.int64, copy=False)
    start = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64, copy=False)
    sizes = np.diff(offsets)
    if sizes.min() < 3:
        return False

    # Each polygon's directed edges: vertex i to vertex i + 1, the last back to the first.
    following = np.arange(1, len(start) + 1)
    following[offsets[1:] - 1] = offsets[:-1]
    end = start[following]
    if np.any(start == end):
        return False

    # Closed and consistently wound: the directed edges are unique, and each
    # one's reverse is also an edge.
    count = surface.GetNumberOfPoints()
    forward = start * count + end
    forward_order = np.argsort(forward)
    reverse_order = np.argsort(end * count + start)
    sorted_forward = forward[forward_order]
    if np.any(sorted_forward[1:] == sorted_forward[:-1]):
        return False
    if not np.array_equal(sorted_forward, (end * count + start)[reverse_order]):
        return False

    # The polygon on the other side of each edge. Entry forward_order[i] runs
    # along the edge that entry reverse_order[i] runs along backwards.
    cell_of_entry = np.repeat(np.arange(len(sizes)), sizes)
    neighbour = np.empty_like(cell_of_entry)
    neighbour[forward_order] = cell_of_entry[reverse_order]
    labels = _region_labels(offsets[:-1], neighbour)
    if labels is None:
        return False

    # Divergence theorem: each edge (a, b) of a polygon whose first vertex is f
    # adds f . (a x b) / 6 to the volume. Centring the points keeps precision.
    points = vtk_to_numpy(surface.GetPoints().GetData()).astype(np.float64)
    points -= points.mean(axis=0)
    first = points[start[offsets[:-1]]][cell_of_entry]
    volume = np.einsum("ij,ij->i", first, np.cross(points[start], points[end]))
    region_volume = np.bincount(labels[cell_of_entry], weights=volume)
    return bool(np.all(region_volume[np.unique(labels)] > 0))


def _region_labels(starts: np.ndarray, neighbour: np.ndarray) -> np.ndarray | None:
    """Label connected polygons with the smallest polygon index of their region.

    ``neighbour`` holds, for each polygon's edges in order, the polygon across
    the edge, and ``starts`` where each polygon's edges begin. Returns None
    when the labels have not settled after :data:`MAX_LABEL_ROUNDS` rounds.
    """
    labels = np.arange(len(starts))
    for _ in range(MAX_LABEL_ROUNDS):
        updated = np.minimum(labels, np.minimum.reduceat(labels[neighbour], starts))
        # Pointer jumping: take the label of the label, which shortens chains.
        updated = updated[updated]
        if np.array_equal(updated, labels):
            return labels
        labels = updated
    return None


def _check_range(scalar_range: tuple[float, float], log: bool) -> tuple[float, float]:
    low, high = (float(value) for value in scalar_range)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"the colour range must be finite, got {scalar_range}")
    if log and low <= 0:
        raise ValueError(f"a log colour range must be positive, got {scalar_range}")
    if high < low:
        raise ValueError(f"the colour range must have MIN <= MAX, got {scalar_range}")
    return widen_constant_range(low, high, log)


def _build_lookup_table(scene: Scene, scalar_range: tuple[float, float]) -> vtkLookupTable:
    table = vtkLookupTable()
    colors = colormap_table_float(scene.colormap, TABLE_SIZE)
    table.SetNumberOfTableValues(TABLE_SIZE)
    for index, (red, green, blue) in enumerate(colors):
        table.SetTableValue(index, red, green, blue, 1.0)
    table.SetRange(*scalar_range)
    if scene.log:
        table.SetScaleToLog10()
    table.SetNanColor(*scene.nan_color, 1.0)
    # Values outside the range take the end colours (the table clamps them).
    table.UseBelowRangeColorOff()
    table.UseAboveRangeColorOff()
    table.Build()
    return table


def _build_mapper(table: vtkLookupTable) -> vtkPolyDataMapper:
    mapper = vtkPolyDataMapper()
    mapper.SetLookupTable(table)
    mapper.UseLookupTableScalarRangeOn()
    mapper.ScalarVisibilityOn()
    mapper.SetColorModeToMapScalars()
    # Interpolate values across each triangle, not colours, because a blend
    # of two table colours is not on the colormap.
    mapper.InterpolateScalarsBeforeMappingOn()
    return mapper


def _build_actor(mapper: vtkPolyDataMapper, scene: Scene, planar: bool) -> vtkActor:
    actor = vtkActor()
    actor.SetMapper(mapper)
    surface_property = actor.GetProperty()
    if planar:
        # Shading adds nothing to a flat view and would darken the colours.
        # Unlit, a value shows exactly its colormap colour.
        surface_property.LightingOff()
    if scene.edges:
        surface_property.EdgeVisibilityOn()
        surface_property.SetEdgeColor(*EDGE_COLOR)
        surface_property.SetLineWidth(1.0)
    return actor


def _build_text(font_size: int) -> vtkTextActor:
    actor = vtkTextActor()
    text = actor.GetTextProperty()
    text.SetFontSize(font_size)
    text.SetColor(*TEXT_COLOR)
    return actor


def _build_scalar_bar(table: vtkLookupTable, title: str, font_size: int) -> vtkScalarBarActor:
    bar = vtkScalarBarActor()
    bar.SetLookupTable(table)
    bar.SetTitle(title)
    bar.SetNumberOfLabels(5)
    bar.SetLabelFormat(LABEL_FORMAT)
    bar.SetMaximumNumberOfColors(TABLE_SIZE)
    bar.UnconstrainedFontSizeOn()
    bar.SetVerticalTitleSeparation(round(font_size / 2))
    for text in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
        text.SetFontSize(font_size)
        text.SetColor(*TEXT_COLOR)
        text.ShadowOff()
        text.ItalicOff()
        text.BoldOff()
    return bar
