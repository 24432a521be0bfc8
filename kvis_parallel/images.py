"""Still images of frames with Pillow: the ``--poster`` JPEG or PNG and the ``--frames`` PNGs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError

logger = logging.getLogger(__name__)

POSTER_QUALITY = 90
FRAME_NAME = "frame_{index:05d}.png"
FRAME_PATTERN = "frame_*.png"

# The image format written for each --poster suffix.
POSTER_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def poster_format(path: Path) -> str:
    """Return the Pillow format for a poster file from its suffix.

    Raises
    ------
    UserError
        If the suffix is not .jpg, .jpeg or .png.
    """
    image_format = POSTER_FORMATS.get(Path(path).suffix.lower())
    if image_format is None:
        raise UserError(f"invalid --poster {path}: give a file name ending in .jpg, .jpeg or .png")
    return image_format


def write_error(option: str, path: Path, error: OSError) -> UserError:
    """Return the user error for a failure to write ``path``, given with ``option``."""
    reason = error.strerror or str(error)
    return UserError(f"cannot write {option} {path}: {reason}; free some space or choose another {option}")


def save_poster(rgb: np.ndarray, path: Path, quality: int = POSTER_QUALITY) -> Path:
    """Write one frame as a JPEG or PNG file, in the format that the suffix of ``path`` names.

    Parameters
    ----------
    rgb : numpy.ndarray
        Shape ``(H, W, 3)``, uint8, top row first.
    path : Path
        The file to write, ending in .jpg, .jpeg or .png; its folder must exist.
    quality : int
        JPEG quality from 1 to 95.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UserError
        If the folder of ``path`` does not exist, the suffix is not an image
        format, or the file cannot be written.
    """
    path = Path(path)
    _check_folder(path.parent, "--poster")
    image_format = poster_format(path)
    options = {"quality": quality} if image_format == "JPEG" else {}
    try:
        Image.fromarray(_check_rgb(rgb)).save(path, format=image_format, **options)
    except OSError as error:
        raise write_error("--poster", path, error) from None
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
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error("--frames", self.folder, error) from None

    def path_for(self, index: int) -> Path:
        """Return the file name of frame ``index``."""
        return self.folder / FRAME_NAME.format(index=index)

    def write(self, rgb: np.ndarray, index: int) -> Path:
        """Write frame ``index`` and return its path."""
        path = self.path_for(index)
        # Ranks write these between renders, so speed wins: for a rendered
        # 1280x720 frame level 1 took 21 ms for 194 KiB, the default level 6
        # 44 ms for 114 KiB (Pillow 13).
        try:
            Image.fromarray(_check_rgb(rgb)).save(path, format="PNG", compress_level=1)
        except OSError as error:
            raise write_error("--frames", path, error) from None
        return path


def remove_old_frames(folder: Path) -> int:
    """Remove the ``frame_*.png`` files of an earlier run from ``folder``; return how many.

    Other files are kept. Without this, a shorter movie would leave the
    last frames of a longer one behind.
    """
    old_frames = sorted(Path(folder).glob(FRAME_PATTERN))
    for frame in old_frames:
        frame.unlink()
    if old_frames:
        logger.warning("removed %d frame_*.png files of an earlier run from %s", len(old_frames), folder)
    return len(old_frames)


def _check_folder(folder: Path, option: str) -> None:
    if not folder.is_dir():
        raise UserError(f"invalid {option}: the folder {folder} does not exist; create it first")


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got shape {rgb.shape} and {rgb.dtype}")
    return np.ascontiguousarray(rgb)
