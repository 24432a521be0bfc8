"""Extract an uploaded or given tar archive safely into one folder.

Only regular files and folders are written, and only inside the destination.
Members with absolute paths, ``..`` components, links or device entries are
rejected. The number of members, the total uncompressed size and the ratio of
uncompressed to compressed bytes are limited, and the limits are checked while
the bytes stream, so a small archive that expands to terabytes stops early.

The compression (gzip, bzip2, xz or none) is recognised by content. The
archive is read with :mod:`tarfile` in streaming mode and every member is
written by this module, never by ``extractall``. The compressed stream is read
to its end, so a missing gzip trailer or a bad checksum is reported too.
"""

from __future__ import annotations

import bz2
import gzip
import errno
import logging
import lzma
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import ArchiveError

logger = logging.getLogger(__name__)

# errno values that mean the destination is full, not that the archive is bad.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

# Magic numbers of the compressions tarfile can stream, and of tar itself.
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_TAR_MAGIC_OFFSET = 257
_TAR_MAGIC = b"ustar"

_TAR_BLOCK_BYTES = 512

_CHUNK_BYTES = 1 << 20

# The fixes named in error messages, for a file that is not an archive and for a damaged one.
_PACK_HINT = "give a .tar, .tar.gz or .tgz of the case's VTK folder, e.g. made with tar -czf VTK.tar.gz case/VTK"
_COPY_HINT = "check that the file was copied completely, or make the archive again"

# Below this many uncompressed bytes the ratio is not checked: tiny archives
# of repetitive text legitimately compress far better than 200:1, and they
# cannot fill a disk.
_RATIO_FLOOR_BYTES = 8 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits applied while extracting one archive.

    ``max_total_bytes`` counts uncompressed member contents. ``max_ratio`` is
    uncompressed bytes written over compressed bytes read so far.
    """

    max_members: int = 100_000
    max_total_bytes: int = 20 * 2**30
    max_ratio: float = 200.0


def is_archive(path: Path) -> bool:
    """Return whether a file is a tar archive, by its name or its magic bytes.

    Parameters
    ----------
    path
        Any path; folders and unreadable files are not archives.
    """
    path = Path(path)
    if not path.is_file():
        return False
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as stream:
            head = stream.read(_TAR_MAGIC_OFFSET + len(_TAR_MAGIC))
    except OSError:
        return False
    return (head.startswith((_GZIP_MAGIC, _BZIP2_MAGIC, _XZ_MAGIC))
            or head[_TAR_MAGIC_OFFSET:].startswith(_TAR_MAGIC))


class _CountingReader:
    """A read-only file wrapper that counts the bytes read from the archive file."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.bytes_read += len(data)
        return data


