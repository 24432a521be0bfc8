"""Tests for kvis_parallel.images: poster JPEG and numbered PNG frames read back with Pillow."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kvis_parallel.errors import UserError
from kvis_parallel.images import FrameFolderWriter, poster_format, remove_old_frames, save_poster

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


@pytest.mark.parametrize("name, image_format", [
    ("poster.jpg", "JPEG"), ("poster.JPEG", "JPEG"), ("poster.png", "PNG"),
])
def test_poster_format_follows_suffix(tmp_path, name, image_format):
    frame = make_frame()
    path = save_poster(frame, tmp_path / name)
    with Image.open(path) as image:
        assert image.format == image_format
        pixels = np.asarray(image.convert("RGB"))
    if image_format == "PNG":
        assert np.array_equal(pixels, frame)


@pytest.mark.parametrize("name", ["poster.gif", "poster", "poster.webp"])
def test_poster_other_suffix_rejected(tmp_path, name):
    with pytest.raises(UserError, match=r"\.jpg, \.jpeg or \.png"):
        poster_format(tmp_path / name)
    with pytest.raises(UserError, match="--poster"):
        save_poster(make_frame(), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_poster_write_failure_is_user_error(tmp_path):
    # A folder in place of the file makes Pillow's open fail with an OSError.
    (tmp_path / "poster.jpg").mkdir()
    with pytest.raises(UserError) as raised:
        save_poster(make_frame(), tmp_path / "poster.jpg")
    assert "cannot write --poster" in str(raised.value)
    assert str(tmp_path / "poster.jpg") in str(raised.value)


def test_frame_write_failure_is_user_error(tmp_path):
    writer = FrameFolderWriter(tmp_path / "frames")
    writer.path_for(3).mkdir()
    with pytest.raises(UserError, match="cannot write --frames"):
        writer.write(make_frame(), 3)


def test_old_frames_removed(tmp_path, caplog):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("frame_00000.png", "frame_00099.png", "notes.txt", "frame_00000.jpg"):
        (folder / name).write_bytes(b"old")

    with caplog.at_level("WARNING"):
        removed = remove_old_frames(folder)

    assert removed == 2
    assert sorted(path.name for path in folder.iterdir()) == ["frame_00000.jpg", "notes.txt"]
    assert "removed 2 frame_*.png files" in caplog.text
