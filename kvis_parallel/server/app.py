"""Build the Tornado application and run the ``kvis-server`` service.

``make_app(settings)`` opens the state folder (marking interrupted jobs
failed), creates the job queue and returns the application. ``main()`` parses
flags and ``KVIS_*`` variables, listens and runs retention periodically. On
SIGTERM or SIGINT it cancels every job, killing their processes, and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.log import access_log

from .. import __version__
from .base import ApiError, BaseHandler, ErrorMixin, ServerContext, redact_token
from .handlers import (FilesHandler, HealthHandler, JobFileHandler, JobHandler, JobsHandler, UploadHandler,
                       UploadsHandler)
from .jobs import ID_PATTERN, StateFolderInUse, StateStore
from .scheduler import JobQueue
from .settings import Settings, parse_settings
from .streaming import DRAIN_BYTES

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


class StaticHandler(ErrorMixin, tornado.web.StaticFileHandler):
    """The web page and its files, with the same one-line error bodies as the API."""


class NotFoundHandler(BaseHandler):
    """Plain one-line 404 for unknown paths."""

    def prepare(self) -> None:
        raise ApiError(404, f"no such endpoint: {self.request.method} {self.request.path}")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Write the access-log line for a request, with any ``token=`` query value hidden."""
    status = handler.get_status()
    if status < 400:
        level = logging.INFO
    elif status < 500:
        level = logging.WARNING
    else:
        level = logging.ERROR
    request = handler.request
    uri = redact_token(request.uri or "")
    access_log.log(level, "%d %s %s (%s) %.2fms", status, request.method, uri, request.remote_ip,
                   1000.0 * request.request_time())


def make_app(settings: Settings) -> tornado.web.Application:
    """Lock and open the state folder, create the job queue and build the application.

    The shared :class:`ServerContext` is ``app.settings["kvis"]``.

    Raises
    ------
    StateFolderInUse
        If another server uses the same state folder.
    """
    store = StateStore(settings.state_dir)
    interrupted = store.open()
    if interrupted:
        logger.warning("%d job(s) were interrupted by the last shutdown and are marked failed", len(interrupted))

    context = ServerContext(settings=settings, store=store, queue=JobQueue(settings, store))
    shared = {"context": context}
    job = rf"/jobs/({ID_PATTERN})"
    routes = [
        (r"/()", StaticHandler, {"path": str(STATIC_DIR), "default_filename": "index.html"}),
        (r"/static/(.*)", StaticHandler, {"path": str(STATIC_DIR)}),
        (r"/healthz", HealthHandler, shared),
        (r"/files", FilesHandler, shared),
        (r"/jobs", JobsHandler, shared),
        (job, JobHandler, shared),
        (rf"{job}/(movie\.mp4|poster\.jpg)", JobFileHandler, shared),
        (r"/uploads", UploadsHandler, shared),
        (rf"/uploads/({ID_PATTERN})", UploadHandler, shared),
    ]
    return tornado.web.Application(
        routes, kvis=context, log_function=log_request,
        default_handler_class=NotFoundHandler, default_handler_args=shared)


async def serve(settings: Settings) -> None:
    """Listen and serve until SIGTERM or SIGINT, then cancel jobs and return."""
    app = make_app(settings)
    context: ServerContext = app.settings["kvis"]

    # The idle timeout also limits the time a client may take to send its
    # request headers, so a client that trickles headers cannot hold a
    # connection longer than one that trickles its body.
    server = tornado.httpserver.HTTPServer(
        app, max_body_size=settings.max_upload_bytes + DRAIN_BYTES,
        idle_connection_timeout=settings.upload_idle_timeout_s)
    sockets = tornado.netutil.bind_sockets(settings.port, settings.address or None)
    server.add_sockets(sockets)
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        logger.info("kvis-server %s listening on http://%s:%d", __version__,
                    f"[{host}]" if ":" in host else host, port)

    if settings.listens_beyond_loopback and settings.token is None:
        logger.warning("listening on %s without a token: anyone who can reach this port can upload "
                       "and read movies; set --token or KVIS_TOKEN", settings.address or "all interfaces")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    sweeper = loop.create_task(_sweep_periodically(context))
    await stop.wait()

    logger.info("stopping: no new connections; cancelling queued and running jobs")
    server.stop()
    sweeper.cancel()
    await _reject_unfinished_uploads(context)
    await context.queue.shutdown()
    logger.info("stopped")


async def _reject_unfinished_uploads(context: ServerContext) -> None:
    # Without this, the loop's shutdown cancels their handlers, and the
    # clients get a 500 that no log line explains.
    writes = []
    for handler in list(context.receiving):
        write = handler.stop_receiving("the server is stopping; send the upload again in a minute")
        if write is not None:
            writes.append(asyncio.ensure_future(write))
    if writes:
        await asyncio.wait(writes, timeout=5)


async def _sweep_periodically(context: ServerContext) -> None:
    while True:
        try:
            await context.queue.sweep()
        except Exception:
            logger.exception("retention sweep failed; trying again in %.0f s", context.settings.cleanup_interval_s)
        await asyncio.sleep(context.settings.cleanup_interval_s)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server from the command line; returns the exit status."""
    settings = parse_settings(argv)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except StateFolderInUse as error:
        logger.error("cannot start: %s", error)
        return 2
    except OSError as error:
        logger.error("cannot start: %s (port %d, address %r)", error, settings.port, settings.address)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
