"""The supervisor restarts failed components with backoff and isolates them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatewayd.errors import DriverError
from gatewayd.supervisor import Backoff, Supervisor


class Flaky:
    """Fails ``failures`` times, then runs until cancelled."""

    def __init__(self, name: str, failures: int) -> None:
        self.name = name
        self.failures = failures
        self.runs = 0
        self.healthy = asyncio.Event()
        self.ran = asyncio.Condition()

    async def run(self) -> None:
        self.runs += 1
        async with self.ran:
            self.ran.notify_all()
        if self.runs <= self.failures:
            raise DriverError(f"boom {self.runs}", device=self.name)
        self.healthy.set()
        await asyncio.Event().wait()

    def health(self) -> dict[str, Any]:
        return {"runs": self.runs}


class Ticker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ticks = 0
        self.ticked = asyncio.Condition()

    async def run(self) -> None:
        while True:
            self.ticks += 1
            async with self.ticked:
                self.ticked.notify_all()
            await asyncio.sleep(0.001)

    def health(self) -> dict[str, Any]:
        return {"ticks": self.ticks}


async def test_failed_component_is_restarted_with_its_error_recorded() -> None:
    flaky = Flaky("device:flaky", failures=3)
    async with Supervisor(backoff=Backoff(initial=0.01, maximum=0.04)) as sup:
        sup.start(flaky)
        async with asyncio.timeout(5):
            await flaky.healthy.wait()
        report = sup.report()["device:flaky"]
    assert flaky.runs == 4
    assert report["state"] == "running"
    assert report["restarts"] == 3
    assert report["errors"] == 3
    assert report["last_error"] == "boom 3"
    assert report["health"] == {"runs": 4}


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    b = Backoff(initial=1.0, maximum=8.0)
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 8.0), (40, 8.0)]:
        delays = [b.delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > 0  # jittered, not one fixed value


async def test_one_failing_component_does_not_stop_the_others() -> None:
    ticker = Ticker("device:ok")
    failing = Flaky("device:bad", failures=10**9)
    async with Supervisor(backoff=Backoff(initial=0.005, maximum=0.01)) as sup:
        sup.start(ticker)
        sup.start(failing)
        async with asyncio.timeout(5):
            async with failing.ran:
                await failing.ran.wait_for(lambda: failing.runs >= 5)
            async with ticker.ticked:
                await ticker.ticked.wait_for(lambda: ticker.ticks >= 5)
        assert sup.alive()
        assert sup.report()["device:ok"]["state"] == "running"
        assert sup.report()["device:bad"]["errors"] >= 4


async def test_a_component_can_be_stopped_and_replaced_alone() -> None:
    a, b = Ticker("a"), Ticker("b")
    async with Supervisor() as sup:
        sup.start(a)
        sup.start(b)
        await asyncio.sleep(0.02)
        await sup.stop("a")
        assert sup.names() == ["b"]
        frozen = a.ticks
        await asyncio.sleep(0.02)
        assert a.ticks == frozen
        sup.start(Ticker("a"))
        assert sorted(sup.names()) == ["a", "b"]
    assert b.ticks > 0


async def test_unexpected_exception_is_also_contained() -> None:
    second_run = asyncio.Event()

    class Buggy:
        name = "buggy"
        calls = 0

        async def run(self) -> None:
            Buggy.calls += 1
            if Buggy.calls == 1:
                raise KeyError("oops")
            second_run.set()
            await asyncio.Event().wait()

        def health(self) -> dict[str, Any]:
            return {}

    async with Supervisor(backoff=Backoff(initial=0.001, maximum=0.001)) as sup:
        sup.start(Buggy())
        async with asyncio.timeout(5):
            await second_run.wait()
        assert sup.report()["buggy"]["last_error"] == "KeyError: 'oops'"


async def test_duplicate_names_are_refused() -> None:
    async with Supervisor() as sup:
        sup.start(Ticker("x"))
        with pytest.raises(ValueError):
            sup.start(Ticker("x"))
