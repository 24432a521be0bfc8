"""Tests for kvis_parallel.archive: safe extraction with limits."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kvis_parallel import archive as archive_module
from kvis_parallel.archive import ArchiveLimits, extract_archive, is_archive
from kvis_parallel.errors import ArchiveError, UserError

STEP_BYTES = b"# vtk DataFile Version 2.0\ncase\nASCII\nDATASET POLYDATA\nPOINTS 0 float\n"


class ZeroStream(io.RawIOBase):
    """A readable stream of ``size`` zero bytes that never keeps them all in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def tar_bytes(add_members: Callable[[tarfile.TarFile], None], mode: str = "w:gz") -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode=mode) as tar:
        add_members(tar)
    return stream.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes = STEP_BYTES) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_entry(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tar.addfile(info)


def case_members(prefix: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        add_entry(tar, prefix, tarfile.DIRTYPE)
        for index in (0, 10):
            add_file(tar, f"{prefix}/cavity_{index}.vtk")
            add_file(tar, f"{prefix}/movingWall/movingWall_{index}.vtk")
    return add


def write_archive(folder: Path, data: bytes, name: str = "upload.tgz") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture
def work(tmp_path: Path) -> tuple[Path, Path]:
    """An input folder and an extraction folder side by side, so escapes are visible."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    return incoming, tmp_path / "job" / "input"


# --- Good archives ------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["VTK", "sample/VTK", "job_42/case/VTK", "./VTK"])
@pytest.mark.parametrize("mode", ["w:gz", "w:", "w:bz2", "w:xz"])
def test_extracts_case(work: tuple[Path, Path], prefix: str, mode: str) -> None:
    incoming, destination = work
    archive = write_archive(incoming, tar_bytes(case_members(prefix), mode), name="upload")

    result = extract_archive(archive, destination)

    clean = prefix.removeprefix("./")
    assert result == destination
    assert (destination / clean / "cavity_10.vtk").read_bytes() == STEP_BYTES
    assert (destination / clean / "movingWall" / "movingWall_0.vtk").read_bytes() == STEP_BYTES
    assert files_under(incoming) == ["upload"]


def test_archive_name_not_used_as_path(work: tuple[Path, Path]) -> None:
    incoming, destination = work
    archive = write_archive(incoming, tar_bytes(case_members("VTK")), name="..evil.tgz")

    extract_archive(archive, destination)

    assert files_under(destination)[0] == "VTK"
    assert files_under(incoming) == ["..evil.tgz"]


def test_archive_modes_ignored(work: tuple[Path, Path]) -> None:
    incoming, destination = work

    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("VTK/case_0.vtk")
        info.size = len(STEP_BYTES)
        info.mode = 0o6777
        tar.addfile(info, io.BytesIO(STEP_BYTES))

    extract_archive(write_archive(incoming, tar_bytes(add)), destination)

    assert (destination / "VTK" / "case_0.vtk").stat().st_mode & 0o7777 == 0o644


# --- Bad archives ----------------------------------------------------------------------


def good_gzip() -> bytes:
    return tar_bytes(case_members("VTK"))


BAD_ARCHIVES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "not gzip or tar": (lambda root: b"<html>not an archive</html>" * 40, "neither a tar header nor gzip"),
    # Shorter than one tar block, which tarfile itself reports as a truncated header.
    "short text file": (lambda root: b"hello\n", "neither a tar header nor gzip"),
    "plain tar of zero blocks": (lambda root: bytes(10240), "empty"),
    "gzip of text": (lambda root: gzip.compress(b"hello " * 1000), "not a tar archive"),
    "bad gzip header": (lambda root: b"\x1f\x8b" + b"x" * 100, "not a valid gzip file"),
    "truncated gzip": (lambda root: good_gzip()[: len(good_gzip()) // 2], "truncated"),
    "gzip without trailer": (lambda root: good_gzip()[:-6], "truncated"),
    "truncated tar": (lambda root: gzip.decompress(good_gzip())[:1500], "truncated"),
    "truncated bzip2": (lambda root: bz2.compress(gzip.decompress(good_gzip()))[:-20], "truncated"),
    "truncated xz": (lambda root: lzma.compress(gzip.decompress(good_gzip()))[:-20], "truncated"),
    "empty file": (lambda root: b"", "empty"),
    "empty archive": (lambda root: tar_bytes(lambda tar: None), "empty"),
    # Both paths would land in the test's folder, beside "incoming" and "job".
    "absolute path": (lambda root: tar_bytes(lambda tar: add_file(tar, f"{root}/escaped/case_0.vtk")),
                      "absolute path"),
    "parent path": (lambda root: tar_bytes(lambda tar: add_file(tar, "VTK/../../../escaped/case_0.vtk")), "'..'"),
    "symlink": (lambda root: tar_bytes(lambda tar: add_entry(tar, "VTK/link", tarfile.SYMTYPE, "/etc/passwd")),
                "symbolic link"),
    "hardlink": (lambda root: tar_bytes(lambda tar: add_entry(tar, "VTK/link", tarfile.LNKTYPE, "/etc/passwd")),
                 "hard link"),
    "character device": (lambda root: tar_bytes(lambda tar: add_entry(tar, "VTK/tty", tarfile.CHRTYPE)), "device"),
    "block device": (lambda root: tar_bytes(lambda tar: add_entry(tar, "VTK/sda", tarfile.BLKTYPE)), "device"),
    "fifo": (lambda root: tar_bytes(lambda tar: add_entry(tar, "VTK/pipe", tarfile.FIFOTYPE)), "FIFO"),
    "file and folder": (lambda root: tar_bytes(lambda tar: (add_file(tar, "VTK"), add_file(tar, "VTK/case_0.vtk"))),
                        "both as a file and a folder"),
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_bad_archive_rejected(work: tuple[Path, Path], case: str) -> None:
    incoming, destination = work
    make, expected = BAD_ARCHIVES[case]
    archive = write_archive(incoming, make(incoming.parent))

    with pytest.raises(ArchiveError) as raised:
        extract_archive(archive, destination)

    assert expected in str(raised.value)
    assert archive.name in str(raised.value)
    # The CLI shows these messages too, so they must not assume an upload.
    assert "upload it" not in str(raised.value)
    assert isinstance(raised.value, UserError)
    assert files_under(incoming) == [archive.name]
    assert not (incoming.parent / "escaped").exists()


def test_bad_member_removes_extracted(work: tuple[Path, Path]) -> None:
    incoming, destination = work

    def add(tar: tarfile.TarFile) -> None:
        case_members("VTK")(tar)
        add_entry(tar, "VTK/link", tarfile.SYMTYPE, "../../outside")

    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_archive(write_archive(incoming, tar_bytes(add)), destination)

    assert files_under(destination) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_is_not_archive_error(work: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                        code: int) -> None:
    incoming, destination = work
    archive = write_archive(incoming, tar_bytes(case_members("VTK")))

    def fail_write(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(archive_module, "_write_member", fail_write)
    with pytest.raises(OSError) as raised:
        extract_archive(archive, destination)

    assert not isinstance(raised.value, ArchiveError)
    assert raised.value.errno == code
    assert files_under(destination) == []


def test_too_many_members(work: tuple[Path, Path]) -> None:
    incoming, destination = work

    def add(tar: tarfile.TarFile) -> None:
        for index in range(6):
            add_file(tar, f"VTK/case_{index}.vtk")

    with pytest.raises(ArchiveError, match="more than 5 members"):
        extract_archive(write_archive(incoming, tar_bytes(add)), destination, ArchiveLimits(max_members=5))

    assert files_under(destination) == []


def test_too_large(work: tuple[Path, Path]) -> None:
    incoming, destination = work

    def add(tar: tarfile.TarFile) -> None:
        add_file(tar, "VTK/case_0.vtk", b"a" * 3000)
        add_file(tar, "VTK/case_1.vtk", b"b" * 3000)

    with pytest.raises(ArchiveError, match="expands to more than 5000 bytes"):
        extract_archive(write_archive(incoming, tar_bytes(add)), destination, ArchiveLimits(max_total_bytes=5000))

    assert files_under(destination) == []


def test_zip_bomb_stops_early(work: tuple[Path, Path]) -> None:
    incoming, destination = work
    size = 64 << 20

    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("VTK/zeros.vtk")
        info.size = size
        tar.addfile(info, io.BufferedReader(ZeroStream(size), 1 << 20))

    archive = write_archive(incoming, tar_bytes(add))
    assert archive.stat().st_size < 200 << 10

    with pytest.raises(ArchiveError, match="decompression bomb"):
        extract_archive(archive, destination)

    assert files_under(destination) == []


def test_missing_archive(work: tuple[Path, Path]) -> None:
    incoming, destination = work

    with pytest.raises(ArchiveError, match="cannot open archive"):
        extract_archive(incoming / "absent.tgz", destination)


# --- Recognising archives --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("upload.tgz", b"anything", True),
    ("upload.tar.gz", b"anything", True),
    ("upload.tar", b"anything", True),
    ("upload", gzip.compress(b"x"), True),
    ("upload", bz2.compress(b"x"), True),
    ("upload", lzma.compress(b"x"), True),
    ("upload", tar_bytes(case_members("VTK"), "w:"), True),
    ("upload", b"# vtk DataFile Version 2.0\n", False),
    ("upload.series", b"{}", False),
    ("upload", b"", False),
])
def test_is_archive(tmp_path: Path, name: str, data: bytes, expected: bool) -> None:
    path = tmp_path / name
    path.write_bytes(data)

    assert is_archive(path) is expected


def test_is_archive_folder(tmp_path: Path) -> None:
    assert is_archive(tmp_path) is False


def test_link_in_destination_not_followed(work: tuple[Path, Path]) -> None:
    incoming, destination = work
    outside = incoming.parent / "outside"
    outside.mkdir()
    destination.mkdir(parents=True)
    (destination / "VTK").symlink_to(outside)

    with pytest.raises(ArchiveError, match="is a symbolic link"):
        extract_archive(write_archive(incoming, tar_bytes(case_members("VTK"))), destination)

    assert list(outside.iterdir()) == []
