"""Committing pending readings: encode, insert in bounded transactions, ride out faults.

Pending chunks are encoded into rows ``(id, series, t, v)`` and inserted with
one ``executemany`` per transaction; a transaction carries at most
``txn_payload_bytes`` of estimated row data, so one commit cycle may take
several. Before inserting, rows are evicted when the batch would take the
file over its high watermark. When a transaction fails:

- ``disk_full`` (SQLITE_FULL): evict room for the batch, checkpoint, retry once;
- ``io_error``: retry once;
- ``invalid`` (a text value SQLite cannot take): drop those readings, retry;

and when the retry fails too, the batch is dropped and counted under that
reason. Faults raise the alarm; the next clean commit clears it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from gatewayd.buffer import schema
from gatewayd.buffer.codec import (
    INT64_MAX,
    INT64_MIN,
    ROW_BYTES,
    encode_value,
    text_storable,
    time_ok,
)
from gatewayd.buffer.counters import (
    BUFFER_FULL,
    DISK_FULL,
    INVALID,
    IO_ERROR,
    DropCounts,
    DropReport,
    FaultLog,
)
from gatewayd.buffer.cursors import UplinkCursors
from gatewayd.buffer.database import Database, Probe, Statement
from gatewayd.buffer.eviction import Evictor, measure
from gatewayd.buffer.pending import AppendTicket, PendingChunk
from gatewayd.buffer.series import SeriesCatalog
from gatewayd.buffer.sizing import TXN_OVERHEAD_PAGES
from gatewayd.buffer.state import BufferState
from gatewayd.errors import StorageError
from gatewayd.reading import Reading

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (chunk index, reading index)
Row = tuple[int, int, int, Any]  # (id, series, t, v)
_series_of = itemgetter(1)


@dataclass
class InsertBatch:
    """The rows of one insert transaction and the appends it settles."""

    end: Position = (0, 0)  # where the next batch starts
    rows: list[Row] = field(default_factory=list)
    bytes: int = 0
    touched: list[AppendTicket] = field(default_factory=list)  # fail if dropped
    finished: list[AppendTicket] = field(default_factory=list)  # done if committed
    rejected: set[int] = field(default_factory=set)  # id() of readings dropped while encoding
    committed: bool = False


class ReadingWriter:
    """Turns pending chunks into committed rows (see the module doc)."""

    def __init__(self, catalog: SeriesCatalog, uplinks: UplinkCursors, evictor: Evictor,
                 state: BufferState, drops: DropCounts, faults: FaultLog,
                 committed: Callable[[], None]) -> None:
        self._catalog = catalog
        self._uplinks = uplinks
        self._evictor = evictor
        self._state = state
        self._drops = drops
        self._faults = faults
        self._committed = committed
        self._evictions = DropReport(log, "buffer: full, dropped the %d oldest readings (%s)")
        self._failed_batches = DropReport(log, "buffer: dropped %d readings that could not be "
                                               "committed (%s)")
        self.next_id = state.last_id + 1

    async def commit(self, db: Database, chunks: list[PendingChunk],
                     requeue: Callable[[list[PendingChunk]], None]) -> None:
        """Commit ``chunks`` in order (caller holds the lock). Faults are counted, not raised.

        On cancellation, what was not yet committed or dropped goes to ``requeue``.
        """
        self.next_id = max(self.next_id, self._state.last_id + 1)
        settled: Position = (0, 0)
        batch: InsertBatch | None = None
        try:
            for batch in self._batches(chunks):
                await self._insert(db, batch)
                settled = batch.end
        except BaseException:
            if batch is not None and batch.committed:  # COMMIT went through all the same
                settled = batch.end
            skip = batch.rejected if batch is not None else set()  # counted already
            ci, i = settled
            rest = [PendingChunk(c.readings[i:] if n == ci else c.readings, c.ticket)
                    for n, c in enumerate(chunks) if n >= ci]
            requeue([PendingChunk([r for r in c.readings if id(r) not in skip], c.ticket)
                     for c in rest])
            raise

    def _batches(self, chunks: Sequence[PendingChunk]) -> Iterator[InsertBatch]:
        """Yield insert batches over ``chunks``, each within the transaction budget."""
        budget = self._state.budget.txn_payload_bytes
        batch = InsertBatch()
        for ci, chunk in enumerate(chunks):
            i = 0
            while True:
                i = self._fill(batch, chunk, i, budget)
                if chunk.ticket is not None:
                    batch.touched.append(chunk.ticket)
                if i < len(chunk.readings):
                    batch.end = (ci, i)
                    yield batch
                    batch = InsertBatch()
                    continue
                if chunk.ticket is not None:
                    batch.finished.append(chunk.ticket)
                break
            if batch.bytes >= budget:
                batch.end = (ci + 1, 0)
                yield batch
                batch = InsertBatch()
        batch.end = (len(chunks), 0)
        yield batch

    def _fill(self, batch: InsertBatch, chunk: PendingChunk, start: int, budget: int) -> int:
        """Encode readings of ``chunk`` from ``start`` until the batch is full; returns where
        it stopped."""
        ids = self._catalog.ids
        rows = batch.rows
        readings = chunk.readings
        size = batch.bytes
        next_id = self.next_id
        i = start
        while i < len(readings) and size < budget:
            r = readings[i]
            i += 1
            v: Any = r.value
            t = r.time
            if type(v) is float and type(t) is int and INT64_MIN <= t <= INT64_MAX:
                kind, nbytes = 0, ROW_BYTES
            else:
                encoded = encode_value(v)
                if encoded is None or not time_ok(t) or encoded[2] > budget:
                    self._reject(r, chunk, INVALID if encoded is None or not time_ok(t)
                                 else BUFFER_FULL)
                    batch.rejected.add(id(r))
                    continue
                kind, v, nbytes = encoded
            key = (r.device, r.point, r.unit, kind)
            sid = ids.get(key)
            if sid is None:
                sid = self._catalog.intern(key)
                nbytes += ROW_BYTES + len(r.device) + len(r.point)
            rows.append((next_id, sid, t, v))
            next_id += 1
            size += nbytes
        self.next_id = next_id
        batch.bytes = size
        return i

    def _reject(self, reading: Reading, chunk: PendingChunk, reason: str) -> None:
        self._drops.add(reason, {reading.device: 1})
        if chunk.ticket is not None:
            chunk.ticket.fail(reason)
        log.warning("buffer: dropped a reading of %s/%s (%s): %s value %r at time %r",
                    reading.device, reading.point, reason, type(reading.value).__name__,
                    reading.value if reason == INVALID else "...", reading.time)

    async def _insert(self, db: Database, batch: InsertBatch) -> None:
        if not batch.rows:
            for ticket in batch.finished:
                ticket.done()
            return
        budget = self._state.budget
        est_pages = math.ceil(batch.bytes / budget.page_size) + TXN_OVERHEAD_PAGES
        err = await self._attempt(db, batch, est_pages)
        if err is None:
            if self._faults.alarm is not None:
                log.info("buffer: commits succeed again (after %s)", self._faults.alarm)
                self._faults.clear_alarm()
            return
        if await self._recover(db, batch, err, est_pages):
            err = await self._attempt(db, batch, est_pages)
        if err is not None and batch.rows:
            self._drop(batch, err.reason)

    async def _attempt(self, db: Database, batch: InsertBatch,
                       est_pages: int) -> StorageError | None:
        """Insert ``batch`` (evicting first when it would not fit); the error, if any."""
        budget = self._state.budget
        try:
            if self._state.used_pages + est_pages > budget.high_pages:
                await self._evict(db, budget.low_pages, BUFFER_FULL)
            await self._write(db, batch)
        except StorageError as err:
            self._fault(err)
            return err
        try:
            await measure(db, self._state)
        except StorageError as err:  # committed all the same
            self._fault(err)
        return None

    async def _write(self, db: Database, batch: InsertBatch) -> None:
        new_series = self._catalog.unpersisted()
        statements = [Statement(schema.INSERT_READING, batch.rows, many=True)]
        if new_series:
            rows = [s.row() for s in new_series]
            statements.insert(0, Statement(schema.INSERT_SERIES, rows, many=True))
        last = batch.rows[-1][0]

        def committed(counts: list[int] | None) -> None:
            batch.committed = True
            self._catalog.mark_persisted(new_series)
            self._state.last_id = max(self._state.last_id, last)
            self._state.rows += len(batch.rows)
            self._state.committed_total += len(batch.rows)
            self._state.commits += 1
            self._uplinks.count_inserted(Counter(map(_series_of, batch.rows)))
            for ticket in batch.finished:
                ticket.done()
            self._committed()

        await db.write(statements, on_commit=committed, probe=Probe(schema.READING_EXISTS, (last,)))

    async def _recover(self, db: Database, batch: InsertBatch, err: StorageError,
                       est_pages: int) -> bool:
        """Make the failed batch worth retrying; False when it is not."""
        if err.reason == INVALID:
            kept = [row for row in batch.rows if text_storable(row[3])]
            bad = Counter(self._catalog[row[1]].device for row in batch.rows
                          if not text_storable(row[3]))
            self._drops.add(INVALID, bad)
            for ticket in batch.touched:
                ticket.fail(INVALID)
            batch.rows = kept
            return bool(kept)  # a batch left empty was all invalid: nothing more to drop
        if err.reason != DISK_FULL:
            return True
        try:
            await measure(db, self._state)
            at_cap = self._state.page_count + est_pages >= self._state.budget.max_page_count
            # Room for this batch and some to spare, so the next ones fit too.
            room = max(est_pages, self._state.used_pages // 10)
            target = min(self._state.budget.low_pages, self._state.used_pages - room)
            evicted = await self._evict(db, target, BUFFER_FULL if at_cap else DISK_FULL)
            await db.checkpoint()
        except StorageError as again:
            self._fault(again)
            return False
        return evicted > 0

    async def _evict(self, db: Database, target_pages: int, reason: str) -> int:
        dropped = await self._evictor.evict_to(db, target_pages, reason)
        if dropped:
            self._evictions.add(dropped, reason)
        return dropped

    def _fault(self, err: StorageError) -> None:
        """Count the fault; log it when it raises the alarm (not again while it stays)."""
        if self._faults.alarm != err.reason:
            level = logging.WARNING if err.reason in (DISK_FULL, INVALID) else logging.ERROR
            log.log(level, "buffer: commit failed (%s): %s", err.reason, err)
        self._faults.record(err.reason, str(err))

    def _drop(self, batch: InsertBatch, reason: str) -> None:
        reason = reason if reason in (DISK_FULL, INVALID) else IO_ERROR
        per_device = Counter(self._catalog[sid].device for sid in map(_series_of, batch.rows))
        self._drops.add(reason, per_device)
        for ticket in batch.touched:
            ticket.fail(reason)
        self._failed_batches.add(len(batch.rows), reason)
