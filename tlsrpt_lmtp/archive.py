"""The durable archive of raw messages: nothing is acknowledged before it is on disk.

A message is stored under its SHA-256, so storing the same bytes twice is a no-op and the
key (``archive_id``) is stable across re-imports. Writes are temp file, fsync, rename, fsync
of the directory. Messages without a usable report are moved to ``quarantine/``, from where
``reprocess`` can take them again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path


class ArchiveError(OSError):
    """The message could not be stored durably; the MTA must retry."""


class Area(StrEnum):
    ARCHIVE = "archive"
    QUARANTINE = "quarantine"


class Archive:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        # Directories are made on first write, so a broken disk makes deliveries fail
        # with a temporary error (and the MTA retry) instead of stopping the server.

    @staticmethod
    def key(raw: bytes) -> str:
        return hashlib.sha256(raw).hexdigest()

    def path(self, archive_id: str, area: Area = Area.ARCHIVE) -> Path:
        return self.root / area / archive_id[:2] / f"{archive_id}.eml"

    def put(self, raw: bytes) -> str:
        """Store ``raw`` durably and return its archive id; raise ArchiveError if not possible."""
        archive_id = self.key(raw)
        if self.where(archive_id) is not None:
            return archive_id
        final = self.path(archive_id)
        tmp = self._tmp / f"{archive_id}.{os.getpid()}.tmp"
        try:
            _ensure_dir(self._tmp)
            _ensure_dir(final.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ArchiveError(exc.errno, f"cannot archive message: {exc.strerror or exc}") from exc
        return archive_id

    def where(self, archive_id: str) -> Area | None:
        for area in Area:
            if self.path(archive_id, area).exists():
                return area
        return None

    def move(self, archive_id: str, to: Area) -> None:
        src = self.path(archive_id, Area.QUARANTINE if to is Area.ARCHIVE else Area.ARCHIVE)
        if not src.exists():
            return
        dst = self.path(archive_id, to)
        _ensure_dir(dst.parent)
        os.replace(src, dst)
        _fsync_dir(dst.parent)

    def scan(self, area: Area) -> Iterator[tuple[str, bytes]]:
        if not (self.root / area).is_dir():
            return
        for path in sorted((self.root / area).glob("*/*.eml")):
            yield path.stem, path.read_bytes()


def _ensure_dir(path: Path) -> None:
    if not path.is_dir():
        _ensure_dir(path.parent)
        path.mkdir(mode=0o750, exist_ok=True)
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
