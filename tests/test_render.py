"""Tests for kvis_parallel.render: colours, orientation and window reuse, with real offscreen VTK."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from kvis_parallel.offscreen import configure_offscreen

configure_offscreen()

from vtkmodules.util.numpy_support import numpy_to_vtk  # noqa: E402
from vtkmodules.vtkCommonDataModel import vtkPolyData  # noqa: E402
from vtkmodules.vtkFiltersCore import (  # noqa: E402
    vtkAppendPolyData,
    vtkCleanPolyData,
    vtkReverseSense,
    vtkStripper,
)
from vtkmodules.vtkFiltersSources import vtkCubeSource, vtkPlaneSource, vtkSphereSource  # noqa: E402

from kvis_parallel.camera import CameraSpec, fit_camera  # noqa: E402
from kvis_parallel.colormap import colormap_table  # noqa: E402
from kvis_parallel.render import (  # noqa: E402
    FrameRenderer,
    Layout,
    faces_closed_outward,
    plot_aspect,
    text_width,
)
from kvis_parallel.scene import Scene  # noqa: E402

WIDTH, HEIGHT = 160, 120

# An unlit 2-D view draws the table colour itself; one level allows for the
# GPU's rounding of the texture coordinate.
COLOR_TOLERANCE = 1


@pytest.fixture(autouse=True)
def vtk_output(vtk_errors):
    """Fail every test in this file that makes VTK print a warning or error."""
    return vtk_errors


def make_square(values=None, *, association: str = "point", resolution: int = 8,
                size: tuple[float, float] = (1.0, 1.0), normal_axis: int = 2) -> vtkPolyData:
    """Build a flat rectangle with a ``kvis_scalars`` array.

    ``values`` is a constant, or a function of the points' (or cell centres')
    coordinates as an (n, 3) array.
    """
    source = vtkPlaneSource()
    source.SetResolution(resolution, resolution)
    axes = [axis for axis in range(3) if axis != normal_axis]
    point1, point2 = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    point1[axes[0]] = size[0]
    point2[axes[1]] = size[1]
    source.SetOrigin(0.0, 0.0, 0.0)
    source.SetPoint1(*point1)
    source.SetPoint2(*point2)
    source.Update()
    surface = source.GetOutput()
    set_scalars(surface, 0.5 if values is None else values, association)
    return surface


def set_scalars(surface: vtkPolyData, values, association: str = "point") -> None:
    """Replace the surface's ``kvis_scalars`` with ``values`` in the given association."""
    points = np.array([surface.GetPoint(i) for i in range(surface.GetNumberOfPoints())])
    if association == "cell":
        cells = [surface.GetCell(i) for i in range(surface.GetNumberOfCells())]
        points = np.array([
            np.mean([surface.GetPoint(cell.GetPointId(k)) for k in range(cell.GetNumberOfPoints())], axis=0)
            for cell in cells
        ])
    data = values(points) if callable(values) else np.full(len(points), float(values))
    array = numpy_to_vtk(np.ascontiguousarray(data, dtype=np.float64), deep=True)
    array.SetName("kvis_scalars")
    for attributes in (surface.GetPointData(), surface.GetCellData()):
        attributes.RemoveArray("kvis_scalars")
    target = surface.GetPointData() if association == "point" else surface.GetCellData()
    target.AddArray(array)


def make_renderer(surface: vtkPolyData, scalar_range=(0.0, 1.0), **settings) -> FrameRenderer:
    scene = Scene(size=(WIDTH, HEIGHT), **settings)
    width, height = scene.even_size()
    camera = fit_camera(surface.GetBounds(), scene.view, scene.zoom, plot_aspect(width, height))
    return FrameRenderer(scene, camera, scalar_range)


def data_box(frame: np.ndarray) -> tuple[slice, slice]:
    """Return the rows and columns of the data viewport in a frame, top row first."""
    height, width = frame.shape[:2]
    layout = Layout.for_size(width, height)
    return slice(layout.row, height - layout.row), slice(0, width - layout.band)


