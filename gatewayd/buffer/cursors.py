"""Uplink cursors: what each uplink has acknowledged, what it has left to send,
and which rows may go once it has passed them.

Deletion rule: a row goes once every uplink that selects it has acknowledged
it (and at least one uplink has passed it). When uplink U acknowledges up to
``upto``, only the rows U newly passed need looking at: a row among them is
deleted unless an uplink still behind it selects its series. Rows kept that
way are looked at again when that uplink passes them. Each uplink keeps a
``purged`` mark (in memory; zero after a restart, so a start re-examines
what is left) up to which its passing has been applied.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatewayd.buffer import schema
from gatewayd.buffer.codec import decode_value
from gatewayd.buffer.database import Database, Probe, Statement
from gatewayd.buffer.series import Selection, SeriesCatalog
from gatewayd.buffer.state import BufferState
from gatewayd.errors import StorageError
from gatewayd.reading import Reading

READ_LIMIT_MAX = 100_000
SCAN_PER_RECORD = 256  # a filtered read looks at most this many row ids per record asked


@dataclass(frozen=True)
class Batch:
    records: list[tuple[int, Reading]]  # (row id, reading), in row-id order
    # The uplink may ack up to here once these records are acknowledged: at
    # least the last record id, covering the unselected rows the read skipped;
    # the highest committed id when the read reached the end of the table.
    upto: int


@dataclass(frozen=True)
class PurgeRange:
    """Rows ``lo < id <= hi`` to delete, except those of series in ``keep``."""

    lo: int
    hi: int
    keep: frozenset[int]
    keep_all: bool  # an uplink behind these rows selects every series: delete nothing


def purge_range(lo: int, hi: int,
                others: Sequence[tuple[int, frozenset[int] | None]]) -> PurgeRange:
    """The first stretch of ``(lo, hi]`` over which the set of blocking uplinks is constant.

    ``others`` are the other uplinks as ``(cursor, selected series or None for
    every series)``. An uplink blocks the rows above its cursor; the stretch
    ends at the first other cursor inside the range.
    """
    inside = [c for c, _ in others if lo < c < hi]
    end = min(inside, default=hi)
    keep: set[int] = set()
    keep_all = False
    for cursor, selected in others:
        if cursor <= lo:
            if selected is None:
                keep_all = True
            else:
                keep |= selected
    return PurgeRange(lo, end, frozenset(keep), keep_all)


@dataclass
class UplinkState:
    name: str
    selection: Selection
    cursor: int = 0  # persisted acknowledged position
    purged: int = 0  # this uplink's passing has been applied up to here
    backlog: int = 0  # selected rows above the cursor
    stored: bool = False  # the cursor row exists in the database
    recount: bool = True  # backlog needs counting from the database


class UplinkCursors:
    """The per-uplink state and the reads, acks and deletes that go with it."""

    def __init__(self, catalog: SeriesCatalog, state: BufferState) -> None:
        self._catalog = catalog
        self._state = state
        self.uplinks: dict[str, UplinkState] = {}
        self._removed: set[str] = set()  # cursor rows still to delete

    def configure(self, uplinks: Mapping[str, Sequence[str]]) -> None:
        """Apply the configured uplinks (name -> select patterns) in memory.

        New uplinks start at the oldest row; the database catches up in ``sync``.
        """
        for name in list(self.uplinks):
            if name not in uplinks:
                del self.uplinks[name]
                self._removed.add(name)
        for name, patterns in uplinks.items():
            old = self.uplinks.get(name)
            if old is None:
                self.uplinks[name] = UplinkState(name, Selection(patterns))
                self._removed.discard(name)
            elif old.selection.patterns != tuple(patterns):
                old.selection = Selection(patterns)
                old.recount = True
        # Who blocks which rows changed: every uplink re-examines what it passed.
        for up in self.uplinks.values():
            up.purged = 0

    def get(self, name: str) -> UplinkState:
        try:
            return self.uplinks[name]
        except KeyError:
            raise StorageError(f"buffer: unknown uplink {name!r}",
                               reason="unknown_uplink") from None

    def needs_sync(self) -> bool:
        return bool(self._removed) or any(
            not up.stored or up.recount for up in self.uplinks.values())

    def needs_purge(self) -> bool:
        return any(up.purged < up.cursor for up in self.uplinks.values())

    async def load(self, db: Database) -> int:
        """Read the stored cursors (caller holds the lock); returns the highest stored cursor."""
        stored = dict(await db.fetchall(schema.SELECT_CURSORS))
        for name, up in self.uplinks.items():
            if name in stored:
                up.cursor, up.stored = int(stored[name]), True
        self._removed |= set(stored) - set(self.uplinks)
        return max((int(c) for c in stored.values()), default=0)

    async def sync(self, db: Database) -> None:
        """Store new cursors, delete removed ones, recount backlogs (caller holds the lock)."""
        new = [up for up in self.uplinks.values() if not up.stored]
        removed = sorted(self._removed)
        if new or removed:
            statements = [Statement(schema.DELETE_CURSOR, [(n,) for n in removed], many=True),
                          Statement(schema.INSERT_CURSOR, [(u.name, u.cursor) for u in new],
                                    many=True)]

            def stored(counts: list[int] | None) -> None:
                for up in new:
                    up.stored = True
                self._removed -= set(removed)

            await db.write(statements, on_commit=stored)
        for up in self.uplinks.values():
            if up.recount:
                up.backlog = await self._count_selected(db, up, up.cursor, self._state.last_id)
                up.recount = False

    async def read(self, db: Database, name: str, after: int, limit: int) -> Batch:
        up = self.get(name)
        limit = max(1, min(limit, READ_LIMIT_MAX))
        async with db.lock:
            end = self._state.last_id
            if up.selection.covers(self._catalog):
                rows = await db.fetchall(schema.READ_ALL, (after, limit))
                upto = rows[-1][0] if len(rows) == limit else max(end, after)
            else:
                hi = min(end, after + limit * SCAN_PER_RECORD)
                rows = await db.fetchall(schema.READ_SELECTED,
                                         (after, hi, up.selection.as_json(), limit))
                upto = rows[-1][0] if len(rows) == limit else max(hi, after)
        return Batch(records=self._records(rows), upto=upto)

    async def ack(self, db: Database, name: str, upto: int) -> None:
        """Persist ``upto`` as the cursor of ``name``, then delete what no uplink still needs.

        Raises StorageError when the cursor could not be stored.
        """
        up = self.get(name)
        async with db.lock:
            upto = min(upto, self._state.last_id)
            old = up.cursor
            if upto <= old:
                return
            acked = await self._count_selected(db, up, old, upto)
            purge, purged_to = await self._purge_step(db, up, upto)
            statements = [Statement(schema.ADVANCE_CURSOR, (name, upto))]
            statements += [purge] if purge else []

            def advanced(counts: list[int] | None) -> None:
                up.cursor = max(up.cursor, upto)
                up.stored = True
                up.backlog = max(0, up.backlog - acked)
                if counts is not None:
                    up.purged = max(up.purged, purged_to)
                    self._state.rows -= sum(counts[1:])
                else:
                    db.in_doubt = True  # row count unknown: recounted by the caller

            await db.write(statements, on_commit=advanced,
                           probe=Probe(schema.CURSOR_AT_LEAST, (name, upto)))

    async def purge(self, db: Database, up: UplinkState) -> None:
        """Apply the passing of ``up`` up to its cursor, one bounded transaction at a time."""
        while up.purged < up.cursor and self.uplinks.get(up.name) is up:
            async with db.lock:
                statement, purged_to = await self._purge_step(db, up, up.cursor)
                if statement is None:
                    up.purged = max(up.purged, purged_to)
                    continue

                def deleted(counts: list[int] | None, purged_to: int = purged_to) -> None:
                    if counts is None:
                        db.in_doubt = True
                        return
                    up.purged = max(up.purged, purged_to)
                    self._state.rows -= counts[0]

                await db.write([statement], on_commit=deleted)

    async def _purge_step(self, db: Database, up: UplinkState,
                          cursor: int) -> tuple[Statement | None, int]:
        """The next delete on behalf of ``up`` passing up to ``cursor``, and where it ends."""
        first = await db.scalar(schema.FIRST_ID_AFTER, (up.purged,))
        if first is None or first > cursor:
            return None, cursor
        lo = first - 1
        others = [(o.cursor, self._selected(o)) for o in self.uplinks.values() if o is not up]
        stretch = purge_range(lo, min(cursor, lo + self._state.delete_span()), others)
        if stretch.keep_all:
            return None, stretch.hi
        if not stretch.keep:
            return Statement(schema.DELETE_RANGE, (stretch.lo, stretch.hi)), stretch.hi
        keep = json.dumps(sorted(stretch.keep))
        return Statement(schema.DELETE_RANGE_EXCEPT, (stretch.lo, stretch.hi, keep)), stretch.hi

    def count_inserted(self, per_series: Mapping[int, int]) -> None:
        for up in self.uplinks.values():
            up.selection.refresh(self._catalog)
            up.backlog += sum(n for sid, n in per_series.items() if sid in up.selection.ids)

    def count_evicted(self, rows: Sequence[tuple[int, int]]) -> None:
        """Take evicted ``(id, series)`` rows, in id order, off the backlogs."""
        ids = [r[0] for r in rows]
        for up in self.uplinks.values():
            up.selection.refresh(self._catalog)
            ahead = Counter(sid for _, sid in rows[bisect.bisect_right(ids, up.cursor):])
            up.backlog -= sum(n for sid, n in ahead.items() if sid in up.selection.ids)

    async def stats(self, db: Database) -> dict[str, dict[str, Any]]:
        """Per uplink: cursor, backlog rows, age of the oldest row not acknowledged (caller holds
        the lock)."""
        out: dict[str, dict[str, Any]] = {}
        for name, up in sorted(self.uplinks.items()):
            if up.selection.covers(self._catalog):
                oldest = await db.scalar(schema.OLDEST_TIME_AFTER, (up.cursor,))
            else:
                oldest = await db.scalar(schema.OLDEST_TIME_SELECTED,
                                         (up.cursor, up.selection.as_json()))
            age = None if oldest is None else max(0.0, round(time.time() - oldest / 1e9, 3))
            out[name] = {"cursor": up.cursor, "backlog_rows": up.backlog, "oldest_age_s": age}
        return out

    def _selected(self, up: UplinkState) -> frozenset[int] | None:
        """The series ``up`` selects, or None when it selects every known series."""
        return None if up.selection.covers(self._catalog) else frozenset(up.selection.ids)

    async def _count_selected(self, db: Database, up: UplinkState, lo: int, hi: int) -> int:
        if up.selection.covers(self._catalog):
            return int(await db.scalar(schema.COUNT_RANGE, (lo, hi)))
        return int(await db.scalar(schema.COUNT_RANGE_SELECTED, (lo, hi, up.selection.as_json())))

    def _records(self, rows: list[tuple[Any, ...]]) -> list[tuple[int, Reading]]:
        catalog = self._catalog
        records = []
        for rid, sid, t, v in rows:
            s = catalog[sid]
            records.append((rid, Reading(s.device, s.point, decode_value(s.kind, v), s.unit, t)))
        return records
