"""Job and upload records, kept as one JSON file each in the state folder.

Layout of the state folder::

    incoming/<random>/upload    request bodies while they stream in
    jobs/<id>/job.json          the job record
    jobs/<id>/input/            the extracted archive, deleted when the job ends
    jobs/<id>/movie.mp4         the movie, once the job is done
    jobs/<id>/poster.jpg        its poster frame
    jobs/<id>/render.log        the renderer's stderr
    uploads/<id>/upload.json    a stored upload and its inspect summary
    uploads/<id>/data/          its extracted files
    server.lock                 locked by the running server; holds its PID

Records are written atomically (a temporary file, then ``os.replace``), so a
crash leaves either the old or the new record. On start-up, jobs that were
queued or running are marked failed; they are never silently lost.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
ID_PATTERN = r"[0-9a-f]{16}"
_ID = re.compile(ID_PATTERN)


def new_id() -> str:
    """Return a fresh random id of 16 hex digits."""
    return secrets.token_hex(8)


def is_id(text: str) -> bool:
    """Return whether ``text`` has the form of a job or upload id."""
    return _ID.fullmatch(text) is not None


def write_json_atomically(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` as JSON to ``path`` so readers never see a partial file."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def folder_size(path: Path) -> int:
    """Return the bytes used by regular files under ``path``; missing files count 0."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class Job:
    """One render request and its progress."""

    id: str
    created: float = field(default_factory=time.time)
    status: str = QUEUED
    options: dict[str, str] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)
    upload: str | None = None
    started: float | None = None
    finished: float | None = None
    stage: str | None = None
    frames_done: int = 0
    frames_total: int | None = None
    fps: float | None = None
    eta_s: float | None = None
    error: str | None = None
    error_kind: str | None = None
    pid: int | None = None
    pid_start_ticks: int | None = None
    movie_bytes: int | None = None

    @property
    def is_finished(self) -> bool:
        """Whether the job is done, failed or cancelled."""
        return self.status in FINISHED

    @property
    def public_error_kind(self) -> str | None:
        """``"user"`` for bad input, ``"bug"`` for a renderer or server bug, else None.

        Timeouts, restarts and cancellations are None: the status and the
        error message describe them, and they are neither the input's fault
        nor a bug.
        """
        return self.error_kind if self.error_kind in ("user", "bug") else None

    def to_record(self) -> dict[str, Any]:
        """Return every field, for the JSON file."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """Build a job from :meth:`to_record` output, ignoring unknown keys."""
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in known})

    def to_public(self) -> dict[str, Any]:
        """Return the fields sent to clients: status, progress, error and links."""
        done = self.status == DONE
        return {
            "id": self.id,
            "status": self.status,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "stage": self.stage,
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "fps": self.fps,
            "eta_s": self.eta_s,
            "error": self.error,
            "error_kind": self.public_error_kind,
            "options": self.options,
            "upload": self.upload,
            "movie": f"/jobs/{self.id}/movie.mp4" if done else None,
            "poster": f"/jobs/{self.id}/poster.jpg" if done else None,
            "movie_bytes": self.movie_bytes if done else None,
        }


@dataclass
class Upload:
    """An archive stored by ``POST /uploads`` and what ``inspect`` found in it."""

    id: str
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    filename: str | None = None
    archive_bytes: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """Return every field, for the JSON file and the client."""
        return dataclasses.asdict(self)


class StateFolderInUse(Exception):
    """Another server holds the state folder's lock."""

    def __init__(self, root: Path, pid: str) -> None:
        super().__init__(f"state folder {root} is in use by another kvis server (PID {pid or 'unknown'}); "
                         "give each server its own --state-dir")


