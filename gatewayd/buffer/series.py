"""The series catalog (interned device/point/unit/kind) and uplink selections. No I/O.

Every reading row points at a series; the catalog maps both ways in memory.
Ids are handed out monotonically and never reused while the process runs:
a series whose insert did not commit stays unpersisted and is written again
(``INSERT OR IGNORE``) with the next transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

SeriesKey = tuple[str, str, str | None, int]  # device, point, unit, kind


@dataclass(frozen=True, slots=True)
class Series:
    id: int
    device: str
    point: str
    unit: str | None
    kind: int

    @property
    def name(self) -> str:
        return f"{self.device}/{self.point}"

    def row(self) -> tuple[int, str, str, str | None, int]:
        return (self.id, self.device, self.point, self.unit, self.kind)


class SeriesCatalog:
    """All known series, with the priority of each (from its device)."""

    def __init__(self, priorities: Mapping[str, int] | None = None) -> None:
        self.ids: dict[SeriesKey, int] = {}  # the hot-path lookup
        self._by_id: dict[int, Series] = {}
        self.ordered: list[Series] = []  # in id order; selections catch up from here
        self._unpersisted: list[Series] = []
        self._next_id = 1
        self._priorities: dict[str, int] = dict(priorities or {})
        self._levels: list[tuple[int, frozenset[int]]] | None = None

    def __len__(self) -> int:
        return len(self.ordered)

    def __getitem__(self, series_id: int) -> Series:
        return self._by_id[series_id]

    def load(self, rows: Iterable[Sequence[object]]) -> None:
        """Fill from ``(id, device, point, unit, kind)`` rows of the database, in id order."""
        for row in rows:
            sid, device, point, unit, kind = row
            assert isinstance(sid, int) and isinstance(device, str) and isinstance(point, str)
            assert (unit is None or isinstance(unit, str)) and isinstance(kind, int)
            self._add(Series(sid, device, point, unit, kind))

    def intern(self, key: SeriesKey) -> int:
        """The id of ``key``, creating an unpersisted series when it is new."""
        sid = self.ids.get(key)
        if sid is None:
            series = Series(self._next_id, *key)
            self._add(series)
            self._unpersisted.append(series)
            sid = series.id
        return sid

    def unpersisted(self) -> list[Series]:
        return list(self._unpersisted)

    def mark_persisted(self, series: Iterable[Series]) -> None:
        done = {s.id for s in series}
        self._unpersisted = [s for s in self._unpersisted if s.id not in done]

    def priority(self, series_id: int) -> int:
        return self._priorities.get(self._by_id[series_id].device, 0)

    def set_priorities(self, priorities: Mapping[str, int]) -> None:
        self._priorities = dict(priorities)
        self._levels = None

    def levels(self) -> list[tuple[int, frozenset[int]]]:
        """``(priority, series ids)`` for every priority in use, lowest first."""
        if self._levels is None:
            groups: dict[int, set[int]] = {}
            for s in self.ordered:
                groups.setdefault(self._priorities.get(s.device, 0), set()).add(s.id)
            self._levels = [(p, frozenset(ids)) for p, ids in sorted(groups.items())]
        return self._levels

    def _add(self, series: Series) -> None:
        self.ids[(series.device, series.point, series.unit, series.kind)] = series.id
        self._by_id[series.id] = series
        self.ordered.append(series)
        self._next_id = max(self._next_id, series.id + 1)
        self._levels = None


class Selection:
    """The series one uplink carries: ``fnmatch`` patterns over ``device/point``."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
        self._everything = "*" in self.patterns
        self.ids: set[int] = set()
        self._seen = 0  # catalog entries examined so far
        self._json: str | None = None

    def matches(self, name: str) -> bool:
        return self._everything or any(fnmatchcase(name, p) for p in self.patterns)

    def refresh(self, catalog: SeriesCatalog) -> None:
        """Examine the series added to ``catalog`` since the last refresh."""
        for series in catalog.ordered[self._seen:]:
            if self.matches(series.name):
                self.ids.add(series.id)
                self._json = None
        self._seen = len(catalog.ordered)

    def covers(self, catalog: SeriesCatalog) -> bool:
        """True when every known series is selected (no filter needed)."""
        self.refresh(catalog)
        return len(self.ids) == len(catalog)

    def as_json(self) -> str:
        """The selected ids as a JSON array, for ``json_each`` in SQL."""
        if self._json is None:
            self._json = json.dumps(sorted(self.ids))
        return self._json
