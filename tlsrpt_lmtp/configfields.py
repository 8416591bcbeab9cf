"""The config file's typed field readers: one set, used by every table of the file.

A table is read into a frozen dataclass (a section). Each field's reader follows from its type
(``str``, ``int``, ``float``, ``bool``, ``Path``, ``tuple[str, ...]``, a ``StrEnum``) or, when
the value needs more (a normalised list, a duration), from ``field(metadata=read(reader))``.
A reader takes the TOML value and returns the field's value, or raises ValueError/TypeError
(with what it expected as the message); ``read_table`` turns that into a ConfigError naming
the file, the table and the key. An unknown key is an error too: a typo must not silently
fall back to a default.

``to_json``/``from_json`` carry a section across a process boundary (stage2.py) exactly.
"""

from __future__ import annotations

import functools
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

Reader = Callable[[Any], Any]
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot be used; the message says where (file, table, key) and why."""


def read(reader: Reader) -> dict[str, Reader]:
    """``field(metadata=read(reader))``: this field's value is read by ``reader``."""
    return {"read": reader}


# --------------------------------------------------------------------------------------------
# the readers
# --------------------------------------------------------------------------------------------


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def stripped(value: Any) -> str:
    return text(value).strip()


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("an integer")
    return int(value)


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a number")
    return float(value)


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise TypeError("a path")
    return Path(value).expanduser()


def lowered(item: str) -> str:
    return item.strip().lower()


def names(normalise: Callable[[str], str] = lowered) -> Reader:
    """A list of strings (one string is a list of one), each normalised."""

    def read_names(value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise TypeError("a list of strings")
        return tuple(normalise(v) for v in items)

    return read_names


def choice(kind: type[Enum]) -> Reader:
    """One of an enum's values, compared in lower case."""

    def read_choice(value: Any) -> Enum:
        try:
            return kind(stripped(value).lower())
        except (TypeError, ValueError):
            raise ValueError("one of " + ", ".join(repr(m.value) for m in kind)) from None

    return read_choice


_BY_TYPE: dict[Any, Reader] = {
    str: text,
    int: integer,
    float: number,
    bool: flag,
    Path: path,
    tuple[str, ...]: names(),
}


@functools.cache
def readers(section: type) -> dict[str, Reader]:
    """Field name → reader, for a section dataclass."""
    hints = typing.get_type_hints(section)
    out: dict[str, Reader] = {}
    for f in fields(section):
        hint = hints[f.name]
        if "read" in f.metadata:
            out[f.name] = f.metadata["read"]
        elif isinstance(hint, type) and issubclass(hint, Enum):
            out[f.name] = choice(hint)
        elif hint in _BY_TYPE:
            out[f.name] = _BY_TYPE[hint]
        else:
            raise TypeError(f"{section.__name__}.{f.name}: no reader for {hint!r}")
    return out


# --------------------------------------------------------------------------------------------
# the file and its tables
# --------------------------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    """The whole config file; a clear ConfigError if it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8
        raise ConfigError(f"config file {path} is not UTF-8 (at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def where(path: Path | None, table: str) -> str:
    return f"{path}: [{table}]" if path is not None else f"[{table}]"


def table_of(doc: Mapping[str, Any], path: Path | None, table: str) -> dict[str, Any]:
    content = doc.get(table, {})
    if not isinstance(content, dict):
        raise ConfigError(f"{where(path, table)} must be a table")
    return content


def read_values(
    content: Mapping[str, Any], known: Mapping[str, Reader], path: Path | None, table: str
) -> dict[str, Any]:
    """Each key of a table through its reader; an unknown key or a wrong value is an error."""
    values: dict[str, Any] = {}
    for key, value in content.items():
        reader = known.get(key)
        if reader is None:
            origin = f"{path}: " if path is not None else ""
            raise ConfigError(f"{origin}unknown key {key!r} in [{table}]")
        values[key] = read_value(reader, value, f"{where(path, table)} {key}")
    return values


def read_value(reader: Reader, value: Any, name: str) -> Any:
    try:
        return reader(value)
    except (TypeError, ValueError) as exc:
        expected = f" (expected {exc})" if str(exc) else ""
        raise ConfigError(f"{name}: invalid value {value!r}{expected}") from None


def read_table(path: Path | None, table: str, section: type) -> dict[str, Any]:
    """The keys given in ``[table]`` of the file at ``path``, read for ``section``'s fields
    (no file or no such table: ``{}``)."""
    if path is None:
        return {}
    return read_values(table_of(read_toml(path), path, table), readers(section), path, table)


def read_section(section: type[T], path: Path | None, table: str) -> T:
    """``[table]`` of ``path`` over ``section``'s defaults."""
    return section(**read_table(path, table, section))


def read_flags(section: type, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The command-line values given (not None), read like the file's: field name → value."""
    known = readers(section)
    return {
        key: read_value(known[key], value, "--" + key.replace("_", "-"))
        for key, value in flags.items()
        if value is not None
    }


# --------------------------------------------------------------------------------------------
# a section across a process boundary
# --------------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """A section (or a value in one) as JSON data; ``from_json`` reads it back exactly."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    return value


def from_json(kind: Any, data: Any) -> Any:
    """The value of type ``kind`` that ``to_json`` turned into ``data``."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v) for v in data)
        return tuple(from_json(a, v) for a, v in zip(args, data, strict=True))
    if isinstance(kind, type) and is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: from_json(hints[f.name], data[f.name]) for f in fields(kind)})
    if kind is timedelta:
        return timedelta(seconds=data)
    if isinstance(kind, type) and issubclass(kind, Enum | Path):
        return kind(data)
    if kind is float:
        return float(data)
    if kind in (str, int, bool) and isinstance(data, kind):
        return data
    raise TypeError(f"cannot read {data!r} as {kind!r}")