class StateStore:
    """The state folder: job and upload records, their folders, and start-up recovery."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock_path = root / "server.lock"
        self._lock_file = None
        self.incoming = root / "incoming"
        self.jobs_root = root / "jobs"
        self.uploads_root = root / "uploads"
        self.jobs: dict[str, Job] = {}
        self.uploads: dict[str, Upload] = {}

    def open(self) -> list[Job]:
        """Create the folders, load every record and mark interrupted jobs failed.

        Returns
        -------
        list of Job
            The jobs that were queued or running when the server stopped.

        Raises
        ------
        StateFolderInUse
            If another server has the folder open. Its recovery would
            otherwise kill that server's running jobs.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock()
        for folder in (self.incoming, self.jobs_root, self.uploads_root):
            folder.mkdir(parents=True, exist_ok=True)

        # Bodies that were streaming in when the server stopped are useless.
        for leftover in self.incoming.iterdir():
            remove_path(leftover)

        self._load_uploads()
        return self._load_jobs()

    def lock(self) -> None:
        """Take the state folder's exclusive lock for the rest of the process's life.

        Raises
        ------
        StateFolderInUse
            If another process holds the lock; the message names its PID.
        """
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        lock_file = os.fdopen(descriptor, "r+", encoding="utf-8")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_file.read().strip()
            lock_file.close()
            raise StateFolderInUse(self.root, holder) from None

        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        # The lock lasts as long as this file stays open; the kernel drops it when the process exits.
        self._lock_file = lock_file

    def close(self) -> None:
        """Release the state folder's lock, so that another store may open it."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def job_dir(self, job_id: str) -> Path:
        """Return the folder of a job."""
        return self.jobs_root / job_id

    def upload_dir(self, upload_id: str) -> Path:
        """Return the folder of a stored upload."""
        return self.uploads_root / upload_id

    def incoming_path(self) -> Path:
        """Return a fresh path for a request body that is about to stream in.

        The file is called ``upload`` inside a folder of its own, because
        extraction errors name the file and the client's file name is never
        used as a path.
        """
        folder = self.incoming / new_id()
        folder.mkdir()
        return folder / "upload"

    def add_job(self, job: Job) -> Path:
        """Create the job's folder, store its record and return the folder."""
        folder = self.job_dir(job.id)
        folder.mkdir()
        self.jobs[job.id] = job
        self.save_job(job)
        return folder

    def save_job(self, job: Job) -> None:
        """Write the job's record atomically."""
        write_json_atomically(self.job_dir(job.id) / "job.json", job.to_record())

    def delete_job(self, job_id: str) -> None:
        """Delete a job's folder, then forget the job."""
        remove_path(self.job_dir(job_id))
        self.jobs.pop(job_id, None)

    def add_upload(self, upload: Upload) -> None:
        """Store an upload's record; its folder must exist."""
        self.uploads[upload.id] = upload
        self.save_upload(upload)

    def save_upload(self, upload: Upload) -> None:
        """Write the upload's record atomically."""
        write_json_atomically(self.upload_dir(upload.id) / "upload.json", upload.to_record())

    def delete_upload(self, upload_id: str) -> None:
        """Delete an upload's folder, then forget the upload."""
        remove_path(self.upload_dir(upload_id))
        self.uploads.pop(upload_id, None)

    def recent_jobs(self, limit: int) -> list[Job]:
        """Return up to ``limit`` jobs, newest first."""
        jobs = sorted(self.jobs.values(), key=lambda job: job.created, reverse=True)
        return jobs[:limit]

    def _load_jobs(self) -> list[Job]:
        interrupted = []
        for folder in sorted(self.jobs_root.iterdir()):
            job = self._read_record(folder, "job.json", Job.from_record)
            if job is None:
                continue
            self.jobs[job.id] = job
            if job.is_finished:
                continue

            kill_leftover_group(job, folder)
            was = "running" if job.status == RUNNING else "queued"
            job.status = FAILED
            job.error_kind = "restart"
            job.error = f"server restarted while the job was {was}; submit it again"
            job.finished = time.time()
            remove_path(folder / "input")
            (folder / "movie.mp4").unlink(missing_ok=True)
            self.save_job(job)
            interrupted.append(job)
            logger.warning("job %s marked failed: the server restarted while it was %s", job.id, was)
        return interrupted

    def _load_uploads(self) -> None:
        for folder in sorted(self.uploads_root.iterdir()):
            upload = self._read_record(folder, "upload.json", lambda record: Upload(**record))
            if upload is not None:
                self.uploads[upload.id] = upload

    @staticmethod
    def _read_record(folder: Path, name: str, build):
        if not is_id(folder.name):
            return None
        path = folder / name
        try:
            record = build(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            # A folder whose record was never written: the server stopped
            # between creating the folder and saving it.
            logger.warning("removing %s: it has no %s", folder, name)
            remove_path(folder)
            return None
        except (ValueError, TypeError) as error:
            logger.error("skipping %s: unreadable record (%s)", path, error)
            return None
        if record.id != folder.name:
            logger.error("skipping %s: its id %r does not match the folder", path, record.id)
            return None
        return record


def process_start_ticks(pid: int) -> int | None:
    """Return a process's start time in clock ticks from ``/proc``, or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def kill_leftover_group(job: Job, folder: Path) -> None:
    """Kill the process groups of a job whose server died, if they still run.

    A group is killed when its leader has the process id and start time
    recorded with the job, or when a process in it has the job folder on its
    command line. The second rule covers a server that died between starting
    the job and recording its process id. Neither rule can hit a process
    that merely reused an id.
    """
    groups = set()
    if job.pid is not None and job.pid_start_ticks is not None:
        if process_start_ticks(job.pid) == job.pid_start_ticks:
            groups.add(job.pid)
    groups.update(_groups_mentioning(f"{folder}{os.sep}"))
    groups.discard(os.getpgrp())

    for group in sorted(groups):
        logger.warning("killing leftover process group %d of job %s", group, job.id)
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _groups_mentioning(text: str) -> set[int]:
    groups = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in command:
            # Fields after the parenthesised command name: state, ppid, pgrp, ...
            groups.add(int(stat.rsplit(")", 1)[-1].split()[2]))
    return groups


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree; a missing path is not an error."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
