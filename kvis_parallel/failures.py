"""Failure handling: one error line from rank 0, then the end of the whole job.

A failure on any rank is sent to rank 0, which names the rank, host, step
file and reason. Rank 0 writes the error line, then stops the other ranks
with a control message (see :func:`abort_job`) and ends the job with
``MPI_Abort`` only when a rank does not respond. If rank 0 does not react
within :data:`FAILURE_GRACE_S`, the failing rank reports and aborts itself.
A rank that dies without a word is seen by the launcher, which ends the
others (Hydra from the mpich wheel does).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable

from mpi4py import MPI

from .dispatch import TAG_FAILURE, JobFailure, RankContext, stop_if_requested, stop_other_ranks, wait_with_sleep
from .errors import EXIT_BUG, EXIT_USER_ERROR, UserError
from .series import TimeStep

logger = logging.getLogger(__name__)

# Seconds a failing rank waits for rank 0 to end the job before ending it itself.
FAILURE_GRACE_S = 10.0

# Seconds between writing the error and calling MPI_Abort (see _abort).
ABORT_OUTPUT_DELAY_S = 0.5


# Fault injection for tests only: the rank that handles this step number in the
# render phase raises an error ("K"), or exits at once without a word ("K:exit").
FAIL_STEP_VARIABLE = "KVIS_TEST_FAIL_STEP"


class SetupFailed(Exception):
    """Raised on ranks other than 0 when rank 0 failed to set the job up and has reported why."""

    def __init__(self, status: int) -> None:
        super().__init__(f"rank 0 failed to set up the job (exit status {status})")
        self.status = status


def share_from_root(context: RankContext, make: Callable[[], object],
                    prepare: Callable[[], None] | None = None) -> object:
    """Run ``make`` on rank 0 and broadcast its result to every rank.

    Meanwhile the other ranks run ``prepare`` (when given), then wait with
    sleeps instead of spinning in the broadcast, which would take a core
    from rank 0 when ranks share a node's cores. When ``make`` raises on
    rank 0, the exception propagates there and the other ranks raise
    :class:`SetupFailed` with the exit status, so that all ranks end cleanly
    and only rank 0 reports. An exception from ``prepare`` propagates on its
    rank after the broadcast, so rank 0 is never left waiting.
    """
    if context.rank != 0:
        return _receive_from_root(context, prepare)

    try:
        value = make()
    except UserError:
        _broadcast_from_root(context, (True, EXIT_USER_ERROR))
        raise
    except BaseException:
        _broadcast_from_root(context, (True, EXIT_BUG))
        raise
    _broadcast_from_root(context, (False, value))
    return value


def _broadcast_from_root(context: RankContext, message: tuple[bool, object]) -> None:
    wait_with_sleep([context.world.Ibarrier()])
    context.world.bcast(message, root=0)


def _receive_from_root(context: RankContext, prepare: Callable[[], None] | None) -> object:
    prepare_error: Exception | None = None
    if prepare is not None:
        try:
            prepare()
        except Exception as error:  # noqa: BLE001  raised after the broadcast, below
            prepare_error = error
    wait_with_sleep([context.world.Ibarrier()])
    failed, value = context.world.bcast(None, root=0)
    if failed:
        raise SetupFailed(value)
    if prepare_error is not None:
        raise prepare_error
    return value


def describe_failure(context: RankContext, step: TimeStep | None, error: BaseException) -> str:
    """Return "rank r of n on HOST: time step LABEL (FILE): reason" for an error while handling ``step``.

    The rank is left out for a single process, and for rank 0 outside a step
    because such an error concerns the whole job. The file is left out when
    the reason already names it.
    """
    reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    parts = []
    if context.size > 1 and (step is not None or context.rank != 0):
        parts.append(f"rank {context.rank} of {context.size} on {MPI.Get_processor_name()}")
    if step is not None:
        step_file = str(step.first_file())
        parts.append(f"time step {step.label}" if step_file in reason else f"time step {step.label} ({step_file})")
    parts.append(reason)
    return ": ".join(parts)


def failure_from(context: RankContext, step: TimeStep | None, error: BaseException) -> JobFailure:
    """Wrap ``error`` raised on this rank while handling ``step`` (None outside a step)."""
    if isinstance(error, JobFailure):
        return error
    kind = "user" if isinstance(error, UserError) else "bug"
    details = "" if kind == "user" else "".join(traceback.format_exception(error))
    return JobFailure(kind, describe_failure(context, step, error), details)


def report_failure_to_root(context: RankContext, kind: str, message: str, details: str = "") -> None:
    """Send a failure to rank 0 and wait for it to end the job; end it here if it does not.

    Called on ranks other than 0. It does not return: rank 0 either stops
    this rank (:class:`~.dispatch.JobStopped` is raised here) or aborts the
    job. If rank 0 does neither within :data:`FAILURE_GRACE_S`, this rank
    writes the error itself and calls ``MPI_Abort``.

    Raises
    ------
    JobStopped
        When rank 0 has reported the failure and stops the job.
    """
    request = context.control.isend((kind, message, details), dest=0, tag=TAG_FAILURE)
    deadline = time.monotonic() + FAILURE_GRACE_S
    while time.monotonic() < deadline:
        request.Test()
        stop_if_requested(context)
        time.sleep(0.05)

    logger.error("rank 0 did not end the job within %.0f s; ending it from rank %d",
                 FAILURE_GRACE_S, context.rank)
    sys.stderr.write(f"kvis: error: {message}\n")
    _abort(context.world, EXIT_USER_ERROR if kind == "user" else EXIT_BUG)


def abort_job(comm: MPI.Comm, status: int) -> None:
    """End the job on the other ranks of ``comm``; call it on rank 0 once the error line is written.

    The other ranks get the stop message and leave through ``MPI_Finalize``
    with exit status ``status``, so the launcher forwards all output before
    the job ends, and this function returns. When a rank
    does not acknowledge within :data:`~.dispatch.STOP_GRACE_S` (it crashed,
    or it is stuck in VTK or in a collective call), the job ends with
    ``MPI_Abort`` and this function does not return.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if stop_other_ranks(comm, status):
        return
    _abort(comm, status)


