"""Shared handler parts: the server context, error responses and the token check.

Every failure reaches the client as an error status with a one-line plain
text reason (JSON when the request accepts ``application/json``), so
``curl -f`` fails instead of saving an error page as ``movie.mp4``. User
errors become 4xx. Anything else is a bug: it is logged with its traceback
and the response is a 500 that names the job id when there is one.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import tornado.web
from tornado.log import app_log

from .jobs import Job, StateStore
from .scheduler import JobQueue
from .settings import Settings

logger = logging.getLogger(__name__)

_TOKEN_IN_QUERY = re.compile(r"(?<=[?&])token=[^&]*")


def redact_token(uri: str) -> str:
    """Return ``uri`` with the value of any ``token=`` query parameter replaced by ``***``."""
    return _TOKEN_IN_QUERY.sub("token=***", uri)


@dataclass
class ServerContext:
    """Objects shared by every handler: the settings, the state store and the job queue."""

    settings: Settings
    store: StateStore
    queue: JobQueue
    # Upload handlers whose body is still arriving; each gets a 503 when the server stops.
    receiving: weakref.WeakSet = field(default_factory=weakref.WeakSet)


class ApiError(tornado.web.HTTPError):
    """An error response with a one-line message for the client."""

    def __init__(self, status: int, message: str, *, job_id: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.message = " ".join(message.split())
        super().__init__(status, "%s", self.message)
        self.job_id = job_id
        self.headers = headers or {}


class ErrorMixin:
    """One-line plain-text or JSON error bodies, and the token check."""

    context: ServerContext

    def wants_json(self) -> bool:
        """Return whether the request accepts ``application/json``."""
        return "application/json" in self.request.headers.get("Accept", "")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Write the error body: the ApiError's message, or a generic one for bugs."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        job_id = None
        if isinstance(error, ApiError):
            message, job_id = error.message, error.job_id
            if job_id is not None:
                self.set_header("X-Kvis-Job", job_id)
            for name, value in error.headers.items():
                self.set_header(name, value)
        elif status_code == 405:
            message = self._method_not_allowed()
        elif status_code >= 500:
            message = "internal server error; see the server log"
        else:
            message = self._reason

        if self.wants_json():
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": message, "status": status_code, "job": job_id}) + "\n")
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(message + "\n")

    def _method_not_allowed(self) -> str:
        """Set the ``Allow`` header and return the one-line 405 message."""
        allowed = [method for method in self.SUPPORTED_METHODS
                   if getattr(type(self), method.lower(), None) is not getattr(tornado.web.RequestHandler,
                                                                              method.lower(), None)]
        self.set_header("Allow", ", ".join(allowed))
        return (f"method {self.request.method} is not allowed on {self.request.path}; "
                f"use {' or '.join(allowed) or 'another endpoint'} (see docs/server.md)")

    def _request_summary(self) -> str:
        # Tornado's summary shows the whole URI, which may carry the token.
        return f"{self.request.method} {redact_token(self.request.uri or '')} ({self.request.remote_ip})"

    def log_exception(self, typ, value, tb) -> None:
        # Client errors are routine: one info line with the reason, no traceback.
        if isinstance(value, ApiError) and value.status_code < 500:
            logger.info("%d %s %s: %s", value.status_code, self.request.method, self.request.path, value.message)
            return
        if isinstance(value, tornado.web.HTTPError):
            level = logging.INFO if value.status_code < 500 else logging.WARNING
            detail = value.log_message % value.args if value.log_message else ""
            logger.log(level, "%d %s: %s", value.status_code, self._request_summary(), detail)
            return
        app_log.error("uncaught exception in %s", self._request_summary(), exc_info=(typ, value, tb))

    def check_token(self, form_token: str | None = None) -> None:
        """Require the shared token, when one is set, as a bearer header, form field or query.

        Raises
        ------
        ApiError
            401 when the token is missing or wrong.
        """
        expected = self.context.settings.token
        if expected is None:
            return
        sent_token = _bearer_token(self.request.headers.get("Authorization", ""))
        if sent_token is None:
            sent_token = form_token if form_token is not None else self.get_query_argument("token", None)
        if sent_token is None or not hmac.compare_digest(sent_token.encode(), expected.encode()):
            raise ApiError(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="kvis"'})

    def has_token_outside_body(self) -> bool:
        """Return whether a token was sent in a header or the query string."""
        return (_bearer_token(self.request.headers.get("Authorization", "")) is not None
                or self.get_query_argument("token", None) is not None)


def _bearer_token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class BaseHandler(ErrorMixin, tornado.web.RequestHandler):
    """Common set-up for the JSON and upload handlers."""

    def initialize(self, context: ServerContext) -> None:
        self.context = context

    def send_json(self, value: Any, status: int = 200) -> None:
        """Finish the request with a JSON body."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, indent=1) + "\n")

    def find_job(self, job_id: str) -> Job:
        """Return the job with that id, or raise a 404."""
        job = self.context.store.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"job {job_id} not found; it may have expired")
        return job
