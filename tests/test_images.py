"""Tests for kvis_parallel.images: poster JPEG and numbered PNG frames read back with Pillow."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kvis_parallel.errors import UserError
from kvis_parallel.images import FrameFolderWriter, save_poster

# JPEG at quality 90 keeps flat areas within this many levels.
JPEG_TOLERANCE = 8


def make_frame(height: int = 120, width: int = 160) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :] = (20, 40, 60)
    frame[: height // 2, : width // 2] = (250, 200, 10)
    return frame


def test_poster_round_trip(tmp_path):
    frame = make_frame()
    path = save_poster(frame, tmp_path / "poster.jpg")
    with Image.open(path) as image:
        assert image.format == "JPEG"
        assert image.size == (160, 120)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # Top-left quadrant keeps its colour, so the image is not flipped.
    assert np.abs(pixels[20, 20] - (250, 200, 10)).max() <= JPEG_TOLERANCE
    assert np.abs(pixels[100, 140] - (20, 40, 60)).max() <= JPEG_TOLERANCE


def test_poster_missing_folder_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        save_poster(make_frame(), tmp_path / "missing" / "poster.jpg")


def test_frames_numbered_and_lossless(tmp_path):
    writer = FrameFolderWriter(tmp_path / "frames" / "nested")
    frames = [make_frame() + index for index in range(3)]
    for index, frame in enumerate(frames):
        writer.write(frame, index)
    names = sorted(path.name for path in writer.folder.iterdir())
    assert names == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    for index, frame in enumerate(frames):
        with Image.open(writer.path_for(index)) as image:
            assert np.array_equal(np.asarray(image), frame)


def test_frames_path_is_file(tmp_path):
    target = tmp_path / "frames"
    target.write_text("not a folder")
    with pytest.raises(UserError, match="not a folder"):
        FrameFolderWriter(target)


@pytest.mark.parametrize("shape, dtype", [((120, 160), np.uint8), ((120, 160, 3), np.float64)])
def test_bad_arrays_rejected(tmp_path, shape, dtype):
    with pytest.raises(ValueError):
        save_poster(np.zeros(shape, dtype), tmp_path / "poster.jpg")
