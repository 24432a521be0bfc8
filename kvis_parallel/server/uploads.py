"""Stream a request body to disk: a raw archive or a ``multipart/form-data`` form.

Tornado's own form parser needs the whole body in memory, so this module
parses multipart bodies incrementally. The ``file`` part goes straight to a
file on disk. Small text fields (``token``, ``upload``, render options) are
kept in memory up to a fixed size. Memory use is bounded by the chunk
size plus those small fields, whatever the size of the upload.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import UserError

logger = logging.getLogger(__name__)

FILE_FIELD = "file"
MAX_HEADER_BYTES = 16 * 1024
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 64
SEND_ARCHIVE = "send the archive with curl -F file=@VTK.tar.gz or --data-binary @VTK.tar.gz"

_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,200})"|([^\s;]{1,200}))', re.IGNORECASE)
_DISPOSITION_PARAMETER = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


class UploadError(UserError):
    """The request body is not a well-formed upload."""


def multipart_boundary(content_type: str) -> bytes | None:
    """Return the boundary of a ``multipart/form-data`` content type, else None.

    Raises
    ------
    UploadError
        If the content type is multipart but names no boundary.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise UploadError("invalid multipart/form-data request: the Content-Type header has no boundary")
    return (match.group(1) or match.group(2)).encode("latin-1")


def parse_part_headers(block: bytes) -> tuple[str, str | None]:
    """Return the form field name and file name of one part's header block.

    Raises
    ------
    UploadError
        If the part has no ``Content-Disposition: form-data`` header with a name.
    """
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() != "content-disposition":
            continue
        if not value.strip().lower().startswith("form-data"):
            break
        parameters = {key.lower(): re.sub(r"\\(.)", r"\1", quoted) or plain
                      for key, quoted, plain in _DISPOSITION_PARAMETER.findall(value)}
        if parameters.get("name"):
            return parameters["name"], parameters.get("filename")
        break
    raise UploadError("invalid multipart part: it has no Content-Disposition form-data header with a name")


