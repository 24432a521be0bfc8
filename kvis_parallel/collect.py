"""Rank 0's reorder window: receive frames in any order and encode them in step order."""

from __future__ import annotations

import logging

import numpy as np
from mpi4py import MPI

from .dispatch import RankContext
from .progress import Progress

logger = logging.getLogger(__name__)


# Memory for rank 0's reorder window of yuv420p frames.
REORDER_WINDOW_BYTES = 256 * 2**20
MIN_REORDER_WINDOW = 2


def reorder_window(ranks: int, frame_bytes: int) -> int:
    """Return how many frames rank 0 may hold out of order, within :data:`REORDER_WINDOW_BYTES`."""
    wanted = max(8, 4 * ranks)
    affordable = max(MIN_REORDER_WINDOW, REORDER_WINDOW_BYTES // max(1, frame_bytes))
    return min(wanted, affordable)


class FrameCollector:
    """Rank 0's reorder window: receive frames, encode them in step order."""

    def __init__(self, context: RankContext, total: int, shape: tuple[int, int], window: int,
                 writer: object, progress: Progress) -> None:
        self.context = context
        self.total = total
        self.shape = shape
        self.window = window
        self.writer = writer
        self.progress = progress
        self.next_step = 0
        self.ready: dict[int, np.ndarray] = {}
        self._free: list[np.ndarray] = []
        self._allocated = 0
        self._status = MPI.Status()

    @property
    def done(self) -> bool:
        return self.next_step >= self.total

    def can_hold(self, step_index: int) -> bool:
        return step_index < self.next_step + self.window and self._allocated - len(self._free) < self.window

    def buffer(self) -> np.ndarray:
        """Return a free frame buffer; at most ``window`` buffers ever exist."""
        if self._free:
            return self._free.pop()
        self._allocated += 1
        return np.empty(self.shape, dtype=np.uint8)

    def store(self, step_index: int, frame: np.ndarray) -> None:
        self.ready[step_index] = frame

    def poll(self) -> bool:
        """Receive waiting frames that fit in the window and encode what is in order."""
        received = False
        for step_index in range(self.next_step, min(self.total, self.next_step + self.window)):
            if step_index in self.ready:
                continue
            tag = self.context.frame_tag(step_index)
            if not self.context.frames.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=self._status):
                continue
            frame = self.buffer()
            self.context.frames.Recv([frame, MPI.BYTE], source=self._status.Get_source(), tag=tag)
            self.ready[step_index] = frame
            received = True
        return self.encode_ready() or received

    def encode_ready(self) -> bool:
        encoded = False
        while self.next_step in self.ready:
            frame = self.ready.pop(self.next_step)
            with self.context.clock.measure("encode"):
                self.writer.write_yuv420p(frame)
            self._free.append(frame)
            self.next_step += 1
            encoded = True
        if encoded:
            self.progress.advance(self.next_step)
        return encoded
