"""Reading one TOML table into typed values while collecting every problem.

A :class:`Section` wraps one table. Each ``get`` converts one key and, on a
bad value, records a :class:`ConfigProblem` naming the file, the key path and
what was expected, then carries on so that every problem is reported at once.
``done()`` reports the keys nobody asked for: a typo never passes silently.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from gatewayd.config.units import parse_duration, parse_size
from gatewayd.errors import ConfigProblem

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Missing()


@dataclass
class Origins:
    """Which file set each key path (the merge of drop-ins records it)."""

    default_file: str
    by_path: dict[str, str] = field(default_factory=dict)

    def file_of(self, path: str) -> str:
        probe = path
        while probe:
            found = self.by_path.get(probe)
            if found is not None:
                return found
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return self.default_file


@dataclass
class Problems:
    """The problems found so far, shared by every section of one load."""

    origins: Origins
    items: list[ConfigProblem] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(ConfigProblem(self.origins.file_of(path), path, message))


def _type_name(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# ---- converters: raise ValueError("expected ...") on a bad value -------------


def string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    return value


def nonempty_string(value: object) -> str:
    s = string(value)
    if not s:
        raise ValueError("expected a non-empty string")
    return s


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)}")
    return value


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_name(value)}")
        if lo is not None and value < lo:
            raise ValueError(f"expected an integer >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ValueError(f"expected an integer <= {hi}, got {value}")
        return value

    return conv


def number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {_type_name(value)}")
    return float(value)


def duration(lo: float = 0.0) -> Callable[[object], float]:
    def conv(value: object) -> float:
        seconds = parse_duration(cast(str, value))
        if seconds < lo:
            raise ValueError(f"expected a duration of at least {lo:g}s, got {value!r}")
        return seconds

    return conv


def size(lo: int = 0) -> Callable[[object], int]:
    def conv(value: object) -> int:
        n = parse_size(cast(str, value))
        if n < lo:
            raise ValueError(f"expected a size of at least {lo} bytes, got {value!r}")
        return n

    return conv


def choice(*options: str) -> Callable[[object], str]:
    def conv(value: object) -> str:
        s = string(value)
        if s not in options:
            hint = _did_you_mean(s, options)
            raise ValueError(f"unknown value {s!r}{hint}; expected one of {', '.join(options)}")
        return s

    return conv


def string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected an array of strings, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"expected an array of strings; item {i} is {_type_name(item)}")
    return tuple(value)


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Section:
    """One table of the configuration, read key by key."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: Problems) -> None:
        self._data = data
        self.path = path
        self.problems = problems
        self._used: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def error(self, key: str | None, message: str) -> None:
        """Record a problem at ``key`` (or at this table when ``key`` is None)."""
        self.problems.add(self.key_path(key) if key else self.path, message)

    def get(self, key: str, conv: Callable[[Any], T], default: T = REQUIRED) -> T:
        """The value of ``key`` converted by ``conv``; ``default`` when absent.

        A missing required key or a bad value is recorded as a problem, and the
        default (or None) is returned so that reading can go on.
        """
        self._used.add(key)
        if key not in self._data:
            if default is REQUIRED:
                self.error(key, "missing required key")
                return cast(T, None)
            return default
        try:
            return conv(self._data[key])
        except ValueError as err:
            self.error(key, str(err))
            return cast(T, None) if default is REQUIRED else default

    def table(self, key: str, *, required: bool = False) -> Section:
        """The sub-table ``key`` (empty when absent and not required)."""
        self._used.add(key)
        raw = self._data.get(key)
        if raw is None:
            if required:
                self.error(key, "missing required table")
            return Section({}, self.key_path(key), self.problems)
        if not isinstance(raw, dict):
            self.error(key, f"expected a table, got {_type_name(raw)}")
            return Section({}, self.key_path(key), self.problems)
        return Section(raw, self.key_path(key), self.problems)

    def tables(self) -> Iterator[tuple[str, Section]]:
        """Every key of this table that holds a sub-table (``[devices.NAME]``)."""
        for key, raw in self._data.items():
            self._used.add(key)
            if not isinstance(raw, dict):
                self.error(key, f"expected a table, got {_type_name(raw)}")
                continue
            yield key, Section(raw, self.key_path(key), self.problems)

    def table_list(self, key: str, *, required: bool = False) -> list[Section]:
        """The array of tables ``key`` (``points = [{...}, ...]``)."""
        self._used.add(key)
        raw = self._data.get(key)
        if raw is None:
            if required:
                self.error(key, "missing required array of tables")
            return []
        if not isinstance(raw, list):
            self.error(key, f"expected an array of tables, got {_type_name(raw)}")
            return []
        out: list[Section] = []
        for i, item in enumerate(raw):
            item_path = f"{self.key_path(key)}[{i}]"
            if not isinstance(item, dict):
                self.problems.add(item_path, f"expected a table, got {_type_name(item)}")
                continue
            out.append(Section(item, item_path, self.problems))
        return out

    def mark_used(self, *keys: str) -> None:
        self._used.update(keys)

    def done(self) -> None:
        """Record every key of this table that nothing read as unknown."""
        known = sorted(self._used)
        for key in self._data:
            if key not in self._used:
                hint = _did_you_mean(key, known)
                expected = f"; expected one of {', '.join(known)}" if known else ""
                self.error(key, f"unknown key{hint}{expected}")
