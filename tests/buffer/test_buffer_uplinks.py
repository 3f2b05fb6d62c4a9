"""Per-uplink selection, cursors and deletion against a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.errors import StorageError
from tests.buffer.buffer_support import buffer_config, read_all, readings, running

TWO = {"all": ["*"], "boiler": ["boiler/*"]}


async def _fill(buf: Buffer) -> None:
    # Interleaved: boiler, air, boiler, air, ... (ids 1..20)
    for i in range(10):
        buf.submit(readings("boiler", 1, start=i, point="t"))
        buf.submit(readings("air", 1, start=i, point="h"))
    await buf.flush()


async def test_each_uplink_sees_only_its_rows(make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks=TWO) as buf:
        await _fill(buf)
        everything = await read_all(buf, "all")
        boiler = await read_all(buf, "boiler")
    assert [rid for rid, _ in everything] == list(range(1, 21))
    assert [rid for rid, _ in boiler] == list(range(1, 21, 2))
    assert {r.device for _, r in boiler} == {"boiler"}


async def test_filtered_read_reports_skipped_rows_in_upto(
        make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks=TWO) as buf:
        await _fill(buf)
        batch = await buf.read("boiler", 0, 3)
        assert [rid for rid, _ in batch.records] == [1, 3, 5]
        assert batch.upto == 5
        rest = await buf.read("boiler", 5, 100)
        assert [rid for rid, _ in rest.records] == [7, 9, 11, 13, 15, 17, 19]
        assert rest.upto == 20  # reached the end: the highest committed id
        tail = await buf.read("boiler", 19, 100)
        assert tail.records == [] and tail.upto == 20  # only skipped rows: still advances
        assert (await buf.read("boiler", 20, 100)).upto == 20


async def test_rows_go_only_when_every_selecting_uplink_acked(
        make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks=TWO) as buf:
        await _fill(buf)
        await buf.ack("boiler", 20)
        stats = await buf.stats()
        # Nothing goes yet: "all" selects every row and has acked none.
        assert stats["rows"] == 20
        assert stats["uplinks"]["boiler"] == {"cursor": 20, "backlog_rows": 0,
                                              "backlog_bytes": 0, "oldest_age_s": None}
        assert stats["uplinks"]["all"]["backlog_rows"] == 20
        # The in-memory summary (for systemd's STATUS=) agrees with the database's figures.
        assert buf.summary() == (20, stats["drops_total"])
        # Every row is in "all"'s backlog: all the pages in use are its share.
        assert stats["uplinks"]["all"]["backlog_bytes"] == stats["used_bytes"] > 0

        await buf.ack("all", 10)
        # Rows 1..10 are acked by both (boiler rows) or not selected by boiler (air rows).
        assert [rid for rid, _ in await read_all(buf, "all")] == list(range(11, 21))
        assert (await buf.stats())["rows"] == 10

        await buf.ack("all", 20)
        assert (await buf.stats())["rows"] == 0


async def test_rows_wait_for_the_uplink_that_selects_them(
        make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks=TWO) as buf:
        await _fill(buf)
        await buf.ack("all", 20)
        # Air rows are selected by "all" only: gone. Boiler rows wait for "boiler".
        left = await read_all(buf, "boiler")
        assert [rid for rid, _ in left] == list(range(1, 21, 2))
        assert (await buf.stats())["rows"] == 10
        await buf.ack("boiler", 9)
        assert (await buf.stats())["rows"] == 5
        await buf.ack("boiler", 20)
        assert (await buf.stats())["rows"] == 0


async def test_cursor_is_monotonic_and_persisted(make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks=TWO) as buf:
        await _fill(buf)
        await buf.ack("boiler", 7)
        await buf.ack("boiler", 3)  # never moves back
        assert buf.cursor("boiler") == 7
        await buf.ack("all", 10_000)  # never beyond what is committed
        assert buf.cursor("all") == 20
    async with Buffer(make_config(), uplinks=TWO) as buf:
        assert buf.cursor("boiler") == 7
        assert buf.cursor("all") == 20
        assert buf.last_id() == 20
        stats = await buf.stats()
        assert stats["uplinks"]["boiler"]["backlog_rows"] == 6
        assert stats["uplinks"]["all"]["backlog_rows"] == 0
        buf.submit(readings("air", 1, point="h", start=99))
        await buf.flush()
        assert buf.last_id() == 21  # ids are never reused


async def test_ids_continue_after_every_row_was_deleted(
        make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks={"all": ["*"]}) as buf:
        buf.submit(readings("dev", 5))
        await buf.flush()
        await buf.ack("all", 5)
        assert (await buf.stats())["rows"] == 0
    async with Buffer(make_config(), uplinks={"all": ["*"]}) as buf:
        assert buf.last_id() == 5
        buf.submit(readings("dev", 1))
        await buf.flush()
        assert [rid for rid, _ in await read_all(buf, "all", buf.cursor("all"))] == [6]


async def test_uplink_changes_across_restart(make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks=TWO) as buf:
        await _fill(buf)
        await buf.ack("all", 20)
    # "boiler" removed: its cursor goes, and so do the rows kept only for it.
    # "new" starts at the oldest row.
    async with Buffer(make_config(), uplinks={"all": ["*"], "new": ["air/*"]}) as buf:
        async with running(buf):
            await buf.flush()
            assert buf.cursor("new") == 0
            assert await read_all(buf, "new") == []  # air rows were already deleted
            await buf.ack("all", 20)  # no-op; the commit loop purges in the background
        stats = await buf.stats()
        assert stats["rows"] == 0
        assert set(stats["uplinks"]) == {"all", "new"}
        with pytest.raises(StorageError) as err:
            buf.cursor("boiler")
        assert err.value.reason == "unknown_uplink"


async def test_reconfigure_live(make_config: Callable[..., BufferConfig],
                                caplog: pytest.LogCaptureFixture) -> None:
    async with Buffer(make_config(), uplinks={"all": ["*"]}) as buf:
        async with running(buf):
            await _fill(buf)
            await buf.ack("all", 10)
            moved = buffer_config(make_config().path.with_name("elsewhere.sqlite"))
            with caplog.at_level(logging.WARNING):
                buf.reconfigure(moved, uplinks={"all": ["*"], "late": ["boiler/*"]})
            assert "needs a restart" in caplog.text
            assert buf.cursor("late") == 0
            late = await read_all(buf, "late")
            assert [rid for rid, _ in late] == list(range(11, 21, 2))  # from the oldest row
            stats = await buf.stats()
            assert stats["path"] == str(make_config().path)
            assert stats["uplinks"]["late"]["backlog_rows"] == 5