def _abort(comm: MPI.Comm, status: int) -> None:
    """Call ``MPI_Abort`` on ``comm``, keeping the error line written before as the last line.

    MPICH prints an "application called MPI_Abort" line on stderr. It is sent
    to /dev/null here so that the error line written before stays the last.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    # The launcher forwards this rank's output through pipes and stops reading
    # them once the abort reaches it, so the error line could be lost without
    # this pause. NOTE: a delay, not a guarantee; 0.5 s sufficed in repeated
    # runs with the mpich wheel's Hydra on a loaded machine. The stop message
    # of abort_job avoids this path whenever every rank responds.
    time.sleep(ABORT_OUTPUT_DELAY_S)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    comm.Abort(status)
    os._exit(status)


def check_fault_injection(step_index: int) -> None:
    value = os.environ.get(FAIL_STEP_VARIABLE)
    if not value:
        return
    number, _, mode = value.partition(":")
    if int(number) != step_index:
        return
    if mode == "exit":
        os._exit(EXIT_BUG)
    raise RuntimeError(f"fault injected by {FAIL_STEP_VARIABLE}={value}")


def run_step(context: RankContext, step: TimeStep, action: Callable[[], None]) -> None:
    """Run ``action`` for ``step``; a failure names the rank and the step.

    On rank 0 the failure is raised as :class:`JobFailure`; on other ranks it
    is sent to rank 0, which ends the job.
    """
    try:
        action()
    except Exception as error:  # noqa: BLE001  every failure must reach rank 0
        failure = failure_from(context, step, error)
        if context.rank == 0:
            raise failure from error
        report_failure_to_root(context, failure.kind, str(failure), failure.details)
