"""Read messages from files for `tlsrpt-lmtp parse`: .eml, .json, .json.gz, .zip, Maildir, mbox."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path


def iter_messages(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """Yield (label, raw bytes) for every message or report file under the given paths."""
    for path in paths:
        if path.is_dir():
            yield from _directory(path)
        else:
            yield from _file(path)


def _directory(path: Path) -> Iterator[tuple[str, bytes]]:
    if (path / "cur").is_dir() and (path / "new").is_dir():
        for sub in ("new", "cur"):
            for f in sorted((path / sub).iterdir()):
                if f.is_file():
                    yield str(f), f.read_bytes()
        return
    for f in sorted(path.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            yield from _file(f)


def _file(path: Path) -> Iterator[tuple[str, bytes]]:
    with path.open("rb") as f:
        head = f.read(5)
    if head == b"From ":
        box = mailbox.mbox(path, create=False)
        try:
            for key in box.iterkeys():
                yield f"{path}#{key}", box.get_bytes(key)
        finally:
            box.close()
        return
    yield str(path), path.read_bytes()
