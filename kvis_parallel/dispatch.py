"""Control messages between ranks: step hand-out, failure reports, and the stop after a failure.

Rank 0 runs a :class:`Dispatcher` that hands out one step number at a time,
and a :class:`ControlServer` that replies to the other ranks' step requests
and raises the failures they report. The other ranks keep :data:`REQUESTS_AHEAD`
requests open (see :func:`assigned_steps`). Control messages use a duplicate
of the communicator, so they never match a frame's tag.

After rank 0 has reported a failure, it sends :data:`TAG_STOP` on the world
communicator to every other rank. A rank sees it the next time it polls,
acknowledges it with :data:`TAG_STOPPED` and raises :class:`JobStopped`, so
that it leaves through ``MPI_Finalize`` with the job's exit status. A rank
that has finished sends its statistics with :data:`TAG_FINISHED` as its last
message, which rank 0 takes as its reply when the stop comes too late for it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .errors import EXIT_BUG, EXIT_USER_ERROR
from .progress import RankStats, StageClock

logger = logging.getLogger(__name__)

# Sleep between polls of an idle rank, doubling up to the maximum. Rank 0
# serves many ranks and encodes, so it may sleep longer than a waiting renderer.
POLL_SLEEP_MIN_S = 0.0002
POLL_SLEEP_MAX_S = 0.01
WORKER_SLEEP_MAX_S = 0.002

# Step requests each rank keeps open. Rank 0 replies only between its own
# frames in the shared mode, so with one open request a rank that renders as
# fast as rank 0 would often wait for its next step.
REQUESTS_AHEAD = 2

# Tags on the control communicator.
TAG_REQUEST = 1
TAG_ASSIGN = 2
TAG_FAILURE = 3
NO_MORE_STEPS = -1

# Tags on the world communicator, which carries no other point-to-point messages.
TAG_STOP = 4
TAG_STOPPED = 5
TAG_FINISHED = 6

# Seconds rank 0 waits for every other rank to acknowledge TAG_STOP. A rank
# polls between steps, so this must exceed the time to read or render one.
# NOTE: a rank busy longer than this, or blocked in the pre-pass Allreduce,
# is ended by the MPI_Abort fallback instead.
STOP_GRACE_S = 5.0


class JobFailure(Exception):
    """A failure of one rank, already described with its rank, host and step.

    ``kind`` is "user" (bad input, exit status 2) or "bug" (exit status 1).
    ``details`` contains the traceback of a bug.
    """

    def __init__(self, kind: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details

    @property
    def exit_status(self) -> int:
        return EXIT_USER_ERROR if self.kind == "user" else EXIT_BUG


@dataclass
class RankContext:
    """This rank's communicators and the timers it fills in."""

    world: MPI.Comm
    control: MPI.Comm
    frames: MPI.Comm
    clock: StageClock = field(default_factory=StageClock)
    stats: RankStats | None = None
    surface_loader: object | None = None

    @property
    def rank(self) -> int:
        return self.world.Get_rank()

    @property
    def size(self) -> int:
        return self.world.Get_size()

    def frame_tag(self, step_index: int) -> int:
        """Return the message tag of a step's frame: the step number, wrapped at MPI_TAG_UB.

        The standard guarantees tags up to 32767 only. Frames in flight span at
        most the reorder window plus a few steps per rank, so wrapping stays
        unambiguous.
        """
        # NOTE: with a bound of 32767 that holds up to a few thousand ranks;
        # MPICH's bound is 2**29 - 1.
        return step_index % (self.world.Get_attr(MPI.TAG_UB) + 1)


class JobStopped(SystemExit):
    """Raised on a rank other than 0 when rank 0 ends the job after a failure it has reported.

    It subclasses SystemExit so that it passes handlers of Exception and ends
    the process with ``code``, the job's exit status, through ``MPI_Finalize``.
    """


def stop_if_requested(context: RankContext) -> None:
    """Acknowledge rank 0's stop message and raise :class:`JobStopped`, if one has arrived.

    Rank 0 never receives a stop message, so on rank 0 this does nothing.
    """
    if context.rank == 0 or not context.world.Iprobe(source=0, tag=TAG_STOP):
        return
    status = context.world.recv(source=0, tag=TAG_STOP)
    context.world.send(None, dest=0, tag=TAG_STOPPED)
    logger.debug("rank %d stops: rank 0 ended the job with exit status %d", context.rank, status)
    raise JobStopped(status)


