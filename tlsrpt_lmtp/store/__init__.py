"""The report store: the archive of raw mail, the normalised reports, the alert state.

``open_store(target)`` opens it: a path or ``sqlite:PATH`` is the embedded SQLite file;
``postgresql://…`` (or ``postgres://…``) a PostgreSQL database that several nodes may share.
``base.py`` is the interface, ``schema.py`` the one schema and its migrations.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tlsrpt_lmtp.store.base import Reader, Store, StoreUnavailable

DB_NAME = "tlsrpt.sqlite3"  # the SQLite store's file in the data directory


def is_postgres(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def target_of(database: str | None, data_dir: Path) -> str | Path:
    """The store a command uses: ``[storage] database`` (or --database), else the SQLite file
    in the data directory."""
    return database if database else data_dir / DB_NAME


def open_store(target: str | Path) -> Store:
    """Open (creating or migrating its schema) the store at ``target``."""
    if is_postgres(target):
        return _postgres().PostgresStore(str(target))  # type: ignore[no-any-return]
    from tlsrpt_lmtp.store.sqlite import SqliteStore

    return SqliteStore(_path(target))


def open_reader(target: str | Path) -> Reader:
    """A read-only session on the store at ``target`` (never creates it)."""
    if is_postgres(target):
        return _postgres().open_reader(str(target))  # type: ignore[no-any-return]
    from tlsrpt_lmtp.store.sqlite import open_reader as sqlite_reader

    return sqlite_reader(_path(target))


def _postgres() -> ModuleType:
    """The PostgreSQL backend; a clear error when its driver (an extra) is not installed."""
    try:
        from tlsrpt_lmtp.store import postgres
    except ModuleNotFoundError as exc:
        raise StoreUnavailable(
            f"a postgresql:// store needs the Python package psycopg ({exc.name} is missing:"
            " pip install 'tlsrpt-lmtp[postgres]')"
        ) from None
    return postgres


def _path(target: str | Path) -> Path:
    if isinstance(target, str) and target.startswith("sqlite:"):
        return Path(target.removeprefix("sqlite:"))
    return Path(target)


__all__ = ["DB_NAME", "Reader", "Store", "is_postgres", "open_reader", "open_store", "target_of"]
