"""The streaming upload handler that ``/files``, ``/jobs`` and ``/uploads`` share.

The body goes to a file as it arrives (``tornado.web.stream_request_body``),
so the server's memory does not grow with the upload. Token, options, size
and queue place are checked before the body is read, and a rejected body is
drained for a bounded time so the client can read the error response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import tornado.web

from ..errors import UserError
from .base import ApiError, BaseHandler
from .jobs import Job, Upload, is_id, new_id
from .launcher import render_arguments, to_http_advice, validate_render_arguments
from .scheduler import OutOfSpace, QueueFull, Reservation, is_out_of_space
from .settings import format_bytes
from .summary import check_options_against_summary
from .uploads import SEND_ARCHIVE, UploadError, UploadReceiver

logger = logging.getLogger(__name__)

# Names that are not render options, in the query string or the form.
CONTROL_FIELDS = ("token", "upload")
# Bytes of an over-limit body read and thrown away after the 413 is sent, so
# the client reads the response before the connection closes.
DRAIN_BYTES = 64 * 2**20
DRAIN_SECONDS = 10.0
# Bytes an upload must send within each --upload-idle-timeout. A client that
# sends a byte now and then would otherwise hold its queue place forever.
MIN_PROGRESS_BYTES = 1024


@tornado.web.stream_request_body
class UploadingHandler(BaseHandler):
    """Stream an archive to disk: a raw body or the ``file`` field of a form.

    Subclasses set ``needs_reservation`` when the request becomes a job.
    """

    needs_reservation = True
    accepts_render_options = True

    def prepare(self) -> None:
        self.receiver: UploadReceiver | None = None
        self.reservation: Reservation | None = None
        self.query_options: dict[str, str] = {}
        self.client_gone = False
        self.draining = False
        self.body_started = False
        self.body_complete = False
        self.extracting = False
        self.body_bytes = 0
        self.bytes_at_last_progress = 0
        self.last_progress_time = time.monotonic()
        if self.request.method != "POST":
            return

        # Tornado's own limit sits above ours, so that the body of a rejected
        # request can drain and an over-limit body gets our 413 instead of
        # Tornado's bare 400 and a closed connection.
        length = self._content_length() or 0
        limit = self.context.settings.max_upload_bytes
        self.request.connection.set_max_body_size(max(length, limit) + DRAIN_BYTES)

        try:
            self._check_before_body(length)
            self.receiver = self._open_receiver()
            self.context.receiving.add(self)
        except ApiError as error:
            self.reject_body(error.status_code, error.message, error.headers)
            return
        except UploadError as error:
            self.reject_body(400, str(error))
            return
        except OSError as error:
            self.reject_body(*self._storage_failure(error))
            return

        self._schedule_idle_check()

    def _storage_failure(self, error: OSError) -> tuple[int, str]:
        """Log a failure to store the upload and return the status and message for the client."""
        logger.error("cannot store the upload from %s in %s: %s", self.request.remote_ip,
                     self.context.store.incoming, error)
        if is_out_of_space(error):
            return 507, (f"the server has no space left to store the upload ({error.strerror}); "
                         "try again later, or ask the operator to free disk space or lower --quota")
        return 500, "internal server error: storing the upload failed; see the server log"

    def _open_receiver(self) -> UploadReceiver:
        path = self.context.store.incoming_path()
        try:
            return UploadReceiver(path, self.request.headers.get("Content-Type", ""))
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise

    def _schedule_idle_check(self) -> None:
        timeout = self.context.settings.upload_idle_timeout_s
        self._idle_timer = asyncio.get_running_loop().call_later(timeout / 4, self._check_idle)

    def _check_idle(self) -> None:
        # A client that vanished without closing its socket (a dead login node,
        # a dropped NAT entry) would hold its queue place and file forever.
        if self._finished or self.client_gone or self.receiver is None or self.extracting:
            return
        if self.body_complete:
            return
        idle_s = time.monotonic() - self.last_progress_time
        if idle_s < self.context.settings.upload_idle_timeout_s:
            self._schedule_idle_check()
            return
        logger.info("closing the upload from %s: no data for %.0f s (under %d bytes)", self.request.remote_ip,
                    idle_s, MIN_PROGRESS_BYTES)
        self._drop_upload()
        # A client that is still alive (one whose Content-Length promised more
        # than it sent) reads why; Tornado closes the connection after this
        # response because the body was not read to its end.
        self.draining = True
        self.set_status(408)
        self.set_header("Connection", "close")
        limit = self.context.settings.upload_idle_timeout_s
        self._write_error_body(408, f"upload timed out: less than {MIN_PROGRESS_BYTES} bytes arrived in {limit:g} s; "
                                    "send the whole body, with a Content-Length that matches it", finish=True)

    def _check_before_body(self, length: int) -> None:
        """Check the token, options, size and queue, and hold a queue place.

        Raises
        ------
        ApiError
            401, 400, 413 or 503.
        """
        content_type = self.request.headers.get("Content-Type", "")
        if self.has_token_outside_body() or "multipart/form-data" not in content_type:
            self.check_token()

        self.query_options = {name: self.get_query_argument(name) for name in self.request.query_arguments
                              if name not in CONTROL_FIELDS}
        self._check_options_allowed(self.query_options)
        try:
            validate_render_arguments(render_arguments(self.query_options))
        except UserError as error:
            raise ApiError(400, str(error)) from None

        if length > self.context.settings.max_upload_bytes:
            raise ApiError(413, self._too_large_message())

        if self.needs_reservation:
            try:
                self.reservation = self.context.queue.reserve()
            except QueueFull as error:
                raise ApiError(503, str(error), headers={"Retry-After": str(error.retry_after_s)}) from None

    def _check_options_allowed(self, options: dict[str, str]) -> None:
        """Reject render options on an endpoint that renders nothing, instead of ignoring them."""
        if self.accepts_render_options or not options:
            return
        rejected = "&".join(f"{name}={value}" for name, value in options.items())
        raise ApiError(400, f"render options go with POST /jobs?upload=<id>, not {self.request.method} "
                            f"{self.request.path}: drop {rejected} here and give it when you start the job")

    def _content_length(self) -> int | None:
        try:
            return int(self.request.headers["Content-Length"])
        except (KeyError, ValueError):
            return None

    def _too_large_message(self) -> str:
        limit = self.context.settings.max_upload_bytes
        return (f"upload too large: the limit is {limit} bytes ({format_bytes(limit)}); "
                "send fewer time steps or ask the operator to raise --max-upload")

    def reject_body(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Send an error response before the body has been read.

        A client that waits for ``100 Continue`` gets the response at once and
        sends nothing. Any other client is sending the body already, so the
        response is flushed and the body drained for at most ``DRAIN_SECONDS``,
        because closing a socket with unread data resets the connection and
        the client may lose the response. ``data_received`` uses it too,
        because an exception raised there closes the connection without a response.
        """
        logger.info("%d %s %s from %s: %s", status, self.request.method, self.request.path,
                    self.request.remote_ip, message)
        self._drop_upload()
        self.draining = True
        self.set_status(status)
        self.set_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.set_header(name, value)

        waits_for_continue = self.request.headers.get("Expect", "").lower() == "100-continue"
        if waits_for_continue and not self.body_started:
            self._write_error_body(status, message, finish=True)
            return
        self._write_error_body(status, message, finish=False)
        self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._stop_draining)

    def _stop_draining(self) -> None:
        if not self._finished and not self.client_gone:
            logger.info("closing the connection from %s: its rejected body is still arriving",
                        self.request.remote_ip)
            self.finish()

    def stop_receiving(self, message: str) -> Awaitable[None] | None:
        """Send 503 to an upload whose body is still arriving, because the server stops.

        Returns the future of the response write, or None when the request
        is past its body.
        """
        if self._finished or self.draining or self.body_complete or self.receiver is None:
            return None
        logger.info("503 %s %s from %s: %s", self.request.method, self.request.path, self.request.remote_ip, message)
        self._drop_upload()
        self.draining = True
        self.set_status(503)
        self.set_header("Connection", "close")
        self.set_header("Retry-After", "60")
        return self._write_error_body(503, message, finish=True)

    def _write_error_body(self, status_code: int, message: str, *, finish: bool) -> Awaitable[None] | None:
        if self.wants_json():
            self.set_header("Content-Type", "application/json")
            body = json.dumps({"error": message, "status": status_code, "job": None}) + "\n"
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            body = message + "\n"
        if finish:
            return self.finish(body)
        self.set_header("Content-Length", str(len(body.encode())))
        self.write(body)
        self.flush()
        return None

    def data_received(self, chunk: bytes) -> None:
        self.body_started = True
        self.body_bytes += len(chunk)
        if self.body_bytes - self.bytes_at_last_progress >= MIN_PROGRESS_BYTES:
            self.last_progress_time = time.monotonic()
            self.bytes_at_last_progress = self.body_bytes
        if self.draining or self.receiver is None:
            return
        try:
            self.receiver.feed(chunk)
        except UploadError as error:
            self.reject_body(400, str(error))
            return
        except OSError as error:
            self.reject_body(*self._storage_failure(error))
            return
        if self.receiver.bytes_received > self.context.settings.max_upload_bytes:
            logger.info("upload from %s passed the %d-byte limit", self.request.remote_ip,
                        self.context.settings.max_upload_bytes)
            self.reject_body(413, self._too_large_message())

    def on_connection_close(self) -> None:
        self.client_gone = True
        self._drop_upload()
        self._cancel_timers()
        self.context.receiving.discard(self)
        super().on_connection_close()

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        # Delete the upload before the client can read the response.
        self._drop_upload()
        super().send_error(status_code, **kwargs)

    def on_finish(self) -> None:
        self._drop_upload()
        self._cancel_timers()
        self.context.receiving.discard(self)

    def _cancel_timers(self) -> None:
        for name in ("_drain_timer", "_idle_timer"):
            timer = getattr(self, name, None)
            if timer is not None:
                timer.cancel()

    def _drop_upload(self) -> None:
        # While a worker thread extracts into the upload's folder, deleting it
        # would race with the extraction; post() cleans up when it returns.
        # The queue place is kept until then too, so clients that disconnect
        # during extraction cannot pile up extractions beyond the queue's capacity.
        if self.extracting:
            return
        if self.receiver is not None:
            self.receiver.discard()
            shutil.rmtree(self.receiver.path.parent, ignore_errors=True)
            self.receiver = None
        if self.reservation is not None:
            self.reservation.release()
            self.reservation = None

    def finish_draining(self) -> bool:
        """Finish a request whose error response went out before its body; return whether it did."""
        if self.draining and not self._finished:
            self.finish()
        return self.draining

    def receive_form(self) -> tuple[dict[str, str], dict[str, str]]:
        """Finish the upload, check the token and return (render options, control fields).

        Raises
        ------
        ApiError
            400 for a malformed body or invalid option, 401 for a missing token.
        """
        assert self.receiver is not None
        self.body_complete = True
        try:
            self.receiver.finish()
        except UploadError as error:
            raise ApiError(400, str(error)) from None
        except OSError as error:
            raise ApiError(*self._storage_failure(error)) from None

        fields = self.receiver.fields
        self.check_token(fields.get("token"))
        options = dict(self.query_options)
        for name, value in fields.items():
            if name in CONTROL_FIELDS:
                continue
            if name in options and options[name] != value:
                raise ApiError(400, f"option {name} is given twice, in the query and the form, "
                                    "with different values; give it once")
            options[name] = value
        self._check_options_allowed(options)

        controls = {name: fields.get(name) or self.get_query_argument(name, None) or ""
                    for name in CONTROL_FIELDS}
        try:
            validate_render_arguments(render_arguments(options))
        except UserError as error:
            raise ApiError(400, str(error)) from None
        return options, controls

    async def extract_upload(self, destination: Path) -> None:
        """Extract the streamed archive into ``destination``; 400 when it is invalid."""
        assert self.receiver is not None
        try:
            self.receiver.check_archive()
            self.extracting = True
            await self.context.queue.extract(self.receiver.path, destination)
        except OutOfSpace as error:
            logger.error("cannot extract the upload from %s: %s", self.request.remote_ip, error)
            raise ApiError(507, f"the server has no space left to extract the upload ({error}); try again "
                                "later, or ask the operator to free disk space or lower --quota") from None
        except UserError as error:
            raise ApiError(400, to_http_advice(str(error), destination)) from None
        finally:
            self.extracting = False

    async def create_job(self, options: dict[str, str], upload_id: str) -> Job:
        """Turn this request into a queued job: extract its archive or use a stored upload.

        Raises
        ------
        ApiError
            400 for a bad archive or an option that the stored upload cannot
            satisfy, 404 for an unknown or expired upload.
        """
        assert self.receiver is not None and self.reservation is not None
        store = self.context.store
        job = Job(id=new_id(), options=options, arguments=render_arguments(options))

        if not upload_id and not self.receiver.is_multipart and not self.receiver.has_file:
            raise ApiError(400, f"the request body is empty and has no upload=<id>; {SEND_ARCHIVE}, "
                                "or give upload=<id> from POST /uploads")
        if upload_id:
            if self.receiver.has_file:
                raise ApiError(400, "give either an archive or upload=<id>, not both")
            upload = self._find_upload(upload_id)
            try:
                check_options_against_summary(options, upload.summary)
            except UserError as error:
                raise ApiError(400, str(error)) from None
            job.upload = upload.id
            upload.last_used = time.time()
            store.add_job(job)
        else:
            staging = self.receiver.path.parent / "input"
            await self.extract_upload(staging)
            if self.client_gone:
                raise ApiError(400, "the client disconnected during extraction")
            folder = store.add_job(job)
            os.rename(staging, folder / "input")

        self.context.queue.submit(job, self.reservation)
        self.reservation = None
        return job

    def _find_upload(self, upload_id: str) -> Upload:
        upload = self.context.store.uploads.get(upload_id) if is_id(upload_id) else None
        if upload is None:
            raise ApiError(404, f"upload {upload_id!r} not found; it may have expired, so upload the archive "
                                "again with POST /uploads")
        return upload
