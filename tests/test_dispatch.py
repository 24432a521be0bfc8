"""Tests for kvis_parallel.dispatch: the hand-out of steps to ranks, and the stop after a failure."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import MPIEXEC

from kvis_parallel.dispatch import NO_MORE_STEPS, Dispatcher


# --- Hand-out of steps ------------------------------------------------------------------


def drain(dispatcher: Dispatcher, ranks: list[int]) -> list[tuple[int, int]]:
    handed = []
    while True:
        progressed = False
        for rank in ranks:
            step = dispatcher.take(rank)
            if step != NO_MORE_STEPS:
                handed.append((rank, step))
                progressed = True
        if not progressed:
            return handed


def test_dispatcher_lowest_first():
    dispatcher = Dispatcher(range(5))

    assert [dispatcher.take(rank) for rank in (1, 2, 1, 0, 2, 1)] == [0, 1, 2, 3, 4, NO_MORE_STEPS]


def test_dispatcher_prefers_cached_step_nearby():
    dispatcher = Dispatcher(range(10), cached={2: [3, 9]}, lookahead=3)

    assert dispatcher.take(1) == 0
    assert dispatcher.take(2) == 3, "step 3 is within 3 of the lowest free step 1"
    assert dispatcher.take(2) == 1, "step 9 is too far ahead"
    assert dispatcher.take(1) == 2


def test_dispatcher_skips_cached_step_taken_elsewhere():
    dispatcher = Dispatcher(range(4), cached={1: [0, 1]}, lookahead=0)

    assert dispatcher.take(2) == 0
    assert dispatcher.take(1) == 1
    assert dispatcher.take(1) == 2


@pytest.mark.parametrize("seed", range(5))
def test_dispatcher_stays_within_lookahead(seed):
    generator = random.Random(seed)
    steps = 60
    lookahead = 4
    cached = {rank: sorted(generator.sample(range(steps), 15)) for rank in range(4)}
    dispatcher = Dispatcher(range(steps), cached=cached, lookahead=lookahead)

    taken: set[int] = set()
    while len(taken) < steps:
        lowest_free = min(set(range(steps)) - taken)
        step = dispatcher.take(generator.randrange(4))
        assert step not in taken
        assert step <= lowest_free + lookahead
        taken.add(step)
    assert all(dispatcher.take(rank) == NO_MORE_STEPS for rank in range(4))


def test_dispatcher_gives_every_step_once():
    handed = drain(Dispatcher(range(20), cached={0: [5, 6], 1: [7]}, lookahead=8), [0, 1, 2])

    assert sorted(step for _, step in handed) == list(range(20))


# --- Stopping the ranks after a failure ------------------------------------------------------

STOP_SCRIPT = """
import sys
import numpy as np
from kvis_parallel import dispatch, parallel

context = parallel.make_context()
if context.rank == 0:
    replied = dispatch.stop_other_ranks(context.world, 2, grace_s=GRACE_S)
    print(f"rank 0 replied {replied}", flush=True)
    sys.exit(2)
elif context.rank == 1:
    reply = np.zeros(1, dtype=np.int64)
    never = context.control.Irecv(reply, source=0, tag=dispatch.TAG_ASSIGN)
    try:
        dispatch.wait_with_sleep([never], context)
    except dispatch.JobStopped as stopped:
        never.Cancel()
        never.Wait()
        print(f"rank 1 stopped with {stopped.code}", flush=True)
        raise
else:
    dispatch.send_final_stats(context)
    print("rank 2 finished", flush=True)
"""


@pytest.mark.mpi
def test_stop_reaches_waiting_and_finished_ranks(tmp_path):
    grace_s = 20
    script = tmp_path / "stop.py"
    script.write_text(STOP_SCRIPT.replace("GRACE_S", str(grace_s)))
    started = time.monotonic()
    with subprocess.Popen([str(MPIEXEC), "-n", "3", sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=grace_s * 2)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert time.monotonic() - started < grace_s, "rank 0 waited for the whole grace period"
    assert "rank 0 replied True" in stdout, stderr
    assert "rank 1 stopped with 2" in stdout, stderr
    assert "rank 2 finished" in stdout, stderr
    assert process.returncode == 2, stderr
