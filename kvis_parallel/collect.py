"""Rank 0's reorder window: receive frames in any order and encode them in step order.

Frames in step order go to an :class:`EncoderThread`, so that rank 0 replies
to step requests, receives frames and renders its own share while libx264
encodes. PyAV releases the GIL in ``encode`` (checked with PyAV 18: a
spinning Python thread kept its full rate during ``encode`` and ``reformat``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType

import numpy as np
from mpi4py import MPI

from .dispatch import RankContext
from .progress import Progress, StageClock

logger = logging.getLogger(__name__)


# Memory for rank 0's reorder window of yuv420p frames.
REORDER_WINDOW_BYTES = 256 * 2**20
MIN_REORDER_WINDOW = 2


def reorder_window(ranks: int, frame_bytes: int) -> int:
    """Return how many frames rank 0 may hold out of order, within :data:`REORDER_WINDOW_BYTES`."""
    wanted = max(8, 4 * ranks)
    affordable = max(MIN_REORDER_WINDOW, REORDER_WINDOW_BYTES // max(1, frame_bytes))
    return min(wanted, affordable)


class EncoderThread:
    """Encode frames with ``writer`` in a thread of their own, in the order they are submitted.

    Use it as a context manager around the frames' submission, inside the
    writer's own block. Leaving it, or :meth:`finish`, waits for the
    submitted frames (after an exception, only for the frame being encoded).
    So the writer is never flushed or closed while the thread uses it. An
    error in the thread is raised again in the caller by :meth:`check`,
    :meth:`submit`, :meth:`finish` and on leaving the block.
    """

    def __init__(self, writer: object, on_encoded: Callable[[np.ndarray], None], clock: StageClock,
                 convert: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.writer = writer
        self.on_encoded = on_encoded
        self.clock = clock
        self.convert = convert
        self.encoded = 0
        self.error: BaseException | None = None
        self._frames: queue.SimpleQueue[tuple[np.ndarray, np.ndarray | None] | None] = queue.SimpleQueue()
        self._discard = False
        self._thread = threading.Thread(target=self._run, name="kvis-encoder", daemon=True)

    def __enter__(self) -> EncoderThread:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if not self._thread.is_alive():
            return
        self._discard = kind is not None
        self._frames.put(None)
        self._thread.join()
        if kind is None:
            self.check()

    def finish(self) -> None:
        """Wait until every submitted frame is encoded; raise the thread's error, if any."""
        self.__exit__(None, None, None)

    def submit(self, frame: np.ndarray, rgb: np.ndarray | None = None) -> None:
        """Queue ``frame`` for encoding; ``on_encoded(frame)`` is called from the thread after it.

        With ``rgb``, the thread first converts it with ``convert`` into
        ``frame``, so rank 0's own frames are converted off its MPI thread.
        """
        self.check()
        if rgb is not None and self.convert is None:
            raise ValueError("an RGB frame needs an EncoderThread made with convert")
        self._frames.put((frame, rgb))

    def check(self) -> None:
        """Raise the error that the thread met while encoding, if any; it skips later frames."""
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (item := self._frames.get()) is not None:
            if self._discard or self.error is not None:
                continue
            frame, rgb = item
            try:
                self._encode(frame, rgb)
            except BaseException as error:  # noqa: BLE001  raised again in the MPI thread by check()
                self.error = error
                continue
            self.encoded += 1
            self.on_encoded(frame)

    def _encode(self, frame: np.ndarray, rgb: np.ndarray | None) -> None:
        # While this thread runs, only it adds to "convert" and "encode" on
        # rank 0, so the sums need no lock.
        if rgb is not None:
            with self.clock.measure("convert"):
                frame[...] = self.convert(rgb)
        with self.clock.measure("encode"):
            self.writer.write_yuv420p(frame)


class FrameCollector:
    """Rank 0's reorder window: receive frames and pass them in step order to the encoder.

    Frames are encoded by ``encoder`` (an :class:`EncoderThread` over the
    writer) when given, else at once by ``writer`` in the calling thread.
    """

    def __init__(self, context: RankContext, total: int, shape: tuple[int, int], window: int,
                 writer: object, progress: Progress, encoder: EncoderThread | None = None) -> None:
        self.context = context
        self.total = total
        self.shape = shape
        self.window = window
        self.writer = writer
        self.progress = progress
        self.encoder = encoder
        self.next_step = 0
        self.ready: dict[int, np.ndarray] = {}
        self._rgb: dict[int, np.ndarray] = {}
        # Appended to by the encoder thread and popped here; both are atomic under the GIL.
        self._free: list[np.ndarray] = []
        self._allocated = 0
        self._reported = 0
        self._status = MPI.Status()

    @property
    def done(self) -> bool:
        """Whether every frame has been passed to the encoder (and, without a thread, encoded)."""
        return self.next_step >= self.total

    def release(self, frame: np.ndarray) -> None:
        """Return an encoded frame's buffer for reuse; the encoder thread calls it."""
        self._free.append(frame)

    def can_hold(self, step_index: int) -> bool:
        return step_index < self.next_step + self.window and self._buffer_available()

    def _buffer_available(self) -> bool:
        return self._allocated - len(self._free) < self.window

    def buffer(self) -> np.ndarray:
        """Return a free frame buffer; at most ``window`` buffers ever exist."""
        if self._free:
            return self._free.pop()
        self._allocated += 1
        return np.empty(self.shape, dtype=np.uint8)

    def store(self, step_index: int, frame: np.ndarray, rgb: np.ndarray | None = None) -> None:
        """Hold ``frame`` for ``step_index``; with ``rgb``, the encoder thread converts it into ``frame``."""
        if rgb is not None:
            if self.encoder is None:
                raise ValueError("an RGB frame needs the encoder thread to convert it")
            self._rgb[step_index] = rgb
        self.ready[step_index] = frame

    def poll(self) -> bool:
        """Receive waiting frames that fit in the window and encode what is in order."""
        if self.encoder is not None:
            self.encoder.check()
        received = False
        for step_index in range(self.next_step, min(self.total, self.next_step + self.window)):
            if step_index in self.ready:
                continue
            # Frames queued for the encoder thread count against the window too,
            # so rank 0 keeps at most ``window`` frames however slow the encoder.
            if not self._buffer_available():
                break
            tag = self.context.frame_tag(step_index)
            if not self.context.frames.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=self._status):
                continue
            frame = self.buffer()
            self.context.frames.Recv([frame, MPI.BYTE], source=self._status.Get_source(), tag=tag)
            self.ready[step_index] = frame
            received = True
        return self.encode_ready() or received

    def encode_ready(self) -> bool:
        """Encode, or pass to the encoder thread, the frames that are next in step order."""
        encoded = False
        while self.next_step in self.ready:
            frame = self.ready.pop(self.next_step)
            if self.encoder is not None:
                self.encoder.submit(frame, self._rgb.pop(self.next_step, None))
            else:
                with self.context.clock.measure("encode"):
                    self.writer.write_yuv420p(frame)
                self.release(frame)
            self.next_step += 1
            encoded = True
        self._report_progress()
        return encoded

    def _report_progress(self) -> None:
        done = self.next_step if self.encoder is None else self.encoder.encoded
        if done != self._reported:
            self._reported = done
            self.progress.advance(done)