def stop_other_ranks(world: MPI.Comm, status: int, grace_s: float = STOP_GRACE_S) -> bool:
    """Send the stop message to every other rank and wait up to ``grace_s`` for them all to acknowledge.

    Returns
    -------
    bool
        True when every rank acknowledged, so that all of them can end with
        ``MPI_Finalize``; False when some rank did not (it crashed or is stuck
        in a collective call or in VTK), and the caller must abort the job.
    """
    others = [rank for rank in range(world.Get_size()) if rank != 0]
    # These small sends complete at once, but one to a rank that has already
    # exited never does, so they are kept referenced here and never waited for.
    sends = [world.isend(status, dest=rank, tag=TAG_STOP) for rank in others]
    # A rank that finished its work before the failure sends its statistics
    # (TAG_FINISHED) and exits without seeing the stop: that counts as a reply.
    replied: set[int] = set()
    message = MPI.Status()
    deadline = time.monotonic() + grace_s
    while len(replied) < len(others) and time.monotonic() < deadline:
        if not world.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=message):
            time.sleep(POLL_SLEEP_MAX_S)
            continue
        source, tag = message.Get_source(), message.Get_tag()
        world.recv(source=source, tag=tag)
        if tag in (TAG_STOPPED, TAG_FINISHED):
            replied.add(source)

    missing = sorted(set(others) - replied)
    if missing:
        # Debug, not warning: the error line written before must stay the last line on stderr.
        logger.debug("ranks %s did not acknowledge the stop within %.0f s; aborting", missing, grace_s)
        return False
    logger.debug("every rank acknowledged the stop; %d stop messages still in flight",
                 sum(not request.Test() for request in sends))
    return True


def send_final_stats(context: RankContext) -> None:
    """Send this rank's statistics to rank 0: the last message of a rank other than 0."""
    context.world.send(context.stats, dest=0, tag=TAG_FINISHED)


def receive_final_stats(context: RankContext) -> list[RankStats]:
    """Return the statistics of every rank, in rank order; call it on rank 0."""
    others = [context.world.recv(source=rank, tag=TAG_FINISHED) for rank in range(1, context.size)]
    return [context.stats, *others]


class Dispatcher:
    """Rank 0's hand-out of step numbers: the lowest free step, or a nearby one already in memory.

    A rank that keeps a step's surface from the pre-pass gets that step when
    it is at most ``lookahead`` steps above the lowest free one. No step is
    ever handed out further ahead than that. So a frame that a rank waits to
    send is at most ``lookahead`` steps beyond the step rank 0 needs next,
    and a reorder window larger than ``lookahead`` can always receive it, so
    the protocol cannot deadlock (the callers keep ``lookahead`` below the window).
    """

    def __init__(self, steps: Sequence[int], cached: dict[int, Sequence[int]] | None = None,
                 lookahead: int = 0) -> None:
        self._steps = sorted(steps)
        self._assigned = dict.fromkeys(self._steps, False)
        self._lowest = 0
        self._cached = {rank: deque(sorted(held)) for rank, held in (cached or {}).items()}
        self.lookahead = lookahead
        self.owner: dict[int, int] = {}

    def _lowest_free(self) -> int:
        while self._lowest < len(self._steps) and self._assigned[self._steps[self._lowest]]:
            self._lowest += 1
        return self._steps[self._lowest] if self._lowest < len(self._steps) else NO_MORE_STEPS

    def peek(self, rank: int) -> int:
        """Return the step that :meth:`take` would give ``rank``, or :data:`NO_MORE_STEPS`."""
        lowest = self._lowest_free()
        held = self._cached.get(rank)
        while held and self._assigned[held[0]]:
            held.popleft()
        if held and held[0] <= lowest + self.lookahead:
            return held[0]
        return lowest

    def take(self, rank: int) -> int:
        """Assign the next step to ``rank`` and return it, or :data:`NO_MORE_STEPS`."""
        step = self.peek(rank)
        if step != NO_MORE_STEPS:
            self._assigned[step] = True
            self.owner[step] = rank
        return step


