"""Tests for kvis_parallel.encode: yuv420p conversion and MP4 round trips decoded with PyAV."""

from __future__ import annotations

import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from kvis_parallel.encode import MovieWriter, rgb_to_yuv420p
from kvis_parallel.errors import UserError

WIDTH, HEIGHT = 160, 120

# Encoded and decoded colours of flat areas stay within this many levels
# (0-255) of the input at crf 18.
CODEC_TOLERANCE = 6


def reference_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """Convert with BT.601 limited-range integer formulas and 2x2 chroma means."""
    height, width, _ = rgb.shape
    red, green, blue = (rgb[..., channel].astype(np.float64) for channel in range(3))
    luma = 16 + (65.481 * red + 128.553 * green + 24.966 * blue) / 255
    quad = rgb.reshape(height // 2, 2, width // 2, 2, 3).astype(np.float64).mean(axis=(1, 3))
    red, green, blue = quad[..., 0], quad[..., 1], quad[..., 2]
    blue_difference = 128 + (-37.797 * red - 74.203 * green + 112.0 * blue) / 255
    red_difference = 128 + (112.0 * red - 93.786 * green - 18.214 * blue) / 255
    # The three planes are contiguous, so a chroma plane need not fill whole rows.
    planes = np.concatenate([luma.ravel(), blue_difference.ravel(), red_difference.ravel()])
    planes = planes.reshape(height * 3 // 2, width)
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def yuv420p_to_rgb(planes: np.ndarray) -> np.ndarray:
    """Invert BT.601 limited range with chroma repeated over each 2x2 block."""
    height = planes.shape[0] * 2 // 3
    width = planes.shape[1]
    flat = planes.ravel().astype(np.float64)
    luma = flat[:height * width].reshape(height, width) - 16
    chroma_size = (height // 2) * (width // 2)
    chroma_b = flat[height * width:height * width + chroma_size].reshape(height // 2, width // 2) - 128
    chroma_r = flat[height * width + chroma_size:].reshape(height // 2, width // 2) - 128
    chroma_b = chroma_b.repeat(2, axis=0).repeat(2, axis=1)
    chroma_r = chroma_r.repeat(2, axis=0).repeat(2, axis=1)
    red = 1.164383 * luma + 1.596027 * chroma_r
    green = 1.164383 * luma - 0.391762 * chroma_b - 0.812968 * chroma_r
    blue = 1.164383 * luma + 2.017232 * chroma_b
    return np.clip(np.rint(np.stack([red, green, blue], axis=-1)), 0, 255).astype(np.uint8)


def make_pattern(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Return a frame with flat colour blocks whose positions depend on ``index``."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :] = (30, 60, 90)
    left = (index * 8) % max(width - 40, 1)
    frame[40:80, left:left + 40] = (220, 40, 40)
    frame[:20, :] = (40, 200, 80)
    return frame



def read_boxes(data: bytes) -> list[str]:
    """List the top-level MP4 box types in file order."""
    boxes = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        boxes.append(kind.decode("ascii", "replace"))
        if size < 8:
            break
        offset += size
    return boxes


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """Write 25 frames at 10 fps and return the path and the input frames."""
    path = tmp_path_factory.mktemp("movie") / "movie.mp4"
    frames = [make_pattern(index) for index in range(25)]
    with MovieWriter(path, WIDTH, HEIGHT, fps=10, crf=18, preset="veryfast") as writer:
        for frame in frames[:12]:
            writer.write_rgb(frame)
        for frame in frames[12:]:
            writer.write_yuv420p(rgb_to_yuv420p(frame))
    return path, frames


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", [(160, 120), (64, 18), (1280, 720)])
def test_yuv420p_matches_reference(seed, size):
    width, height = size
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    planes = rgb_to_yuv420p(rgb)
    assert planes.shape == (height * 3 // 2, width)
    assert planes.dtype == np.uint8
    difference = np.abs(planes.astype(int) - reference_yuv420p(rgb).astype(int))
    assert difference[:height].max() <= 1, "luma differs"
    assert difference[height:].max() <= 1, "chroma differs"


@pytest.mark.parametrize("color, expected_yuv", [
    ((0, 0, 0), (16, 128, 128)),
    ((255, 255, 255), (235, 128, 128)),
    ((255, 0, 0), (81, 90, 240)),
    ((0, 255, 0), (145, 54, 34)),
    ((0, 0, 255), (41, 240, 110)),
])
def test_yuv420p_primary_colors(color, expected_yuv):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :] = color
    planes = rgb_to_yuv420p(rgb)
    assert abs(int(planes[0, 0]) - expected_yuv[0]) <= 1
    assert abs(int(planes[16, 0]) - expected_yuv[1]) <= 1
    assert abs(int(planes[20, 0]) - expected_yuv[2]) <= 1


@pytest.mark.parametrize("shape, dtype", [((120, 160), np.uint8), ((121, 160, 3), np.uint8),
                                          ((120, 160, 3), np.float32), ((120, 160, 4), np.uint8)])
def test_yuv420p_rejects_bad_arrays(shape, dtype):
    with pytest.raises(ValueError):
        rgb_to_yuv420p(np.zeros(shape, dtype))


def test_movie_stream_properties(movie):
    path, frames = movie
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (WIDTH, HEIGHT)
        assert stream.average_rate == 10
        assert stream.frames == len(frames)
        assert float(stream.duration * stream.time_base) == pytest.approx(len(frames) / 10)


def test_movie_frames_decode_in_order(movie):
    path, frames = movie
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == len(frames)

    times = [frame.time for frame in decoded]
    assert all(later > earlier for earlier, later in zip(times, times[1:]))
    assert times == pytest.approx([index / 10 for index in range(len(frames))])

    for index, (frame, original) in enumerate(zip(decoded, frames)):
        rgb = yuv420p_to_rgb(frame.to_ndarray(format="yuv420p"))
        block = (slice(44, 76), slice((index * 8) % 120 + 4, (index * 8) % 120 + 36))
        difference = np.abs(rgb[block].astype(int) - original[block].astype(int)).max()
        assert difference <= CODEC_TOLERANCE, f"frame {index} differs by {difference}"


def test_movie_pts_strictly_increasing(movie):
    path, _ = movie
    with av.open(str(path)) as container:
        packets = [packet for packet in container.demux(video=0) if packet.pts is not None]
    presentation = sorted(packet.pts for packet in packets)
    assert len(set(presentation)) == len(presentation)
    assert presentation[0] == 0


def test_movie_tagged_bt601_limited_range(movie):
    path, _ = movie
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert frame.colorspace == 6  # SMPTE 170M, the BT.601 matrix
    assert frame.color_range == 1  # MPEG, limited range


def test_movie_moov_before_mdat(movie):
    path, _ = movie
    boxes = read_boxes(path.read_bytes())
    assert "moov" in boxes
    assert "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize("fps", [1, 24, 60])
def test_movie_duration_is_frames_over_fps(tmp_path, fps):
    path = tmp_path / "movie.mp4"
    with MovieWriter(path, 32, 32, fps=fps, crf=30, preset="ultrafast") as writer:
        for index in range(7):
            writer.write_rgb(np.full((32, 32, 3), index * 30, np.uint8))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(fps)
        assert stream.frames == 7
        assert float(stream.duration * stream.time_base) == pytest.approx(7 / fps)


@pytest.mark.parametrize("width, height", [(162, 122), (34, 18)])
def test_movie_with_odd_half_height(tmp_path, width, height):
    # Heights like 122 give chroma planes of odd height, which do not fill
    # whole rows of the stacked array.
    path = tmp_path / "movie.mp4"
    frames = [make_pattern(index, width, max(height, 80))[:height] for index in range(3)]
    with MovieWriter(path, width, height, fps=5, crf=18) as writer:
        for frame in frames:
            writer.write_rgb(frame)
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]
    assert len(decoded) == 3
    for planes, original in zip(decoded, frames):
        rgb = yuv420p_to_rgb(planes)
        assert np.abs(rgb[4:16, 4:-4].astype(int) - original[4:16, 4:-4].astype(int)).max() <= CODEC_TOLERANCE


@pytest.mark.parametrize("width, height", [(161, 120), (160, 121), (8, 8)])
def test_writer_rejects_odd_or_tiny_size(tmp_path, width, height):
    with pytest.raises(UserError, match=f"{width}x{height}"):
        MovieWriter(tmp_path / "movie.mp4", width, height, fps=10)


def test_writer_rejects_wrong_frame_shape(tmp_path):
    with MovieWriter(tmp_path / "movie.mp4", 32, 32, fps=10) as writer:
        writer.write_rgb(np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="shape"):
            writer.write_yuv420p(np.zeros((32, 32), np.uint8))


def test_writer_removes_file_when_block_raises(tmp_path):
    path = tmp_path / "movie.mp4"
    with pytest.raises(RuntimeError):
        with MovieWriter(path, 32, 32, fps=10) as writer:
            writer.write_rgb(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("render failed")
    assert not path.exists()


def test_writer_close_twice_is_harmless(tmp_path):
    writer = MovieWriter(tmp_path / "movie.mp4", 32, 32, fps=10)
    writer.write_rgb(np.zeros((32, 32, 3), np.uint8))
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write_rgb(np.zeros((32, 32, 3), np.uint8))
