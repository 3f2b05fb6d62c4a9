"""Pure parts of the buffer: value codec, size budget, pending queue, series, purge plan."""

from __future__ import annotations

import asyncio
import math
from enum import IntEnum

import pytest

from gatewayd.buffer.codec import (
    KIND_BIGINT,
    KIND_BOOL,
    KIND_PLAIN,
    decode_value,
    encode_value,
    text_storable,
    time_ok,
)
from gatewayd.buffer.cursors import PurgeRange, purge_range
from gatewayd.buffer.pending import AppendTicket, PendingQueue
from gatewayd.buffer.series import Selection, SeriesCatalog
from gatewayd.buffer.sizing import MIN_MAX_SIZE, size_budget, wal_frame_bytes
from gatewayd.errors import StorageError
from gatewayd.reading import Reading


class Mode(IntEnum):
    AUTO = 3


@pytest.mark.parametrize(("value", "kind", "stored"), [
    (1.5, KIND_PLAIN, 1.5),
    (7, KIND_PLAIN, 7),
    (True, KIND_BOOL, 1),
    (False, KIND_BOOL, 0),
    (2**63 - 1, KIND_PLAIN, 2**63 - 1),
    (2**63, KIND_BIGINT, "9223372036854775808"),
    (-(2**64), KIND_BIGINT, "-18446744073709551616"),
    ("text", KIND_PLAIN, "text"),
    (b"\x00\xff", KIND_PLAIN, b"\x00\xff"),
    (bytearray(b"ab"), KIND_PLAIN, b"ab"),
    (Mode.AUTO, KIND_PLAIN, 3),
])
def test_encode_value(value: object, kind: int, stored: object) -> None:
    encoded = encode_value(value)
    assert encoded is not None
    assert encoded[:2] == (kind, stored)
    assert type(encoded[1]) is type(stored)


def test_decode_value_restores_types() -> None:
    assert decode_value(KIND_BOOL, 1) is True
    assert decode_value(KIND_BOOL, 0) is False
    assert decode_value(KIND_BIGINT, "9223372036854775808") == 2**63
    assert math.isnan(decode_value(KIND_PLAIN, None))  # type: ignore[arg-type]
    assert decode_value(KIND_PLAIN, b"x") == b"x"


def test_unstorable_values_and_times() -> None:
    assert encode_value(None) is None
    assert encode_value([1]) is None
    assert time_ok(0) and time_ok(2**63 - 1)
    assert not time_ok(1.5) and not time_ok(2**63) and not time_ok(True)
    assert text_storable("ok") and text_storable(b"\xff")
    assert not text_storable("\ud800")


@pytest.mark.parametrize("max_size", [MIN_MAX_SIZE, 1024**2, 3 * 1024**2, 64 * 1024**2,
                                      256 * 1024**2, 8 * 1024**3])
def test_size_budget_fits_max_size(max_size: int) -> None:
    b = size_budget(max_size)
    wal_frames = (b.wal_bytes - 32) // wal_frame_bytes(b.page_size)
    # The largest WAL: autocheckpoint - 1 frames of earlier commits plus one transaction.
    assert b.autocheckpoint_frames - 1 + b.txn_pages <= wal_frames
    assert b.max_page_count * b.page_size + b.wal_bytes <= max_size
    assert 0 < b.low_pages < b.high_pages < b.max_page_count
    assert b.txn_payload_bytes > 0


def test_size_budget_refuses_tiny_sizes() -> None:
    with pytest.raises(ValueError, match="minimum"):
        size_budget(MIN_MAX_SIZE - 1)


def _r(device: str, i: int) -> Reading:
    return Reading(device, "p", float(i), None, i)


async def test_pending_overflow_drops_oldest_and_fails_append() -> None:
    q = PendingQueue(limit=5)
    ticket = AppendTicket(asyncio.get_running_loop().create_future())
    assert q.put([_r("a", i) for i in range(3)], ticket) == []
    dropped = q.put([_r("b", i) for i in range(4)])
    assert [(r.device, r.value) for r in dropped] == [("a", 0.0), ("a", 1.0)]
    assert len(q) == 5
    with pytest.raises(StorageError) as err:
        await ticket.future
    assert err.value.reason == "overflow"
    chunks = q.take()
    assert [(r.device, r.value) for c in chunks for r in c.readings] == [
        ("a", 2.0), ("b", 0.0), ("b", 1.0), ("b", 2.0), ("b", 3.0)]
    assert len(q) == 0


async def test_pending_requeue_goes_to_the_front() -> None:
    q = PendingQueue(limit=10)
    q.put([_r("a", 0), _r("a", 1)])
    taken = q.take()
    q.put([_r("b", 0)])
    assert q.requeue(taken) == []
    assert [(r.device, r.value) for c in q.take() for r in c.readings] == [
        ("a", 0.0), ("a", 1.0), ("b", 0.0)]


async def test_pending_empty_append_is_done_at_once() -> None:
    q = PendingQueue(limit=10)
    ticket = AppendTicket(asyncio.get_running_loop().create_future())
    q.put([], ticket)
    assert ticket.future.done() and ticket.future.exception() is None


def test_catalog_interns_and_groups_by_priority() -> None:
    cat = SeriesCatalog({"boiler": 5})
    a = cat.intern(("boiler", "t", "Cel", 0))
    b = cat.intern(("air", "h", None, 0))
    assert cat.intern(("boiler", "t", "Cel", 0)) == a
    assert cat.intern(("boiler", "t", "Cel", 1)) not in (a, b)  # another kind, another series
    assert [s.id for s in cat.unpersisted()] == [1, 2, 3]
    cat.mark_persisted(cat.unpersisted()[:2])
    assert [s.id for s in cat.unpersisted()] == [3]
    assert cat.levels() == [(0, frozenset({b})), (5, frozenset({a, 3}))]
    cat.set_priorities({})
    assert cat.levels() == [(0, frozenset({1, 2, 3}))]


def test_selection_follows_the_catalog() -> None:
    cat = SeriesCatalog()
    sel = Selection(["boiler/*", "air/hum?"])
    cat.intern(("boiler", "t", None, 0))
    cat.intern(("air", "humi", None, 0))
    cat.intern(("air", "temp", None, 0))
    assert not sel.covers(cat)
    assert sel.ids == {1, 2}
    assert sel.as_json() == "[1, 2]"
    everything = Selection(["*"])
    assert everything.covers(cat)


def test_purge_range_without_other_uplinks_deletes_everything() -> None:
    assert purge_range(10, 20, []) == PurgeRange(10, 20, frozenset(), False)


def test_purge_range_keeps_what_a_lagging_uplink_selects() -> None:
    # The other uplink is at 5, behind every row of (10, 20]: its series stay.
    assert purge_range(10, 20, [(5, frozenset({1, 2}))]) == PurgeRange(10, 20, frozenset({1, 2}),
                                                                      False)
    # An uplink that selects every series keeps everything behind it.
    assert purge_range(10, 20, [(5, None)]).keep_all


def test_purge_range_stops_at_another_cursor() -> None:
    others = [(15, frozenset({1})), (30, frozenset({2}))]
    first = purge_range(10, 20, others)
    assert first == PurgeRange(10, 15, frozenset(), False)  # both others are past (10, 15]
    second = purge_range(15, 20, others)
    assert second == PurgeRange(15, 20, frozenset({1}), False)  # the one at 15 is behind
