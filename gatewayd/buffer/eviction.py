"""Keeping the buffer under max_size: drop the oldest rows, lowest priority first.

Priorities are strict: rows of the lowest priority in use go first, oldest
first; a higher priority loses rows only when no lower one has any left.
For each priority the evictor remembers up to which row id it knows that
priority has no rows left, so a scan never re-reads rows it has passed
(positions live in memory and restart from zero with the process or a
priority change). Every delete is one bounded transaction (sizing.py).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

from gatewayd.buffer import schema
from gatewayd.buffer.counters import DropCounts
from gatewayd.buffer.cursors import UplinkCursors
from gatewayd.buffer.database import Database, Probe, Statement
from gatewayd.buffer.series import SeriesCatalog
from gatewayd.buffer.state import BufferState

RowRef = tuple[int, int]  # (row id, series id)


def within_pages(rows: Sequence[RowRef], rows_per_page: float, max_pages: int) -> list[RowRef]:
    """The longest prefix of ``rows`` (in id order) whose deletion touches at most
    ``max_pages`` pages: no more pages than rows, nor than the id span covers."""
    first = rows[0][0]
    for i, (rid, _) in enumerate(rows):
        if min(i + 1, (rid - first) / rows_per_page + 1) > max_pages:
            return list(rows[:i])
    return list(rows)


async def measure(db: Database, state: BufferState) -> None:
    """Refresh the page counts in ``state`` (caller holds the lock)."""
    state.page_count, state.freelist = await db.page_usage()


class Evictor:
    def __init__(self, catalog: SeriesCatalog, uplinks: UplinkCursors, state: BufferState,
                 drops: DropCounts) -> None:
        self._catalog = catalog
        self._uplinks = uplinks
        self._state = state
        self._drops = drops
        self._scanned: dict[int, int] = {}  # priority -> no rows of it up to this id

    def reset(self) -> None:
        """Forget the scan positions (priorities changed)."""
        self._scanned.clear()

    async def evict_to(self, db: Database, target_pages: int, reason: str) -> int:
        """Drop rows until at most ``target_pages`` pages are in use; returns rows dropped.

        The caller holds the lock. Raises StorageError when a delete fails.
        """
        dropped = 0
        await measure(db, self._state)
        while self._state.used_pages > target_pages:
            n = await self._evict_step(db, self._state.used_pages - target_pages, reason)
            if n == 0:
                break
            dropped += n
            await measure(db, self._state)
        return dropped

    async def shrink(self, db: Database) -> None:
        """Bring the file under a lowered page cap: evict, then give free pages back."""
        budget = self._state.budget
        await measure(db, self._state)
        if self._state.page_count <= budget.max_page_count:
            return
        await self.evict_to(db, budget.low_pages, "buffer_full")
        while self._state.page_count > budget.max_page_count and self._state.freelist > 0:
            await db.vacuum_pages(min(self._state.freelist, budget.txn_row_pages))
            await measure(db, self._state)

    async def _evict_step(self, db: Database, pages: int, reason: str) -> int:
        rows_per_page = self._state.rows_per_page()
        max_pages = self._state.budget.txn_row_pages
        want = max(1, min(math.ceil(pages * rows_per_page * 1.1),
                          math.floor(max_pages * rows_per_page)))
        levels = self._catalog.levels()
        priority: int | None = None
        if len(levels) <= 1:
            rows = [(int(r[0]), int(r[1])) for r in await db.fetchall(schema.OLDEST_ROWS, (want,))]
            if not rows:
                return 0
            statement = Statement(schema.DELETE_RANGE, (rows[0][0] - 1, rows[-1][0]))
        else:
            priority, rows = await self._lowest_rows(db, levels, want)
            if not rows:
                return 0
            rows = within_pages(rows, rows_per_page, max_pages)
            statement = Statement(schema.DELETE_ID, [(rid,) for rid, _ in rows], many=True)

        def dropped(counts: list[int] | None) -> None:
            self._state.rows -= len(rows)
            self._uplinks.count_evicted(rows)
            self._drops.add(reason, Counter(self._catalog[sid].device for _, sid in rows))
            if priority is not None:
                self._scanned[priority] = rows[-1][0]

        await db.write([statement], on_commit=dropped,
                       probe=Probe(schema.READING_GONE, (rows[-1][0],)))
        return len(rows)

    async def _lowest_rows(self, db: Database, levels: Sequence[tuple[int, frozenset[int]]],
                           want: int) -> tuple[int | None, list[RowRef]]:
        """The oldest ``want`` rows of the lowest priority that has rows left."""
        for priority, ids in levels:
            after = self._scanned.get(priority, 0)
            found = await db.fetchall(schema.OLDEST_ROWS_SELECTED,
                                      (after, json.dumps(sorted(ids)), want))
            if found:
                return priority, [(int(r[0]), int(r[1])) for r in found]
            self._scanned[priority] = self._state.last_id
        return None, []