class ControlServer:
    """Rank 0's side of the control messages: reply to step requests, raise reported failures."""

    def __init__(self, context: RankContext, dispatcher: Dispatcher) -> None:
        self.context = context
        self.dispatcher = dispatcher
        self._endings: dict[int, int] = {}
        self._status = MPI.Status()
        self._reply = np.zeros(1, dtype=np.int64)

    @property
    def all_finished(self) -> bool:
        """Whether every other rank has received NO_MORE_STEPS for all its open requests."""
        finished = [rank for rank, count in self._endings.items() if count == REQUESTS_AHEAD]
        return len(finished) == self.context.size - 1

    def poll(self) -> bool:
        """Handle every waiting control message; return whether there was any."""
        handled = False
        control = self.context.control
        while control.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=self._status):
            handled = True
            source, tag = self._status.Get_source(), self._status.Get_tag()
            if tag == TAG_FAILURE:
                kind, message, details = control.recv(source=source, tag=TAG_FAILURE)
                raise JobFailure(kind, message, details)

            control.Recv([np.empty(1, dtype=np.int64), MPI.INT64_T], source=source, tag=TAG_REQUEST)
            step = self.dispatcher.take(source)
            if step == NO_MORE_STEPS:
                self._endings[source] = self._endings.get(source, 0) + 1
            self._reply[0] = step
            control.Send([self._reply, MPI.INT64_T], dest=source, tag=TAG_ASSIGN)
        return handled


def wait_with_sleep(requests: Sequence[MPI.Request], context: RankContext | None = None) -> None:
    """Wait for ``requests`` to complete, sleeping between tests.

    MPICH's blocking waits poll without sleeping, which takes a core from
    the renderers and the encoder when ranks share a node's cores.

    Raises
    ------
    JobStopped
        If ``context`` is given and rank 0 stops the job meanwhile (see
        :func:`stop_if_requested`). The requests are then still open.
    """
    sleep = POLL_SLEEP_MIN_S
    while not MPI.Request.Testall(list(requests)):
        if context is not None:
            stop_if_requested(context)
        time.sleep(sleep)
        sleep = min(sleep * 2, WORKER_SLEEP_MAX_S)


def assigned_steps(context: RankContext) -> Iterator[int]:
    """Yield the steps rank 0 assigns to this rank, keeping REQUESTS_AHEAD requests open.

    Once the steps run out, rank 0 replies NO_MORE_STEPS to every open
    request. All these replies are received before returning, so that none is
    left to be mistaken for a reply in the next phase.
    """
    request = np.zeros(1, dtype=np.int64)
    reply = np.zeros(1, dtype=np.int64)
    for _ in range(REQUESTS_AHEAD):
        context.control.Send([request, MPI.INT64_T], dest=0, tag=TAG_REQUEST)

    endings = 0
    while endings < REQUESTS_AHEAD:
        with context.clock.measure("wait"):
            _wait_for_reply(context, context.control.Irecv([reply, MPI.INT64_T], source=0, tag=TAG_ASSIGN))
        step = int(reply[0])
        if step == NO_MORE_STEPS:
            endings += 1
            continue
        # Request another step now, so a reply is waiting when this one is done.
        context.control.Send([request, MPI.INT64_T], dest=0, tag=TAG_REQUEST)
        yield step


def _wait_for_reply(context: RankContext, receive: MPI.Request) -> None:
    try:
        wait_with_sleep([receive], context)
    except JobStopped:
        # The stopped rank leaves through MPI_Finalize, so no receive may stay open.
        receive.Cancel()
        receive.Wait()
        raise


def serve_until_done(server: ControlServer, work_here: Callable[[], bool],
                     done: Callable[[], bool], clock: StageClock) -> None:
    """Run rank 0's loop: handle control messages and do local work until ``done()``."""
    sleep = POLL_SLEEP_MIN_S
    while not done():
        busy = server.poll()
        busy = work_here() or busy
        if busy:
            sleep = POLL_SLEEP_MIN_S
            continue
        with clock.measure("wait"):
            time.sleep(sleep)
        sleep = min(sleep * 2, POLL_SLEEP_MAX_S)
