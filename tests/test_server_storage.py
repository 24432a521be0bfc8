"""A full disk under the state folder: uploads and extraction get 507, and nothing is left behind.

The server runs in-process (Tornado's test server), and the full disk is an
``OSError(ENOSPC)`` raised where the upload is written or extracted, because
mounting a small file system needs privileges a test run may not have.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from tornado.testing import AsyncHTTPTestCase

from kvis_parallel.errors import ArchiveError
from kvis_parallel.server import scheduler
from kvis_parallel.server.app import make_app
from kvis_parallel.server.scheduler import OutOfSpace, is_out_of_space
from kvis_parallel.server.settings import Settings
from kvis_parallel.server.uploads import UploadReceiver

pytestmark = pytest.mark.server

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_write(self: UploadReceiver, data: bytes) -> None:
    raise NO_SPACE


@pytest.mark.parametrize("code, expected", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False)])
def test_is_out_of_space(code: int, expected: bool) -> None:
    assert is_out_of_space(OSError(code, os.strerror(code))) is expected


def test_extract_full_disk_is_out_of_space(tmp_path: Path) -> None:
    archive = tmp_path / "upload"
    archive.write_bytes(b"x")
    with mock.patch.object(scheduler, "extract_archive", side_effect=NO_SPACE):
        with pytest.raises(OutOfSpace):
            scheduler._extract_and_discover(archive, tmp_path / "input", None)
    assert not archive.exists()
    assert not (tmp_path / "input").exists()


def test_extract_bad_archive_stays_user_error(tmp_path: Path) -> None:
    archive = tmp_path / "upload"
    archive.write_bytes(b"x")
    with mock.patch.object(scheduler, "extract_archive", side_effect=ArchiveError("archive upload is truncated")):
        with pytest.raises(ArchiveError):
            scheduler._extract_and_discover(archive, tmp_path / "input", None)


class FullDiskTest(AsyncHTTPTestCase):
    """Upload requests against a state folder whose disk is full."""

    def get_app(self):
        self.state = tempfile.TemporaryDirectory()
        self.addCleanup(self.state.cleanup)
        return make_app(Settings(state_dir=Path(self.state.name), address="127.0.0.1"))

    def incoming(self) -> list[str]:
        return os.listdir(Path(self.state.name) / "incoming")

    def test_raw_upload_is_507(self) -> None:
        with mock.patch.object(UploadReceiver, "_write", fail_write):
            response = self.fetch("/files", method="POST", body=b"x" * 10_000,
                                  headers={"Content-Type": "application/gzip"})
        assert response.code == 507
        assert b"no space left" in response.body
        assert self.incoming() == []

    def test_multipart_upload_is_507(self) -> None:
        body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
                + b"x" * 10_000 + b"\r\n--B--\r\n")
        with mock.patch.object(UploadReceiver, "_write", fail_write):
            response = self.fetch("/uploads", method="POST", body=body,
                                  headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert response.code == 507
        assert self.incoming() == []

    def test_extraction_out_of_space_is_507(self) -> None:
        with mock.patch.object(scheduler, "_extract_and_discover", side_effect=OutOfSpace("No space left on device")):
            response = self.fetch("/files", method="POST", body=b"x" * 1000,
                                  headers={"Content-Type": "application/gzip"})
        assert response.code == 507
        assert b"no space left to extract" in response.body
        assert os.listdir(Path(self.state.name) / "jobs") == []
