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
