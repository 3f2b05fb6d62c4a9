"""Aligned poll cycles (gatewayd.polling), shared by the drivers that poll."""

from __future__ import annotations

from gatewayd.polling import CycleClock


def test_poll_clock_aligns_to_wall_clock_and_skips_whole_missed_slots() -> None:
    clock = CycleClock.aligned(10.0, now=100.0, wall=1_000_003.0)
    assert clock.due() == 107.0
    assert clock.start(107.5) == 0
    assert clock.advance() == 117.0
    assert clock.start(139.0) == 2  # the 117 and 127 slots passed during a long request
    assert clock.due() == 137.0 and clock.skipped == 2
    assert clock.advance() == 147.0
