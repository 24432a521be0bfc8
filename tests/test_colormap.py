"""Tests for kvis_parallel.colormap: names, reversal and accuracy against published values."""

from __future__ import annotations

import numpy as np
import pytest

from kvis_parallel.colormap import BASE_NAMES, NAMES, colormap_table, colormap_table_float
from kvis_parallel.errors import UserError

# Entries 0, 64, 128, 192 and 255 of matplotlib's 256-entry tables
# (matplotlib/_cm_listed.py for viridis and plasma, matplotlib/_cm.py for
# coolwarm), as RGB floats.
PUBLISHED = {
    "viridis": {
        0: (0.267004, 0.004874, 0.329415),
        64: (0.229739, 0.322361, 0.545706),
        128: (0.127568, 0.566949, 0.550556),
        192: (0.369214, 0.788888, 0.382914),
        255: (0.993248, 0.906157, 0.143936),
    },
    "plasma": {
        0: (0.050383, 0.029803, 0.527975),
        64: (0.494877, 0.011990, 0.657865),
        128: (0.798216, 0.280197, 0.469538),
        192: (0.973416, 0.585761, 0.251540),
        255: (0.940015, 0.975158, 0.131326),
    },
}

# The interpolated control points stay within this distance of the 256-entry tables.
FLOAT_TOLERANCE = 0.55 / 255


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [2, 17, 256, 1024])
def test_table_shape_and_type(name, n):
    table = colormap_table(name, n)
    assert table.shape == (n, 3)
    assert table.dtype == np.uint8
    floats = colormap_table_float(name, n)
    assert floats.dtype == np.float64
    assert floats.min() >= 0.0
    assert floats.max() <= 1.0


@pytest.mark.parametrize("name", BASE_NAMES)
def test_reversed_table_is_mirror(name):
    forward = colormap_table_float(name, 256)
    backward = colormap_table_float(f"{name}_r", 256)
    np.testing.assert_allclose(backward, forward[::-1], atol=1e-12)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_matches_published_entries(name):
    table = colormap_table_float(name, 256)
    for index, color in PUBLISHED[name].items():
        assert np.abs(table[index] - color).max() <= FLOAT_TOLERANCE, (name, index)


@pytest.mark.parametrize("name", ["viridis", "plasma", "coolwarm"])
def test_matches_matplotlib_everywhere(name):
    matplotlib = pytest.importorskip("matplotlib")
    reference = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    table = colormap_table_float(name, 256)
    assert np.abs(table - reference).max() <= FLOAT_TOLERANCE


@pytest.mark.parametrize("fraction, expected", [
    (0.0, (0.0, 0.0, 0.5)),
    (0.125, (0.0, 0.0, 1.0)),
    # Red rises over 0.35-0.66 and blue falls over 0.34-0.65.
    (0.5, ((0.5 - 0.35) / 0.31, 1.0, 1.0 - (0.5 - 0.34) / 0.31)),
    (1.0, (0.5, 0.0, 0.0)),
])
def test_jet_break_points(fraction, expected):
    table = colormap_table_float("jet", 1001)
    np.testing.assert_allclose(table[round(fraction * 1000)], expected, atol=1e-9)


def test_grayscale_runs_black_to_white():
    table = colormap_table("grayscale", 256)
    assert np.array_equal(table[:, 0], np.arange(256))
    assert np.array_equal(table[:, 0], table[:, 1])
    assert np.array_equal(table[:, 0], table[:, 2])


def test_coolwarm_ends_and_middle():
    table = colormap_table("coolwarm", 257)
    # Moreland's end points and a nearly neutral middle.
    assert np.abs(table[0].astype(int) - (59, 76, 192)).max() <= 1
    assert np.abs(table[-1].astype(int) - (180, 4, 38)).max() <= 1
    middle = table[128].astype(int)
    assert middle.max() - middle.min() < 20


@pytest.mark.parametrize("name", ["Viridis", "rainbow", "viridis_r_r", "", "_r"])
def test_unknown_name_lists_known_names(name):
    with pytest.raises(UserError) as raised:
        colormap_table(name)
    message = str(raised.value)
    assert repr(name) in message
    for known in BASE_NAMES:
        assert known in message


def test_table_needs_two_entries():
    with pytest.raises(ValueError):
        colormap_table("viridis", 1)