class MultipartParser:
    """Incremental ``multipart/form-data`` parser.

    Feed body chunks to :meth:`feed`. Each part's data is passed to the
    ``on_part_data(name, data)`` callback as it arrives, after
    ``on_part_begin(name, filename)``; ``on_part_end(name)`` follows its last
    byte. Chunk boundaries may fall anywhere, including inside a delimiter.
    """

    def __init__(self, boundary: bytes,
                 on_part_begin: Callable[[str, str | None], None],
                 on_part_data: Callable[[str, bytes], None],
                 on_part_end: Callable[[str], None]) -> None:
        # Treating the body as if it began with CRLF makes the first delimiter
        # look like every later one.
        self._buffer = bytearray(b"\r\n")
        self._delimiter = b"\r\n--" + boundary
        self._state = "preamble"
        self._part: str | None = None
        self._on_part_begin = on_part_begin
        self._on_part_data = on_part_data
        self._on_part_end = on_part_end

    @property
    def finished(self) -> bool:
        """Whether the closing delimiter has been seen."""
        return self._state == "epilogue"

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body.

        Raises
        ------
        UploadError
            If a part header is malformed or too long.
        """
        if self._state == "epilogue":
            return
        self._buffer += chunk

        progressed = True
        while progressed and self._state != "epilogue":
            progressed = getattr(self, f"_parse_{self._state}")()

    def close(self) -> None:
        """Check that the body ended with the closing delimiter.

        Raises
        ------
        UploadError
            If the body stopped before the closing delimiter.
        """
        if self._state != "epilogue":
            raise UploadError("truncated multipart/form-data body: the closing boundary is missing")

    def _parse_preamble(self) -> bool:
        index = self._buffer.find(self._delimiter)
        if index < 0:
            # Keep only what could be the start of the delimiter.
            del self._buffer[:max(0, len(self._buffer) - len(self._delimiter))]
            return False
        del self._buffer[:index + len(self._delimiter)]
        self._state = "after_delimiter"
        return True

    def _parse_after_delimiter(self) -> bool:
        if len(self._buffer) < 2:
            return False
        marker = bytes(self._buffer[:2])
        if marker == b"--":
            self._state = "epilogue"
            self._buffer.clear()
            return False

        # Transport padding (spaces or tabs) may precede the CRLF.
        line_end = self._buffer.find(b"\r\n")
        if line_end < 0:
            if len(self._buffer) > 256:
                raise UploadError("invalid multipart/form-data body: no line break after a boundary")
            return False
        if self._buffer[:line_end].strip(b" \t"):
            raise UploadError("invalid multipart/form-data body: unexpected data after a boundary")
        del self._buffer[:line_end + 2]
        self._state = "headers"
        return True

    def _parse_headers(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        # A chunk may hold a whole oversized header block, so the size is checked when it ends too.
        if (end < 0 and len(self._buffer) > MAX_HEADER_BYTES) or end > MAX_HEADER_BYTES:
            raise UploadError(f"invalid multipart part: its headers exceed {MAX_HEADER_BYTES} bytes")
        if end < 0:
            return False
        name, filename = parse_part_headers(bytes(self._buffer[:end]))
        del self._buffer[:end + 4]
        self._part = name
        self._on_part_begin(name, filename)
        self._state = "data"
        return True

    def _parse_data(self) -> bool:
        assert self._part is not None
        index = self._buffer.find(self._delimiter)
        if index < 0:
            # Hold back a tail that could be the start of a split delimiter.
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                self._on_part_data(self._part, bytes(self._buffer[:-keep]))
                del self._buffer[:-keep]
            return False

        if index:
            self._on_part_data(self._part, bytes(self._buffer[:index]))
        del self._buffer[:index + len(self._delimiter)]
        self._on_part_end(self._part)
        self._part = None
        self._state = "after_delimiter"
        return True


class UploadReceiver:
    """Write one uploaded archive to ``path`` from a raw or multipart body.

    ``fields`` collects the small text fields of a multipart form. Call
    :meth:`feed` with each body chunk, :meth:`finish` after the last one and
    :meth:`check_archive` where an archive is required; :meth:`discard`
    removes the file on any failure.
    """

    def __init__(self, path: Path, content_type: str) -> None:
        # The content type is checked before the file exists, so a rejected
        # request leaves no file behind.
        boundary = multipart_boundary(content_type)
        self._parser = None if boundary is None else MultipartParser(
            boundary, self._begin_part, self._part_data, self._end_part)

        self.path = path
        self.fields: dict[str, str] = {}
        self.bytes_received = 0
        self.file_bytes = 0
        self.filename: str | None = None
        self._file: BinaryIO | None = open(path, "wb")
        self._seen_file = False
        self._field_values: dict[str, bytearray] = {}
        self._named_file_parts: set[str] = set()

    @property
    def is_multipart(self) -> bool:
        """Whether the body is a ``multipart/form-data`` form."""
        return self._parser is not None

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the request body.

        Raises
        ------
        UploadError
            If the multipart body is malformed.
        """
        self.bytes_received += len(chunk)
        if self._parser is None:
            self._write(chunk)
        else:
            self._parser.feed(chunk)

    @property
    def has_file(self) -> bool:
        """Whether the body carried an archive: a ``file`` part, or any raw bytes."""
        return self._seen_file if self._parser is not None else self.file_bytes > 0

    def finish(self) -> None:
        """Close the file after the last chunk and check the body is complete.

        Raises
        ------
        UploadError
            If a multipart body stops before its closing boundary.
        """
        self._close_file()
        if self._parser is not None:
            self._parser.close()

    def check_archive(self) -> None:
        """Check that the body carried a non-empty archive.

        Raises
        ------
        UploadError
            If there is no ``file`` part or the archive is empty.
        """
        if not self.is_multipart and self.file_bytes == 0:
            raise UploadError(f"the request body is empty; {SEND_ARCHIVE}")
        if not self.has_file:
            raise UploadError(
                f"missing form field {FILE_FIELD!r}: send the archive as curl -F file=@VTK.tar.gz")
        if self.file_bytes == 0:
            raise UploadError("the uploaded archive is empty: send a .tar.gz of the foamToVTK VTK folder")

    def discard(self) -> None:
        """Close and delete the partial file; safe to call more than once."""
        self._close_file()
        self.path.unlink(missing_ok=True)

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self.file_bytes += len(data)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _begin_part(self, name: str, filename: str | None) -> None:
        if name == FILE_FIELD:
            if self._seen_file:
                raise UploadError(f"the form has more than one {FILE_FIELD!r} field: send one archive per request")
            self._seen_file = True
            self.filename = filename
            return
        if len(self._field_values) >= MAX_FIELDS:
            raise UploadError(f"the form has more than {MAX_FIELDS} fields")
        self._field_values[name] = bytearray()
        if filename is not None:
            self._named_file_parts.add(name)

    def _part_data(self, name: str, data: bytes) -> None:
        if name == FILE_FIELD:
            self._write(data)
            return
        value = self._field_values[name]
        if len(value) + len(data) > MAX_FIELD_BYTES:
            if name in self._named_file_parts and not self._seen_file:
                # A large file part under another name is the archive sent as -F other=@VTK.tar.gz.
                raise UploadError(f"missing form field {FILE_FIELD!r} (got {name!r}): send the archive "
                                  "as curl -F file=@VTK.tar.gz")
            raise UploadError(f"form field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
        value += data

    def _end_part(self, name: str) -> None:
        if name == FILE_FIELD:
            return
        try:
            self.fields[name] = self._field_values.pop(name).decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(f"form field {name!r} is not valid UTF-8 text") from None
