"""Named colormaps as RGB lookup tables, without VTK.

Each map is a list of control points ``(index, r, g, b)`` on a 0..255 scale,
interpolated linearly per channel. ``viridis`` and ``plasma`` (by Stéfan van
der Walt and Nathaniel Smith, CC0) and ``coolwarm`` (Kenneth Moreland's
diverging map) were sampled at 32 points from matplotlib 3.11's 256-entry
tables: the greedy choice of points keeps the interpolated table within
0.55/255 of the reference in every channel, less than one 8-bit level.
``jet`` is the classic piecewise-linear definition and ``grayscale`` runs from
black to white. Every map has a reversed form named with ``_r``.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import UserError

logger = logging.getLogger(__name__)

_VIRIDIS = (
    (  0, 0.2670, 0.0049, 0.3294),
    (  4, 0.2726, 0.0256, 0.3531),
    (  8, 0.2770, 0.0503, 0.3757),
    ( 15, 0.2819, 0.0897, 0.4124),
    ( 22, 0.2832, 0.1258, 0.4450),
    ( 29, 0.2809, 0.1608, 0.4729),
    ( 35, 0.2762, 0.1901, 0.4930),
    ( 42, 0.2680, 0.2235, 0.5120),
    ( 49, 0.2573, 0.2561, 0.5266),
    ( 57, 0.2431, 0.2921, 0.5385),
    ( 72, 0.2143, 0.3556, 0.5512),
    ( 91, 0.1806, 0.4300, 0.5573),
    (112, 0.1490, 0.5081, 0.5572),
    (129, 0.1265, 0.5706, 0.5498),
    (137, 0.1201, 0.6001, 0.5425),
    (143, 0.1201, 0.6222, 0.5349),
    (149, 0.1263, 0.6441, 0.5253),
    (154, 0.1373, 0.6623, 0.5156),
    (162, 0.1664, 0.6909, 0.4965),
    (170, 0.2080, 0.7187, 0.4729),
    (179, 0.2669, 0.7488, 0.4406),
    (188, 0.3359, 0.7770, 0.4020),
    (198, 0.4219, 0.8058, 0.3519),
    (208, 0.5160, 0.8312, 0.2943),
    (219, 0.6266, 0.8546, 0.2234),
    (231, 0.7519, 0.8750, 0.1432),
    (235, 0.7938, 0.8807, 0.1200),
    (238, 0.8249, 0.8847, 0.1062),
    (242, 0.8660, 0.8899, 0.0960),
    (246, 0.9063, 0.8949, 0.0981),
    (250, 0.9456, 0.8998, 0.1128),
    (255, 0.9932, 0.9062, 0.1439),
)
_PLASMA = (
    (  0, 0.0504, 0.0298, 0.5280),
    (  2, 0.0754, 0.0272, 0.5380),
    (  4, 0.0964, 0.0252, 0.5471),
    ( 11, 0.1564, 0.0207, 0.5741),
    ( 21, 0.2280, 0.0160, 0.6049),
    ( 32, 0.2999, 0.0096, 0.6316),
    ( 40, 0.3502, 0.0044, 0.6463),
    ( 48, 0.3994, 0.0009, 0.6561),
    ( 56, 0.4477, 0.0021, 0.6602),
    ( 63, 0.4891, 0.0101, 0.6585),
    ( 67, 0.5122, 0.0188, 0.6552),
    ( 71, 0.5350, 0.0312, 0.6502),
    ( 79, 0.5790, 0.0643, 0.6351),
    ( 88, 0.6260, 0.1033, 0.6113),
    ( 99, 0.6792, 0.1518, 0.5752),
    (110, 0.7277, 0.2006, 0.5353),
    (122, 0.7758, 0.2537, 0.4912),
    (134, 0.8197, 0.3068, 0.4483),
    (153, 0.8814, 0.3925, 0.3832),
    (171, 0.9308, 0.4779, 0.3227),
    (187, 0.9650, 0.5591, 0.2685),
    (202, 0.9863, 0.6410, 0.2179),
    (215, 0.9943, 0.7167, 0.1772),
    (221, 0.9941, 0.7531, 0.1614),
    (227, 0.9912, 0.7905, 0.1494),
    (232, 0.9865, 0.8224, 0.1436),
    (236, 0.9812, 0.8483, 0.1423),
    (243, 0.9684, 0.8946, 0.1470),
    (250, 0.9517, 0.9417, 0.1529),
    (253, 0.9442, 0.9619, 0.1469),
    (254, 0.9419, 0.9686, 0.1410),
    (255, 0.9400, 0.9752, 0.1313),
)
_COOLWARM = (
    (  0, 0.2298, 0.2987, 0.7537),
    ( 16, 0.3042, 0.4069, 0.8453),
    ( 24, 0.3433, 0.4594, 0.8841),
    ( 32, 0.3837, 0.5102, 0.9178),
    ( 40, 0.4252, 0.5591, 0.9461),
    ( 48, 0.4677, 0.6056, 0.9685),
    ( 56, 0.5108, 0.6494, 0.9851),
    ( 64, 0.5543, 0.6901, 0.9955),
    ( 72, 0.5978, 0.7273, 0.9998),
    ( 80, 0.6408, 0.7608, 0.9978),
    ( 88, 0.6831, 0.7900, 0.9898),
    ( 96, 0.7240, 0.8149, 0.9757),
    (104, 0.7634, 0.8351, 0.9557),
    (112, 0.8006, 0.8504, 0.9300),
    (120, 0.8353, 0.8605, 0.8990),
    (128, 0.8674, 0.8644, 0.8626),
    (135, 0.8959, 0.8499, 0.8235),
    (143, 0.9227, 0.8286, 0.7771),
    (151, 0.9434, 0.8023, 0.7292),
    (159, 0.9582, 0.7712, 0.6803),
    (167, 0.9670, 0.7357, 0.6309),
    (175, 0.9699, 0.6958, 0.5813),
    (183, 0.9669, 0.6520, 0.5320),
    (191, 0.9583, 0.6043, 0.4833),
    (200, 0.9417, 0.5464, 0.4297),
    (207, 0.9244, 0.4986, 0.3891),
    (215, 0.8995, 0.4407, 0.3441),
    (223, 0.8697, 0.3793, 0.3009),
    (231, 0.8350, 0.3136, 0.2598),
    (239, 0.7959, 0.2418, 0.2208),
    (247, 0.7527, 0.1576, 0.1843),
    (255, 0.7057, 0.0156, 0.1502),
)

# Break points (position, value) per channel of jet, the MATLAB-style rainbow.
_JET_CHANNELS = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)

_SAMPLED = {"viridis": _VIRIDIS, "plasma": _PLASMA, "coolwarm": _COOLWARM}

BASE_NAMES = ("viridis", "plasma", "coolwarm", "jet", "grayscale")
NAMES = BASE_NAMES + tuple(f"{name}_r" for name in BASE_NAMES)


def colormap_table_float(name: str, n: int = 256) -> np.ndarray:
    """Sample a named colormap at ``n`` evenly spaced positions.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`, for example ``"viridis"`` or ``"coolwarm_r"``.
    n : int
        Number of table entries, at least 2.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 3)``, float64 RGB in [0, 1]; row 0 is the colour of the
        range minimum.

    Raises
    ------
    UserError
        If ``name`` is not a known colormap.
    """
    if n < 2:
        raise ValueError(f"a colormap table needs at least 2 entries, got n={n}")

    base, reverse = _split_name(name)
    positions = np.linspace(0.0, 1.0, n)
    if reverse:
        positions = positions[::-1]

    if base == "jet":
        channels = [_interpolate(positions, points) for points in _JET_CHANNELS]
    elif base == "grayscale":
        channels = [positions, positions, positions]
    else:
        control = np.asarray(_SAMPLED[base], dtype=np.float64)
        x = control[:, 0] / 255.0
        channels = [np.interp(positions, x, control[:, channel]) for channel in (1, 2, 3)]

    return np.clip(np.stack(channels, axis=1), 0.0, 1.0)


def colormap_table(name: str, n: int = 256) -> np.ndarray:
    """Sample a named colormap as 8-bit RGB.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    n : int
        Number of table entries, at least 2.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 3)``, uint8, rounded from :func:`colormap_table_float`.

    Raises
    ------
    UserError
        If ``name`` is not a known colormap.
    """
    return np.rint(colormap_table_float(name, n) * 255.0).astype(np.uint8)


def _split_name(name: str) -> tuple[str, bool]:
    if name not in NAMES:
        raise UserError(
            f"unknown colormap {name!r}: choose one of {', '.join(BASE_NAMES)} "
            "(append _r to reverse one, e.g. viridis_r)"
        )
    base = name.removesuffix("_r")
    return base, base != name


def _interpolate(positions: np.ndarray, points: tuple[tuple[float, float], ...]) -> np.ndarray:
    x, y = zip(*points)
    return np.interp(positions, x, y)
