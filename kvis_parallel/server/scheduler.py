"""The job queue: at most K jobs running, a bounded backlog, time limits and retention.

A request first takes a :class:`Reservation`, before its upload streams in,
so a full queue gets a 503 response at once instead of after the upload. The
reservation becomes a job with :meth:`JobQueue.submit`. Each job runs the
renderer through :func:`launcher.run_process`; cancelling the job's task or
passing its time limit kills the renderer's whole process group.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..archive import ArchiveLimits, extract_archive
from ..errors import UserError
from .jobs import (CANCELLED, DONE, FAILED, RUNNING, Job, StateStore, folder_size, process_start_ticks,
                   remove_path)
from .launcher import build_command, kvis_error_line, run_process
from .settings import Settings

logger = logging.getLogger(__name__)


class OutOfSpace(Exception):
    """The state folder's file system is full or over its disk quota; the server's problem, not the upload's."""


def is_out_of_space(error: OSError) -> bool:
    """Return whether ``error`` means the file system is full or the user's disk quota is used up."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


class QueueFull(Exception):
    """The backlog is full; the client should retry later."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the job queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Reservation:
    """A place in the backlog held while an upload streams in."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue: JobQueue | None = queue

    def release(self) -> None:
        """Give the place back; safe to call more than once."""
        if self._queue is not None:
            self._queue._reserved -= 1
            self._queue = None


class JobQueue:
    """Run jobs from the state store, at most ``settings.max_running`` at once."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kvis-io")
        self._waiting: deque[Job] = deque()
        self._running: dict[str, asyncio.Task] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._reserved = 0
        self._last_durations: deque[float] = deque(maxlen=8)

    @property
    def running_count(self) -> int:
        """Jobs rendering now."""
        return len(self._running)

    @property
    def queued_count(self) -> int:
        """Jobs waiting for a free slot."""
        return len(self._waiting)

    @property
    def reserved_count(self) -> int:
        """Requests whose upload is streaming in, each holding a backlog place."""
        return self._reserved

    @property
    def archive_limits(self) -> ArchiveLimits:
        """Extraction limits from the settings."""
        return ArchiveLimits(max_members=self.settings.max_members,
                             max_total_bytes=self.settings.max_extracted_bytes,
                             max_ratio=self.settings.max_ratio)

    def retry_after_s(self) -> int:
        """Estimate the seconds until a place frees up, from recent job durations."""
        if not self._last_durations:
            return 30
        typical = sorted(self._last_durations)[len(self._last_durations) // 2]
        return max(5, min(600, int(typical) + 1))

    def reserve(self) -> Reservation:
        """Hold a place for a job whose upload is about to stream in.

        Raises
        ------
        QueueFull
            If running slots and backlog are all taken.
        """
        capacity = self.settings.max_running - len(self._running) + self.settings.backlog
        if len(self._waiting) + self._reserved >= capacity:
            raise QueueFull(self.retry_after_s())
        self._reserved += 1
        return Reservation(self)

    def submit(self, job: Job, reservation: Reservation) -> None:
        """Queue a job whose record and input are in place, using its reservation."""
        reservation.release()
        self._finished[job.id] = asyncio.Event()
        self._waiting.append(job)
        logger.info("job %s queued (%d waiting, %d running)", job.id, len(self._waiting), len(self._running))
        self._dispatch()

    async def wait(self, job_id: str) -> Job:
        """Wait until a job has finished and return it."""
        event = self._finished.get(job_id)
        if event is not None:
            await event.wait()
        return self.store.jobs[job_id]

    def cancel(self, job_id: str, reason: str) -> bool:
        """Cancel a queued or running job; returns whether it was still unfinished."""
        job = self.store.jobs.get(job_id)
        if job is None or job.is_finished:
            return False

        self._cancel_reasons[job_id] = reason
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            return True

        self._waiting.remove(job)
        self._end(job, CANCELLED, reason, "cancelled")
        return True

    async def shutdown(self) -> None:
        """Cancel every job, killing running process groups, before the server stops."""
        for job in list(self._waiting):
            self.cancel(job.id, "the server stopped before the job ran; submit it again")
        tasks = list(self._running.values())
        for job_id in list(self._running):
            self.cancel(job_id, "the server stopped while the job was running; submit it again")
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _dispatch(self) -> None:
        while self._waiting and len(self._running) < self.settings.max_running:
            job = self._waiting.popleft()
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._running[job.id] = task

    async def _run(self, job: Job) -> None:
        folder = self.store.job_dir(job.id)
        try:
            await self._render(job, folder)
        except asyncio.CancelledError:
            reason = self._cancel_reasons.pop(job.id, "the job was cancelled")
            self._end(job, CANCELLED, reason, "cancelled")
        except TimeoutError:
            limit = self.settings.job_timeout_s
            self._end(job, FAILED, f"the job passed the time limit of {limit:g} s and was stopped; "
                                   "render fewer steps or a smaller size", "timeout")
        except Exception as error:
            logger.exception("job %s failed with a server bug", job.id)
            self._end(job, FAILED, f"internal error in job {job.id} ({type(error).__name__}); "
                                   "see the server log", "bug")
        finally:
            self._running.pop(job.id, None)
            self._dispatch()

    async def _render(self, job: Job, folder: Path) -> None:
        job.status, job.started = RUNNING, time.time()
        self.store.save_job(job)
        logger.info("job %s started: %d ranks, options %s", job.id, self.settings.ranks, job.arguments)

        if job.upload is not None:
            input_path = self.store.upload_dir(job.upload) / "data"
            upload = self.store.uploads.get(job.upload)
            if upload is not None:
                upload.last_used = time.time()
        else:
            input_path = folder / "input"
        movie, poster = folder / "movie.mp4", folder / "poster.jpg"
        tail = ["render", str(input_path), "-o", str(movie), "--progress", "json",
                "--summary", str(folder / "summary.json"), "--poster", str(poster), *job.arguments]
        command = build_command(self.settings.launcher, self.settings.python, self.settings.ranks,
                                job.id, folder, tail)

        def record_start(pid: int) -> None:
            job.pid, job.pid_start_ticks = pid, process_start_ticks(pid)
            self.store.save_job(job)

        result = await run_process(command, cwd=folder, timeout_s=self.settings.job_timeout_s,
                                   log_path=folder / "render.log",
                                   on_json=lambda message: _apply_progress(job, message),
                                   on_start=record_start)

        # Server paths and CLI flags mean nothing to the client; messages keep
        # the path inside the archive and name query parameters. The log keeps the real lines.
        stderr_tail = list(result.stderr_tail)
        result.to_client(input_path)
        if result.returncode == 0 and movie.is_file() and movie.stat().st_size > 0:
            job.movie_bytes = movie.stat().st_size
            self._end(job, DONE, None, None)
        elif result.is_user_error:
            self._end(job, FAILED, result.client_message or "the renderer rejected the input", "user")
        elif result.killed_by_signal is not None and result.error is None and not kvis_error_line(stderr_tail):
            # Killed from outside (an OOM killer, an operator): not a kvis bug.
            self._end(job, FAILED, f"job {job.id} failed: {result.failure_reason}", "signal")
        else:
            logger.error("job %s: renderer exited with status %d; last stderr lines:\n%s",
                         job.id, result.returncode, "\n".join(stderr_tail[-10:]))
            self._end(job, FAILED, f"internal error in job {job.id}: {result.failure_reason}", "bug")

    def _end(self, job: Job, status: str, error: str | None, kind: str | None) -> None:
        job.status, job.error, job.error_kind = status, error, kind
        if status == CANCELLED:
            # A renderer stopped by SIGTERM reports stage "error"; the job was cancelled, not broken.
            job.stage = "cancelled"
        job.finished = time.time()
        job.eta_s = None
        if status != DONE:
            (self.store.job_dir(job.id) / "movie.mp4").unlink(missing_ok=True)
        if job.started is not None and status == DONE:
            self._last_durations.append(job.finished - job.started)

        # Inputs go as soon as the job ends; the movie follows the retention rules.
        shutil.rmtree(self.store.job_dir(job.id) / "input", ignore_errors=True)
        self.store.save_job(job)

        if status == DONE:
            logger.info("job %s done: %d frames in %.1f s", job.id, job.frames_done,
                        job.finished - (job.started or job.finished))
        elif status == CANCELLED:
            logger.info("job %s cancelled: %s", job.id, error)
        elif kind == "user":
            logger.info("job %s failed on its input: %s", job.id, error)
        else:
            logger.error("job %s failed (%s): %s", job.id, kind, error)

        event = self._finished.pop(job.id, None)
        if event is not None:
            event.set()

    def referenced_uploads(self) -> set[str]:
        """Return the uploads that queued or running jobs still need."""
        jobs = [*self._waiting, *(self.store.jobs[job_id] for job_id in self._running)]
        return {job.upload for job in jobs if job.upload is not None}

    async def sweep(self) -> None:
        """Delete expired results, then the oldest ones while the folder is over its quota."""
        now = time.time()
        busy_uploads = self.referenced_uploads()
        expired_before = now - self.settings.retention_s

        for job in list(self.store.jobs.values()):
            if job.is_finished and (job.finished or job.created) < expired_before:
                logger.info("job %s expired; deleting its movie", job.id)
                await self._delete("job", job.id)
        for upload in list(self.store.uploads.values()):
            if upload.id not in busy_uploads and upload.last_used < expired_before:
                logger.info("upload %s expired; deleting it", upload.id)
                await self._delete("upload", upload.id)

        await self._enforce_quota(busy_uploads)

    async def _enforce_quota(self, busy_uploads: set[str]) -> None:
        total = await self._in_thread(folder_size, self.store.root)
        if total <= self.settings.quota_bytes:
            return

        candidates: list[tuple[float, str, str]] = []
        for job in self.store.jobs.values():
            if job.is_finished:
                candidates.append((job.finished or job.created, "job", job.id))
        for upload in self.store.uploads.values():
            if upload.id not in busy_uploads:
                candidates.append((upload.last_used, "upload", upload.id))

        for _, kind, item_id in sorted(candidates):
            if total <= self.settings.quota_bytes:
                break
            logger.info("state folder over its quota (%d > %d bytes); deleting %s %s",
                        total, self.settings.quota_bytes, kind, item_id)
            total -= await self._delete(kind, item_id)

    async def _delete(self, kind: str, item_id: str) -> int:
        # Records change on the event loop only, and the worker thread only
        # deletes files. An upload is forgotten first, so no new job can pick
        # it while its files go. A job is forgotten last, so it is listed
        # until its movie is gone.
        if kind == "upload":
            folder = self.store.upload_dir(item_id)
            self.store.uploads.pop(item_id, None)
        else:
            folder = self.store.job_dir(item_id)

        size = await self._in_thread(folder_size, folder)
        await self._in_thread(remove_path, folder)
        if kind == "job":
            self.store.jobs.pop(item_id, None)
        return size

    async def extract(self, archive: Path, destination: Path) -> None:
        """Extract an uploaded archive in a worker thread and check it has time steps.

        Raises
        ------
        UserError
            ArchiveError for a bad archive, SeriesError when no time steps are found.
        """
        await self._in_thread(_extract_and_discover, archive, destination, self.archive_limits)

    async def _in_thread(self, function, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)


def _extract_and_discover(archive: Path, destination: Path, limits: ArchiveLimits) -> None:
    from ..series import discover_series

    try:
        extract_archive(archive, destination, limits)
        discover_series(destination)
    except UserError:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    except OSError as error:
        shutil.rmtree(destination, ignore_errors=True)
        if is_out_of_space(error):
            raise OutOfSpace(os.strerror(error.errno)) from None
        raise
    finally:
        archive.unlink(missing_ok=True)


def _apply_progress(job: Job, message: dict[str, Any]) -> None:
    job.stage = message.get("stage", job.stage)
    for name in ("frames_done", "frames_total", "fps", "eta_s"):
        if name in message:
            setattr(job, name, message[name])