class _Extraction:
    """State of one extraction: what was written and how much, against the limits."""

    def __init__(self, archive: Path, destination: Path, limits: ArchiveLimits, source: _CountingReader) -> None:
        self.archive = archive
        self.destination = destination
        self.limits = limits
        self.source = source
        self.members = 0
        self.total_bytes = 0
        self.created: list[Path] = []

    def check_member_count(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(f"archive {self.archive.name} has more than {self.limits.max_members} members; "
                               "pack only the VTK folder of the case")

    def count_bytes(self, size: int) -> None:
        self.total_bytes += size
        if self.total_bytes > self.limits.max_total_bytes:
            raise ArchiveError(f"archive {self.archive.name} expands to more than "
                               f"{self.limits.max_total_bytes} bytes; pack fewer time steps or fields")

        ratio = self.total_bytes / max(self.source.bytes_read, 1)
        if self.total_bytes > _RATIO_FLOOR_BYTES and ratio > self.limits.max_ratio:
            raise ArchiveError(f"archive {self.archive.name} expands more than {self.limits.max_ratio:g} times "
                               "its compressed size, which looks like a decompression bomb; it was rejected")

    def remove_created(self) -> None:
        """Delete what this extraction wrote, newest first."""
        for path in reversed(self.created):
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as error:
                logger.warning("cannot remove %s after a failed extraction: %s", path, error)


def extract_archive(archive: Path, destination: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Extract the regular files and folders of a tar archive into a folder.

    Parameters
    ----------
    archive
        A ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file;
        the compression is recognised by content, not by name.
    destination
        The folder to extract into; created when missing. Nothing is written
        outside it, and the archive's own name is never used as a path.
    limits
        Limits on members, total uncompressed size and compression ratio.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    ArchiveError
        If the file is not a tar archive, is truncated or empty, contains a member
        that is not a plain file or folder or points outside the destination,
        or passes a limit. Files written before the error are removed.
    """
    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)

    try:
        stream = open(archive, "rb")
    except OSError as error:
        raise ArchiveError(f"cannot open archive {archive}: {error.strerror}") from None

    with stream:
        head = stream.read(_TAR_BLOCK_BYTES)
        stream.seek(0)
        if head and not _is_compressed(head) and not _is_tar_header(head):
            raise ArchiveError(f"{archive.name} is not a tar archive (its first bytes are neither a tar header "
                               f"nor gzip, bzip2 or xz data); {_PACK_HINT}")
        source = _CountingReader(stream)
        extraction = _Extraction(archive, destination.resolve(), limits, source)
        try:
            _extract_members(extraction, head)
        except ArchiveError:
            extraction.remove_created()
            raise
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
            extraction.remove_created()
            # A full disk is the destination's fault, not the archive's, so
            # the caller gets the OSError and can report it differently (HTTP 507, not 400).
            if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
                raise
            raise ArchiveError(_read_error_message(archive, error)) from None

    if extraction.members == 0:
        raise ArchiveError(f"archive {archive.name} is empty; pack the case's VTK folder, "
                           "e.g. tar -czf VTK.tar.gz case/VTK")
    logger.info("extracted %d members (%d bytes) from %s into %s",
                extraction.members, extraction.total_bytes, archive.name, destination)
    return destination


def _is_compressed(head: bytes) -> bool:
    return head.startswith((_GZIP_MAGIC, _BZIP2_MAGIC, _XZ_MAGIC))


def _is_tar_header(head: bytes) -> bool:
    """Return whether ``head`` starts a tar archive.

    Accepted are a POSIX header (its magic), an older header with a valid
    checksum, and the zero block that ends an archive, which tarfile then
    reports as empty.
    """
    if head[_TAR_MAGIC_OFFSET:].startswith(_TAR_MAGIC) or head == bytes(len(head)):
        return True
    try:
        tarfile.TarInfo.frombuf(head[:_TAR_BLOCK_BYTES], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _read_error_message(archive: Path, error: BaseException) -> str:
    detail = str(error) or type(error).__name__
    if isinstance(error, gzip.BadGzipFile):
        return f"archive {archive.name} is not a valid gzip file ({detail}); {_COPY_HINT}"
    if isinstance(error, tarfile.ReadError) and "empty file" in detail:
        return f"archive {archive.name} is an empty file; {_PACK_HINT}"
    if isinstance(error, (EOFError, zlib.error)) or "unexpected end" in detail or "truncated" in detail:
        return f"archive {archive.name} is truncated or corrupt ({detail}); {_COPY_HINT}"
    if isinstance(error, tarfile.ReadError):
        return (f"{archive.name} is not a tar archive or is corrupt ({detail}); "
                "give a .tar, .tar.gz or .tgz of the case's VTK folder")
    return f"cannot extract archive {archive.name}: {detail}"


def _decompressed(source: _CountingReader, head: bytes) -> BinaryIO | _CountingReader:
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=source, mode="rb")
    if head.startswith(_BZIP2_MAGIC):
        return bz2.BZ2File(source, mode="rb")
    if head.startswith(_XZ_MAGIC):
        return lzma.LZMAFile(source, mode="rb")
    return source


def _extract_members(extraction: _Extraction, head: bytes) -> None:
    stream = _decompressed(extraction.source, head)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            extraction.check_member_count()
            relative = _safe_relative_path(extraction.archive, member)
            if relative is None:
                continue
            target = extraction.destination / relative

            if member.isdir():
                _make_folders(extraction, target)
            else:
                _make_folders(extraction, target.parent)
                _write_member(extraction, tar, member, target)

    # Read past the tar end marker so that the decompressor checks its trailer.
    # The padding counts towards the limits because a bomb could hide there.
    if stream is not extraction.source:
        while chunk := stream.read(_CHUNK_BYTES):
            extraction.count_bytes(len(chunk))


def _safe_relative_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath | None:
    """Return the member's path relative to the destination, or None for the top folder itself."""
    name = member.name
    if not (member.isfile() or member.isdir()):
        kind = _member_kind(member)
        raise ArchiveError(f"archive {archive.name} contains {kind} {name!r}; only regular files and folders "
                           "are accepted (tar with --dereference to store link targets as files)")

    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive {archive.name} contains the absolute path {name!r}; "
                           "create the archive from relative paths")
    path = PurePosixPath(name.replace("\\", "/"))
    if ".." in path.parts:
        raise ArchiveError(f"archive {archive.name} contains {name!r}, which points outside the archive with '..'")

    parts = [part for part in path.parts if part not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "the symbolic link"
    if member.islnk():
        return "the hard link"
    if member.ischr() or member.isblk():
        return "the device"
    if member.isfifo():
        return "the FIFO"
    return "the special entry"


def _make_folders(extraction: _Extraction, folder: Path) -> None:
    missing = []
    while folder != extraction.destination and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    if folder != extraction.destination and not folder.is_dir():
        raise ArchiveError(f"archive {extraction.archive.name} uses {folder.name!r} both as a file and a folder")

    # Members are never links, so a link here was in the destination before;
    # writing through it could leave the destination.
    for existing in (folder, *folder.parents):
        if existing == extraction.destination:
            break
        if existing.is_symlink():
            raise ArchiveError(f"cannot extract into {extraction.destination}: {existing} is a symbolic link; "
                               "extract into a new, empty folder")

    for new_folder in reversed(missing):
        new_folder.mkdir(mode=0o755)
        extraction.created.append(new_folder)


def _write_member(extraction: _Extraction, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    if target.is_dir():
        raise ArchiveError(f"archive {extraction.archive.name} uses {member.name!r} both as a file and a folder")

    source = tar.extractfile(member)
    # O_NOFOLLOW: never write through a link, even one that appeared in the destination meanwhile.
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    extraction.created.append(target)
    with os.fdopen(descriptor, "wb") as output:
        while chunk := source.read(_CHUNK_BYTES):
            extraction.count_bytes(len(chunk))
            output.write(chunk)

    written = target.stat().st_size
    if written != member.size:
        raise ArchiveError(f"archive {extraction.archive.name} is truncated: member {member.name!r} has "
                           f"{written} of its {member.size} bytes; {_COPY_HINT}")
