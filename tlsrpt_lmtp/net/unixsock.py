"""Checks before listening on a unix socket path (the LMTP server and the milter).

The socket itself is made 0666 so that the MTA, running as another user, can connect; who
may connect is decided by the directory it lives in. So the directory must not let anyone
else add or replace entries, and what is at the path is removed only if it is a stale socket.
"""

from __future__ import annotations

import errno
import socket
import stat
from pathlib import Path


class UnsafeSocketPathError(OSError):
    """The unix socket path cannot be used safely; ``strerror`` says why."""


def prepare_unix_listen(path: str | Path) -> None:
    """Refuse a group- or world-writable directory and a path that exists but is not a
    socket; remove a stale socket (one nobody listens on). Raises UnsafeSocketPathError."""
    path = Path(path)
    directory = path.parent
    try:
        mode = directory.stat().st_mode
    except OSError as exc:
        raise UnsafeSocketPathError(exc.errno, f"{directory}: {exc.strerror}") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeSocketPathError(
            errno.EPERM,
            f"{directory} is writable by group or others (mode {stat.S_IMODE(mode):04o}):"
            " anyone who can write there could replace the socket; use a directory"
            " writable by its owner only (e.g. systemd's RuntimeDirectory=, mode 0750)",
        )
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafeSocketPathError(
            errno.EEXIST, f"{path} exists and is not a socket; not replacing it"
        )
    if _listening(path):
        raise UnsafeSocketPathError(errno.EADDRINUSE, f"{path}: another process listens there")
    path.unlink(missing_ok=True)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except TimeoutError:  # a listener with a full backlog
            return True
        except OSError:
            return False
    return True
