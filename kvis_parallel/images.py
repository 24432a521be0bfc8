"""Still images of frames with Pillow: the ``--poster`` JPEG and ``--frames`` PNGs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError

logger = logging.getLogger(__name__)

POSTER_QUALITY = 90
FRAME_NAME = "frame_{index:05d}.png"


def save_poster(rgb: np.ndarray, path: Path, quality: int = POSTER_QUALITY) -> Path:
    """Write one frame as a JPEG file.

    Parameters
    ----------
    rgb : numpy.ndarray
        Shape ``(H, W, 3)``, uint8, top row first.
    path : Path
        The file to write; its folder must exist.
    quality : int
        JPEG quality from 1 to 95.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UserError
        If the folder of ``path`` does not exist.
    """
    path = Path(path)
    _check_folder(path.parent, "--poster")
    Image.fromarray(_check_rgb(rgb)).save(path, format="JPEG", quality=quality)
    logger.debug("wrote poster %s", path)
    return path


class FrameFolderWriter:
    """Write frames as numbered PNG files ``frame_00000.png``, ``frame_00001.png``, ...

    Parameters
    ----------
    folder : Path
        Created if missing, with its parents.

    Raises
    ------
    UserError
        If ``folder`` exists and is not a folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"invalid --frames {self.folder}: it exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, index: int) -> Path:
        """Return the file name of frame ``index``."""
        return self.folder / FRAME_NAME.format(index=index)

    def write(self, rgb: np.ndarray, index: int) -> Path:
        """Write frame ``index`` and return its path."""
        path = self.path_for(index)
        # Ranks write these between renders, so speed wins: for a rendered
        # 1280x720 frame level 1 took 21 ms for 194 KiB, the default level 6
        # 44 ms for 114 KiB (Pillow 13).
        Image.fromarray(_check_rgb(rgb)).save(path, format="PNG", compress_level=1)
        return path


def _check_folder(folder: Path, option: str) -> None:
    if not folder.is_dir():
        raise UserError(f"invalid {option}: the folder {folder} does not exist; create it first")


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got shape {rgb.shape} and {rgb.dtype}")
    return np.ascontiguousarray(rgb)