def center_pixel(frame: np.ndarray) -> np.ndarray:
    """Return the pixel at the centre of the data viewport as ints."""
    rows, columns = data_box(frame)
    return frame[(rows.start + rows.stop) // 2, columns.stop // 2].astype(int)


def table_color(name: str, fraction: float) -> np.ndarray:
    """Return the colour the 256-entry table gives to a fraction of the range."""
    index = int(np.clip(np.floor(fraction * 256), 0, 255))
    return colormap_table(name)[index].astype(int)


def bin_center(index: int) -> float:
    """Return the range fraction in the middle of table entry ``index``."""
    return (index + 0.5) / 256


@pytest.mark.parametrize("colormap", ["viridis", "plasma", "coolwarm", "jet", "grayscale", "viridis_r", "jet_r"])
@pytest.mark.parametrize("association", ["point", "cell"])
def test_constant_field_has_colormap_color(colormap, association):
    surface = make_square(association=association)
    with make_renderer(surface, colormap=colormap) as renderer:
        for index in (0, 37, 128, 200, 255):
            set_scalars(surface, bin_center(index), association)
            frame = renderer.render(surface, 0.0)
            expected = colormap_table(colormap)[index].astype(int)
            assert np.abs(center_pixel(frame) - expected).max() <= COLOR_TOLERANCE, (index, center_pixel(frame))


def test_reversed_map_mirrors_colors():
    surface = make_square(bin_center(40))
    with make_renderer(surface, colormap="plasma_r") as renderer:
        frame = renderer.render(surface, 0.0)
    assert np.abs(center_pixel(frame) - colormap_table("plasma")[255 - 40]).max() <= COLOR_TOLERANCE


@pytest.mark.parametrize("value, expected_fraction", [
    (10.0, 1 / 3),
    (100.0, 2 / 3),
    (1.0, 0.0),
    (1000.0, 0.999),
])
def test_log_scale_maps_decades_evenly(value, expected_fraction):
    surface = make_square(value)
    with make_renderer(surface, scalar_range=(1.0, 1000.0), log=True) as renderer:
        frame = renderer.render(surface, 0.0)
    # Exact decades land on a table boundary, so allow either neighbour.
    index = int(np.floor(expected_fraction * 256))
    table = colormap_table("viridis").astype(int)
    candidates = [table[max(0, index - 1)], table[index]]
    difference = min(np.abs(center_pixel(frame) - color).max() for color in candidates)
    assert difference <= COLOR_TOLERANCE


@pytest.mark.parametrize("association", ["point", "cell"])
def test_nan_values_take_nan_color(association):
    surface = make_square(np.nan, association=association)
    nan_color = (0.0, 1.0, 0.0)
    with make_renderer(surface, nan_color=nan_color) as renderer:
        frame = renderer.render(surface, 0.0)
    assert np.abs(center_pixel(frame) - np.array(nan_color) * 255).max() <= COLOR_TOLERANCE


@pytest.mark.parametrize("value, index", [(-5.0, 0), (-1e-9, 0), (1.0 + 1e-9, 255), (7.0, 255)])
def test_out_of_range_values_are_clamped(value, index):
    surface = make_square(value)
    with make_renderer(surface) as renderer:
        frame = renderer.render(surface, 0.0)
    assert np.abs(center_pixel(frame) - colormap_table("viridis")[index]).max() <= COLOR_TOLERANCE


@pytest.mark.parametrize("normal_axis", [0, 1, 2])
def test_high_values_at_top_of_image(normal_axis):
    # The auto view keeps the second in-plane axis (y, or z for x-z and y-z
    # planes) pointing up, so a field that grows along it is bright at the top.
    up_axis = 1 if normal_axis == 2 else 2
    surface = make_square(lambda points: points[:, up_axis], normal_axis=normal_axis)
    with make_renderer(surface, colormap="grayscale") as renderer:
        frame = renderer.render(surface, 0.0)
    rows, columns = data_box(frame)
    column = frame[rows, columns.stop // 2, 0].astype(int)
    inside = column[(column != column[0])]
    assert inside[0] > 200, "top of the square is not bright"
    assert inside[-1] < 55, "bottom of the square is not dark"


@pytest.mark.parametrize("normal_axis, right_axis", [(0, 1), (1, 0), (2, 0)])
def test_first_inplane_axis_runs_right(normal_axis, right_axis):
    surface = make_square(lambda points: points[:, right_axis], normal_axis=normal_axis)
    with make_renderer(surface, colormap="grayscale") as renderer:
        frame = renderer.render(surface, 0.0)
    rows, columns = data_box(frame)
    row = frame[(rows.start + rows.stop) // 2, columns, 0].astype(int)
    inside = row[row != row[0]]
    assert inside[0] < inside[-1]


def test_ramp_matches_colormap_along_axis():
    surface = make_square(lambda points: points[:, 0], size=(2.0, 1.0), resolution=32)
    with make_renderer(surface, scalar_range=(0.0, 2.0), colormap="jet") as renderer:
        frame = renderer.render(surface, 0.0)
    camera = renderer.data_renderer.GetActiveCamera()
    scale = camera.GetParallelScale()
    rows, columns = data_box(frame)
    plot_width = columns.stop
    pixels_per_unit = (rows.stop - rows.start) / (2 * scale)
    table = colormap_table("jet").astype(int)
    for x in (0.3, 0.7, 1.1, 1.5):
        column = int(round(plot_width / 2 + (x - 1.0) * pixels_per_unit))
        # The pixel centre's world x, back from the pixel column.
        world_x = 1.0 + (column + 0.5 - plot_width / 2) / pixels_per_unit
        expected_index = int(np.floor(world_x / 2.0 * 256))
        pixel = frame[(rows.start + rows.stop) // 2, column].astype(int)
        nearest = min(np.abs(pixel - table[i]).max() for i in range(expected_index - 1, expected_index + 2))
        assert nearest <= COLOR_TOLERANCE, (x, pixel)


def test_window_is_reused_across_frames():
    surface = make_square(0.0)
    with make_renderer(surface, colormap="grayscale") as renderer:
        window = renderer.window
        levels = []
        for index in range(30):
            # A new surface object each frame, as the reader delivers them.
            step_surface = make_square(bin_center(index * 8))
            frame = renderer.render(step_surface, float(index), index=index)
            levels.append(center_pixel(frame)[0])
            assert renderer.window is window
        assert renderer.frames_rendered == 30
    assert levels == [colormap_table("grayscale")[index * 8][0] for index in range(30)]


def test_odd_size_rounded_up_with_log(caplog):
    surface = make_square()
    scene = Scene(size=(161, 121))
    camera = fit_camera(surface.GetBounds(), "auto", 1.0, plot_aspect(*scene.even_size()))
    with caplog.at_level(logging.INFO, logger="kvis_parallel.render"):
        with FrameRenderer(scene, camera, (0.0, 1.0)) as renderer:
            frame = renderer.render(surface, 0.0)
    assert frame.shape == (122, 162, 3)
    assert "162x122" in caplog.text


def test_frame_is_contiguous_uint8():
    surface = make_square()
    with make_renderer(surface) as renderer:
        frame = renderer.render(surface, 0.0)
    assert frame.dtype == np.uint8
    assert frame.shape == (HEIGHT, WIDTH, 3)
    assert frame.flags["C_CONTIGUOUS"]


def test_frames_are_independent_arrays():
    surface = make_square(0.0)
    with make_renderer(surface, colormap="grayscale") as renderer:
        first = renderer.render(surface, 0.0)
        kept = first.copy()
        set_scalars(surface, 1.0)
        renderer.render(surface, 1.0)
    assert np.array_equal(first, kept)


def test_time_label_changes_pixels():
    surface = make_square()
    with make_renderer(surface, time_format="t = {time:.1f} s") as renderer:
        first = renderer.render(surface, 0.0)
        second = renderer.render(surface, 12.5)
    # The time label sits in the row below the data.
    rows, columns = data_box(first)
    label_area = (slice(rows.stop, HEIGHT), columns)
    assert not np.array_equal(first[label_area], second[label_area])
    assert renderer.time_text.GetInput() == "t = 12.5 s"


def test_time_label_uses_index_and_label():
    surface = make_square()
    with make_renderer(surface, time_format="{index}:{label}:{time:g}") as renderer:
        renderer.render(surface, 0.25, index=7, label="cavity_40")
        assert renderer.time_text.GetInput() == "7:cavity_40:0.25"


def test_title_and_field_name_are_drawn():
    surface = make_square()
    scene = Scene(size=(WIDTH, HEIGHT), title="Lid-driven cavity", field="p")
    camera = fit_camera(surface.GetBounds(), "auto", 1.0, plot_aspect(WIDTH, HEIGHT))
    with FrameRenderer(scene, camera, (0.0, 1.0)) as renderer:
        renderer.render(surface, 0.0)
        assert renderer.title_text.GetInput() == "Lid-driven cavity"
        assert renderer.scalar_bar.GetTitle() == "p"
    with FrameRenderer(scene, camera, (0.0, 1.0), field_name="U") as renderer:
        assert renderer.scalar_bar.GetTitle() == "U"


def test_edges_draw_dark_lines():
    surface = make_square(1.0, resolution=4)
    with make_renderer(surface, colormap="grayscale") as plain:
        without_edges = plain.render(surface, 0.0)
    with make_renderer(surface, colormap="grayscale", edges=True) as edged:
        with_edges = edged.render(surface, 0.0)
    rows, columns = data_box(with_edges)
    plot = (slice(rows.start + 5, rows.stop - 5), slice(5, columns.stop - 5))
    dark_without = np.count_nonzero(without_edges[plot][..., 0] < 100)
    dark_with = np.count_nonzero(with_edges[plot][..., 0] < 100)
    assert dark_with > dark_without + 50


def test_fxaa_renders_without_errors():
    surface = make_square(bin_center(100))
    with make_renderer(surface, fxaa=True) as renderer:
        frame = renderer.render(surface, 0.0)
    assert np.abs(center_pixel(frame) - colormap_table("viridis")[100]).max() <= COLOR_TOLERANCE


def test_3d_surface_is_shaded():
    source = vtkSphereSource()
    source.SetThetaResolution(32)
    source.SetPhiResolution(32)
    source.Update()
    sphere = source.GetOutput()
    set_scalars(sphere, 1.0)
    with make_renderer(sphere, colormap="grayscale") as renderer:
        frame = renderer.render(sphere, 0.0)
    plot = frame[data_box(frame)][..., 0]
    sphere_pixels = plot[plot != plot[0, 0]]
    assert sphere_pixels.size > 1000
    # Lit from the camera, the rim is darker than the white centre.
    assert sphere_pixels.min() < 200
    assert sphere_pixels.max() > 240


def test_surface_without_scalars_raises():
    surface = make_square()
    surface.GetPointData().RemoveArray("kvis_scalars")
    with make_renderer(make_square()) as renderer:
        with pytest.raises(ValueError, match="kvis_scalars"):
            renderer.render(surface, 0.0)


def test_constant_range_is_widened():
    surface = make_square(3.0)
    with make_renderer(surface, scalar_range=(3.0, 3.0)) as renderer:
        frame = renderer.render(surface, 0.0)
    assert frame.shape == (HEIGHT, WIDTH, 3)


def test_empty_surface_renders_background():
    surface = make_square()
    empty = vtkPolyData()
    set_scalars(empty, 0.0)
    with make_renderer(surface) as renderer:
        frame = renderer.render(empty, 0.0)
    background = np.rint(np.array(Scene().background) * 255)
    assert np.abs(center_pixel(frame) - background).max() <= COLOR_TOLERANCE


def test_close_twice_is_harmless():
    renderer = make_renderer(make_square())
    renderer.close()
    renderer.close()
    assert renderer.window is None


@pytest.mark.parametrize("value, index", [(0.0, 0), (-3.0, 0), (0.5, 0), (5000.0, 255)])
def test_log_scale_clamps_outside_values(value, index):
    surface = make_square(value)
    with make_renderer(surface, scalar_range=(1.0, 1000.0), log=True) as renderer:
        frame = renderer.render(surface, 0.0)
    assert np.abs(center_pixel(frame) - colormap_table("viridis")[index]).max() <= COLOR_TOLERANCE


def test_log_scale_nan_takes_nan_color():
    surface = make_square(np.nan)
    with make_renderer(surface, scalar_range=(1.0, 1000.0), log=True, nan_color=(0.0, 0.0, 1.0)) as renderer:
        frame = renderer.render(surface, 0.0)
    assert np.abs(center_pixel(frame) - (0, 0, 255)).max() <= COLOR_TOLERANCE


def test_camera_fitted_for_whole_frame_still_shows_data():
    # A caller that fits the camera to the whole frame instead of plot_aspect
    # must not lose the sides of a wide domain.
    surface = make_square(1.0, size=(4.0, 1.0))
    scene = Scene(size=(WIDTH, HEIGHT), colormap="grayscale")
    camera = fit_camera(surface.GetBounds(), "auto", 1.0, WIDTH / HEIGHT)
    with FrameRenderer(scene, camera, (0.0, 1.0)) as renderer:
        frame = renderer.render(surface, 0.0)
    rows, columns = data_box(frame)
    middle_row = frame[(rows.start + rows.stop) // 2, columns, 0]
    assert middle_row[0] != 255, "the domain touches the left edge"
    assert middle_row[-1] != 255, "the domain touches the right edge"
    assert np.count_nonzero(middle_row == 255) > 0.8 * columns.stop


def test_2d_case_unlit_in_iso_view():
    # Seen at an angle, a lit plane would be darker than its colormap colour.
    surface = make_square(bin_center(180))
    with make_renderer(surface, view="iso") as renderer:
        frame = renderer.render(surface, 0.0)
    assert np.abs(center_pixel(frame) - colormap_table("viridis")[180]).max() <= COLOR_TOLERANCE


def test_render_after_close_raises():
    surface = make_square()
    renderer = make_renderer(surface)
    renderer.close()
    with pytest.raises(ValueError, match="closed"):
        renderer.render(surface, 0.0)


def test_draw_then_read_equals_render():
    surface = make_square(lambda points: points[:, 0] * points[:, 1])
    with make_renderer(surface) as renderer:
        rendered = renderer.render(surface, 1.0, index=2)
        renderer.draw(surface, 1.0, index=2)
        drawn = renderer.read_pixels()
    assert np.array_equal(rendered, drawn)


@pytest.mark.parametrize("size", [(16, 16), (200, 16), (16, 200), (7680, 16), (16, 7680), (48, 32), (100, 100)])
def test_small_and_extreme_sizes_render(size):
    surface = make_square(0.5)
    scene = Scene(size=size)
    aspect = plot_aspect(*size)
    camera = fit_camera(surface.GetBounds(), "auto", 1.0, aspect)
    with FrameRenderer(scene, camera, (0.0, 1.0), field_name="p") as renderer:
        frame = renderer.render(surface, 0.0)

    assert aspect > 0
    assert frame.shape == (size[1], size[0], 3)
    expected = table_color("viridis", 0.5)
    assert np.abs(center_pixel(frame) - expected).max() <= COLOR_TOLERANCE


@pytest.mark.parametrize("size, shows_text, shows_scalar_bar", [
    ((16, 16), False, False),
    ((200, 16), False, False),
    ((64, 64), False, False),
    ((320, 240), True, True),
    ((1280, 720), True, True),
])
def test_layout_leaves_out_what_does_not_fit(size, shows_text, shows_scalar_bar):
    layout = Layout.for_size(*size)

    assert layout.shows_text == shows_text
    assert layout.shows_scalar_bar == shows_scalar_bar
    assert layout.width - layout.band >= 0.6 * layout.width
    assert layout.height - 2 * layout.row >= 0.6 * layout.height


def test_constant_range_labels_differ():
    surface = make_square(3.0)
    with make_renderer(surface, scalar_range=(3.0, 3.0)) as renderer:
        low, high = renderer.lookup_table.GetRange()
    assert low == pytest.approx(2.97)
    assert high == pytest.approx(3.03)
    assert f"{low:.4g}" != f"{high:.4g}"


def test_long_title_clipped_to_frame():
    surface = make_square()
    title = "A very long title " * 20
    with make_renderer(surface, title=title) as renderer:
        shown = renderer.title_text.GetInput()
        plot_width = renderer.layout.width - renderer.layout.band
        shown_width = text_width(shown, renderer.title_text.GetTextProperty())

    assert shown.endswith("...")
    assert title.startswith(shown[:-3])
    assert 0 < shown_width <= plot_width


def test_short_title_kept():
    surface = make_square()
    with make_renderer(surface, title="cavity") as renderer:
        assert renderer.title_text.GetInput() == "cavity"


@pytest.mark.parametrize("component, components, expected", [
    ("x", None, "U_x"),
    ("mag", 3, "|U|"),
    ("mag", None, "U"),
])
def test_scalar_bar_title_names_component(component, components, expected):
    surface = make_square()
    scene = Scene(size=(WIDTH, HEIGHT), field="U", component=component)
    camera = fit_camera(surface.GetBounds(), "auto", 1.0, plot_aspect(WIDTH, HEIGHT))
    with FrameRenderer(scene, camera, (0.0, 1.0), components=components) as renderer:
        assert renderer.scalar_bar.GetTitle() == expected


def test_time_label_clipped():
    surface = make_square()
    with make_renderer(surface, time_format="{time:64.64f}") as renderer:
        renderer.render(surface, 1e300)
        assert len(renderer.time_text.GetInput()) <= 200


def make_slab(reverse: bool = False) -> vtkPolyData:
    """Build the closed outer surface of a thin box, as a 2-D case's mesh has, with point scalars."""
    cube = vtkCubeSource()
    cube.SetBounds(0.0, 2.0, 0.0, 1.0, 0.0, 0.05)
    # The cube source gives each face its own points; merging them closes the surface.
    clean = vtkCleanPolyData()
    clean.SetInputConnection(cube.GetOutputPort())
    clean.Update()
    surface = clean.GetOutput()
    if reverse:
        flip = vtkReverseSense()
        flip.SetInputData(surface)
        flip.ReverseCellsOn()
        flip.Update()
        surface = flip.GetOutput()
    set_scalars(surface, lambda points: points[:, 0] / 2.0)
    return surface


def make_sphere(center=(0.0, 0.0, 0.0), reverse: bool = False) -> vtkPolyData:
    source = vtkSphereSource()
    source.SetCenter(*center)
    source.Update()
    if not reverse:
        return source.GetOutput()
    flip = vtkReverseSense()
    flip.SetInputConnection(source.GetOutputPort())
    flip.ReverseCellsOn()
    flip.Update()
    return flip.GetOutput()


def append(*surfaces: vtkPolyData) -> vtkPolyData:
    combined = vtkAppendPolyData()
    for surface in surfaces:
        combined.AddInputData(surface)
    combined.Update()
    return combined.GetOutput()


def make_strips() -> vtkPolyData:
    strips = vtkStripper()
    strips.SetInputData(make_sphere())
    strips.Update()
    return strips.GetOutput()


@pytest.mark.parametrize("build, expected", [
    (lambda: make_sphere(), True),
    (lambda: make_slab(), True),
    (lambda: append(make_sphere(), make_sphere((3.0, 0.0, 0.0))), True),
    (lambda: make_sphere(reverse=True), False),
    (lambda: make_slab(reverse=True), False),
    (lambda: append(make_sphere(), make_sphere((3.0, 0.0, 0.0), reverse=True)), False),
    (lambda: make_square(), False),
    (lambda: vtkPolyData(), False),
    (make_strips, False),
])
def test_faces_closed_outward_cases(build, expected):
    assert faces_closed_outward(build()) is expected


def test_closed_slab_culled_same_frame():
    # Inside out, the slab cannot be culled, but unlit it looks the same.
    outward, inward = make_slab(), make_slab(reverse=True)
    with make_renderer(outward, colormap="jet") as renderer:
        # The first step with a mesh is drawn in full; the second checks it.
        first = renderer.render(outward, 0.0)
        assert renderer.actor.GetProperty().GetBackfaceCulling() == 0
        culled = renderer.render(outward, 0.0)
        assert renderer.actor.GetProperty().GetBackfaceCulling() == 1
        renderer.render(inward, 0.0)
        drawn = renderer.render(inward, 0.0)
        assert renderer.actor.GetProperty().GetBackfaceCulling() == 0

    rows, columns = data_box(culled)
    assert np.count_nonzero(culled[rows, columns] != culled[rows.start, 0]) > 1000
    assert np.array_equal(first, culled)
    assert np.abs(culled.astype(int) - drawn).max() <= COLOR_TOLERANCE


def test_changed_mesh_checked_again():
    surface = make_slab()
    with make_renderer(surface) as renderer:
        renderer.render(surface, 0.0)
        renderer.render(surface, 0.0)
        assert renderer.actor.GetProperty().GetBackfaceCulling() == 1

        # Turning the same polygons inside out must not keep the old decision.
        flipped = make_slab(reverse=True)
        surface.GetPolys().DeepCopy(flipped.GetPolys())
        renderer.render(surface, 0.0)
        renderer.render(surface, 0.0)
        assert renderer.actor.GetProperty().GetBackfaceCulling() == 0


def test_open_surface_not_culled():
    surface = make_square()
    with make_renderer(surface) as renderer:
        renderer.render(surface, 0.0)
        renderer.render(surface, 0.0)
        assert renderer.actor.GetProperty().GetBackfaceCulling() == 0


def test_camera_inside_closed_surface_not_culled():
    sphere = make_sphere()
    set_scalars(sphere, 0.5)
    camera = CameraSpec(position=(0.0, 0.0, 0.1), focal_point=(0.0, 0.0, -1.0), view_up=(0.0, 1.0, 0.0),
                        parallel_scale=1.0, parallel_projection=False)
    with FrameRenderer(Scene(size=(WIDTH, HEIGHT)), camera, (0.0, 1.0)) as renderer:
        renderer.render(sphere, 0.0)
        frame = renderer.render(sphere, 0.0)
        assert renderer.actor.GetProperty().GetBackfaceCulling() == 0
    # From inside, the sphere's back faces fill the data viewport.
    plot = frame[data_box(frame)]
    assert np.all(np.any(plot != frame[0, 0], axis=-1))


def test_cached_overlay_matches_full_render():
    surface = make_square(lambda points: points[:, 0])
    scene = Scene(size=(320, 240), title="damBreak", field="alpha.water", time_format="t = {time:.3f} s")
    camera = fit_camera(surface.GetBounds(), "auto", 1.0, plot_aspect(320, 240))
    with FrameRenderer(scene, camera, (0.0, 1.0)) as cached, \
            FrameRenderer(scene, camera, (0.0, 1.0), cache_overlay=False) as full:
        frames = []
        for index, time in enumerate((0.0, 0.125, 7.5)):
            frame = cached.render(surface, time, index=index)
            # The copied overlay replaces the drawn title and scalar bar.
            assert cached.scalar_bar.GetVisibility() == 0
            assert cached.title_text.GetVisibility() == 0
            assert np.array_equal(frame, full.render(surface, time, index=index)), time
            frames.append(frame)

    rows, columns = data_box(frames[0])
    label_area = (slice(rows.stop, 240), columns)
    assert not np.array_equal(frames[0][label_area], frames[1][label_area])
    assert not np.array_equal(frames[1][label_area], frames[2][label_area])


def test_long_time_label_draws_overlay_again():
    surface = make_square()
    scene = Scene(size=(320, 240), field="p", time_format="{label}")
    camera = fit_camera(surface.GetBounds(), "auto", 1.0, plot_aspect(320, 240))
    with FrameRenderer(scene, camera, (0.0, 1.0)) as cached, \
            FrameRenderer(scene, camera, (0.0, 1.0), cache_overlay=False) as full:
        for label in ("short", "a label long enough to run under the scalar bar " * 2, "short again"):
            frame = cached.render(surface, 0.0, label=label)
            assert cached.scalar_bar.GetVisibility() == (0 if "short" in label else 1), label
            assert np.array_equal(frame, full.render(surface, 0.0, label=label)), label
