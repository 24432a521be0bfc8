"""Tests for kvis_parallel.collect: the reorder window's size and its order of encoding."""

from __future__ import annotations

import numpy as np
import pytest

from kvis_parallel import collect, parallel


@pytest.mark.parametrize(("ranks", "width", "height"), [
    (1, 160, 120), (4, 1280, 720), (64, 1920, 1080), (256, 3840, 2160), (8, 7680, 7680),
])
def test_reorder_window_bounded(ranks, width, height):
    frame_bytes = width * height * 3 // 2
    window = collect.reorder_window(ranks, frame_bytes)

    assert window >= collect.MIN_REORDER_WINDOW
    assert window * frame_bytes <= max(collect.REORDER_WINDOW_BYTES, collect.MIN_REORDER_WINDOW * frame_bytes)


class RecordingWriter:
    """Stands in for encode.MovieWriter: records the first Y value of each frame."""

    def __init__(self) -> None:
        self.written: list[int] = []

    def write_yuv420p(self, planes: np.ndarray) -> None:
        self.written.append(int(planes[0, 0]))


def test_collector_encodes_in_order_within_window():
    from mpi4py import MPI

    from kvis_parallel.progress import Progress

    writer = RecordingWriter()
    context = parallel.make_context(MPI.COMM_SELF)
    collector = collect.FrameCollector(context, total=6, shape=(6, 4), window=3, writer=writer,
                                      progress=Progress())
    for step in (2, 1):
        assert collector.can_hold(step)
        frame = collector.buffer()
        frame[...] = step
        collector.store(step, frame)
    assert not collector.can_hold(3), "step 3 is outside the window of steps 0..2"
    assert writer.written == []

    frame = collector.buffer()
    frame[...] = 0
    collector.store(0, frame)
    collector.encode_ready()

    assert writer.written == [0, 1, 2]
    assert collector.next_step == 3
    assert collector.can_hold(5)
    assert collector._allocated == 3, "buffers are reused, never more than the window"


class FailingWriter:
    """Stands in for encode.MovieWriter: fails on the first frame, as a full disk would."""

    def write_yuv420p(self, planes: np.ndarray) -> None:
        raise OSError("No space left on device")


def _collector_with_thread(writer, total, window, convert=None):
    from mpi4py import MPI

    from kvis_parallel.progress import Progress

    context = parallel.make_context(MPI.COMM_SELF)
    collector = collect.FrameCollector(context, total=total, shape=(6, 4), window=window, writer=writer,
                                      progress=Progress())
    encoder = collect.EncoderThread(writer, collector.release, context.clock, convert)
    collector.encoder = encoder
    return collector, encoder, context


def test_encoder_thread_keeps_step_order():
    writer = RecordingWriter()
    collector, encoder, context = _collector_with_thread(writer, total=5, window=5)
    with encoder:
        for step in (3, 1, 4, 0, 2):
            frame = collector.buffer()
            frame[...] = step
            collector.store(step, frame)
            collector.encode_ready()
        encoder.finish()

    assert writer.written == [0, 1, 2, 3, 4]
    assert encoder.encoded == 5
    assert collector._allocated - len(collector._free) == 0, "every buffer is returned after encoding"
    assert context.clock.seconds["encode"] > 0


def test_encoder_thread_converts_rgb():
    writer = RecordingWriter()
    converted = []

    def convert(rgb):
        converted.append(int(rgb[0, 0, 0]))
        return np.full((6, 4), rgb[0, 0, 0] + 100, dtype=np.uint8)

    collector, encoder, _ = _collector_with_thread(writer, total=2, window=2, convert=convert)
    with encoder:
        for step in (0, 1):
            rgb = np.full((4, 4, 3), step, dtype=np.uint8)
            collector.store(step, collector.buffer(), rgb)
        collector.encode_ready()

    assert converted == [0, 1]
    assert writer.written == [100, 101]


def test_rgb_frame_without_thread_rejected():
    from mpi4py import MPI

    from kvis_parallel.progress import Progress

    collector = collect.FrameCollector(parallel.make_context(MPI.COMM_SELF), total=1, shape=(6, 4), window=1,
                                      writer=RecordingWriter(), progress=Progress())
    with pytest.raises(ValueError, match="encoder thread"):
        collector.store(0, collector.buffer(), np.zeros((4, 4, 3), dtype=np.uint8))


def test_encoder_thread_error_reaches_caller():
    collector, encoder, _ = _collector_with_thread(FailingWriter(), total=3, window=3)
    with pytest.raises(OSError, match="No space left"):
        with encoder:
            frame = collector.buffer()
            collector.store(0, frame)
            collector.encode_ready()
            encoder.finish()
    assert encoder.encoded == 0


def test_poll_holds_at_most_window_frames():
    writer = RecordingWriter()
    collector, encoder, _ = _collector_with_thread(writer, total=10, window=2)
    # Two frames handed to a thread that has not started yet stay in use.
    for step in (0, 1):
        collector.store(step, collector.buffer())
    collector.encode_ready()

    assert not collector.can_hold(2), "frames queued for the encoder count against the window"
    with encoder:
        encoder.finish()
    assert collector.can_hold(2)
