"""Request handlers for the upload, job, movie and health endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import tornado.web
from tornado.iostream import StreamClosedError

from .. import __version__
from ..errors import UserError
from .base import ApiError, BaseHandler, ErrorMixin, ServerContext
from .jobs import DONE, Job, Upload, new_id
from .launcher import KILL_GRACE_S, run_inspect
from .streaming import UploadingHandler

logger = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
RECENT_JOBS = 100


class HealthHandler(BaseHandler):
    """``GET /healthz``: liveness and queue counts."""

    def get(self) -> None:
        queue = self.context.queue
        self.send_json({"ok": True, "version": __version__,
                        "jobs": {"running": queue.running_count, "queued": queue.queued_count},
                        "uploads_in_progress": queue.reserved_count,
                        "max_running": self.context.settings.max_running,
                        "backlog": self.context.settings.backlog})


class FilesHandler(UploadingHandler):
    """``POST /files``: upload an archive and receive the movie in the same request."""

    async def post(self) -> None:
        if self.finish_draining():
            return
        options, controls = self.receive_form()
        job = await self.create_job(options, controls["upload"])
        self.job_id = job.id

        job = await self.context.queue.wait(job.id)
        if self.client_gone:
            return
        if job.status != DONE:
            raise ApiError(_status_for(job), job.error or f"job {job.id} {job.status}", job_id=job.id)
        await self._send_movie(job)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        job_id = getattr(self, "job_id", None)
        if job_id is not None and self.context.queue.cancel(job_id, "the client disconnected"):
            logger.info("job %s: client %s disconnected; job cancelled", job_id, self.request.remote_ip)

    async def _send_movie(self, job: Job) -> None:
        movie = self.context.store.job_dir(job.id) / "movie.mp4"
        self.set_header("Content-Type", "video/mp4")
        self.set_header("Content-Length", str(movie.stat().st_size))
        self.set_header("Content-Disposition", 'attachment; filename="movie.mp4"')
        self.set_header("X-Kvis-Job", job.id)
        try:
            with open(movie, "rb") as file:
                while chunk := file.read(CHUNK_BYTES):
                    self.write(chunk)
                    await self.flush()
        except StreamClosedError:
            logger.info("job %s: client disconnected while the movie was sent", job.id)
            return
        self.finish()


def _status_for(job: Job) -> int:
    if job.error_kind == "user":
        return 400
    if job.error_kind == "timeout":
        return 504
    if job.status == "cancelled":
        return 503
    return 500


class JobsHandler(UploadingHandler):
    """``GET /jobs`` lists recent jobs; ``POST /jobs`` queues one and responds 202."""

    def get(self) -> None:
        self.check_token()
        jobs = self.context.store.recent_jobs(RECENT_JOBS)
        self.send_json({"jobs": [job.to_public() for job in jobs]})

    async def post(self) -> None:
        if self.finish_draining():
            return
        options, controls = self.receive_form()
        job = await self.create_job(options, controls["upload"])
        self.set_header("Location", f"/jobs/{job.id}")
        self.set_header("X-Kvis-Job", job.id)
        self.send_json({"id": job.id, "status": job.status, "url": f"/jobs/{job.id}"}, status=202)


class JobHandler(BaseHandler):
    """``GET /jobs/<id>`` shows a job; ``DELETE /jobs/<id>`` cancels or removes it."""

    def get(self, job_id: str) -> None:
        self.check_token()
        job = self.find_job(job_id)
        self.set_header("X-Kvis-Job", job.id)
        self.send_json(job.to_public())

    async def delete(self, job_id: str) -> None:
        self.check_token()
        job = self.find_job(job_id)
        self.set_header("X-Kvis-Job", job.id)
        if self.context.queue.cancel(job.id, f"cancelled by DELETE /jobs/{job.id}"):
            # Stopping the process group takes up to KILL_GRACE_S; the response
            # shows "cancelled" unless the group outlives the wait.
            with contextlib.suppress(TimeoutError, KeyError):
                await asyncio.wait_for(self.context.queue.wait(job.id), KILL_GRACE_S + 2)
            self.send_json(job.to_public())
            return
        self.context.store.delete_job(job.id)
        logger.info("job %s deleted", job.id)
        self.send_json({"id": job.id, "status": "deleted"})


class UploadsHandler(UploadingHandler):
    """``POST /uploads``: store an archive and respond with what it contains."""

    needs_reservation = False
    accepts_render_options = False

    async def post(self) -> None:
        if self.finish_draining():
            return
        self.receive_form()
        assert self.receiver is not None

        upload = Upload(id=new_id(), filename=self.receiver.filename, archive_bytes=self.receiver.file_bytes)
        folder = self.context.store.upload_dir(upload.id)
        folder.mkdir()
        try:
            await self.extract_upload(folder / "data")
            if self.client_gone:
                raise ApiError(400, "the client disconnected during extraction")
            upload.summary = await self._inspect(folder / "data")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        self.context.store.add_upload(upload)
        logger.info("upload %s stored: %s steps", upload.id, upload.summary.get("steps"))
        self.set_header("Location", f"/uploads/{upload.id}")
        self.send_json(upload.to_record(), status=201)

    async def _inspect(self, folder: Path) -> dict[str, Any]:
        settings = self.context.settings
        try:
            return await run_inspect(settings.python, folder, settings.inspect_timeout_s)
        except UserError as error:
            raise ApiError(400, str(error)) from None
        except TimeoutError:
            raise ApiError(504, f"inspecting the upload took longer than {settings.inspect_timeout_s:g} s; "
                                "ask the operator to raise --inspect-timeout") from None


class UploadHandler(BaseHandler):
    """``GET /uploads/<id>`` shows a stored upload; ``DELETE`` removes it."""

    def get(self, upload_id: str) -> None:
        self.check_token()
        upload = self.context.store.uploads.get(upload_id)
        if upload is None:
            raise ApiError(404, f"upload {upload_id} not found; it may have expired")
        self.send_json(upload.to_record())

    def delete(self, upload_id: str) -> None:
        self.check_token()
        if upload_id not in self.context.store.uploads:
            raise ApiError(404, f"upload {upload_id} not found; it may have expired")
        if upload_id in self.context.queue.referenced_uploads():
            raise ApiError(409, f"upload {upload_id} is in use by a queued or running job; cancel the job first")
        self.context.store.delete_upload(upload_id)
        self.send_json({"id": upload_id, "status": "deleted"})


class JobFileHandler(ErrorMixin, tornado.web.StaticFileHandler):
    """``GET /jobs/<id>/movie.mp4`` and ``poster.jpg``, with HTTP Range support."""

    def initialize(self, context: ServerContext) -> None:
        self.context = context
        super().initialize(path=str(context.store.jobs_root))

    async def get(self, job_id: str, name: str, include_body: bool = True) -> None:
        self.check_token()
        job = self.context.store.jobs.get(job_id)
        if job is None or job.status != DONE:
            state = "not found" if job is None else f"not available: the job is {job.status}"
            raise ApiError(404, f"{name} of job {job_id} {state}")
        if not (self.context.store.job_dir(job_id) / name).is_file():
            raise ApiError(404, f"job {job_id} has no {name}")
        self.set_header("X-Kvis-Job", job_id)
        await super().get(f"{job_id}/{name}", include_body)
        if self.get_status() == 416 and include_body and not self._finished:
            self._explain_range(name)

    def _explain_range(self, name: str) -> None:
        # StaticFileHandler sends 416 with an empty body.
        size = self.get_content_size()
        message = (f"requested range not satisfiable: {name} has {size} bytes; "
                   f"ask for a range within bytes=0-{max(size - 1, 0)}")
        if self.wants_json():
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps({"error": message, "status": 416, "job": self.path.split("/")[0]}) + "\n")
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.write(message + "\n")

    async def head(self, job_id: str, name: str) -> None:
        await self.get(job_id, name, include_body=False)
