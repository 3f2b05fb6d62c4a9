"""Pure scheduling rules fed with times: aligned cycles, quarantine, reconnect backoff."""

from __future__ import annotations

import pytest
from gatewayd.drivers.modbus.schedule import Admission, Backoff, CycleClock, UnitQuarantine


def test_cycles_align_to_wall_clock_multiples() -> None:
    clock = CycleClock.aligned(5.0, now=100.0, wall=1_000_002.0)
    assert clock.due() == 103.0  # wall 1_000_005 is the next multiple of 5 s
    assert clock.advance() == 108.0


def test_a_late_cycle_within_its_slot_runs_and_later_ones_are_skipped() -> None:
    clock = CycleClock(1.0, origin=0.0)
    assert clock.start(0.0) == 0
    assert clock.advance() == 1.0
    assert clock.start(1.9) == 0  # late, but still inside [1, 2): runs, no backlog
    assert clock.advance() == 2.0
    assert clock.start(5.2) == 3  # slots 2, 3 and 4 passed: skipped and counted
    assert clock.due() == 5.0
    assert clock.advance() == 6.0
    assert clock.skipped == 3


def test_no_drift_over_many_cycles() -> None:
    clock = CycleClock(0.1, origin=0.0)
    for _ in range(10_000):
        clock.start(clock.due() + 0.05)  # always 50 ms late
        clock.advance()
    assert clock.due() == pytest.approx(1000.0)
    assert clock.skipped == 0


def test_quarantine_after_consecutive_timeouts_and_growing_probes() -> None:
    q = UnitQuarantine(after=3, interval=1.0, interval_max=4.0)
    assert [q.timed_out(t) for t in (0.0, 1.0)] == [False, False]
    assert q.admit(1.5) is Admission.POLL
    assert q.timed_out(2.0) is True  # third in a row
    assert q.quarantined and q.quarantines == 1
    assert q.admit(2.5) is Admission.SKIP
    assert q.admit(3.0) is Admission.PROBE  # 1 s later
    assert q.admit(3.0) is Admission.SKIP  # the probe is claimed
    q.timed_out(3.3)
    assert q.next_probe == pytest.approx(5.3)  # 2 s
    assert q.admit(5.3) is Admission.PROBE
    q.timed_out(5.6)
    assert q.next_probe == pytest.approx(9.6)  # 4 s
    assert q.admit(9.6) is Admission.PROBE
    q.timed_out(9.9)
    assert q.next_probe == pytest.approx(13.9)  # capped at 4 s
    assert q.admit(13.9) is Admission.PROBE
    assert q.answered() is True
    assert (q.quarantined, q.consecutive_timeouts) == (False, 0)
    assert q.admit(14.0) is Admission.POLL


def test_an_answer_resets_the_count_of_timeouts() -> None:
    q = UnitQuarantine(after=2, interval=1.0, interval_max=8.0)
    q.timed_out(0.0)
    assert q.answered() is False
    assert q.timed_out(1.0) is False
    assert q.quarantined is False


def test_an_abandoned_probe_is_retried_at_the_same_interval() -> None:
    q = UnitQuarantine(after=1, interval=2.0, interval_max=8.0)
    q.timed_out(0.0)
    assert q.admit(2.0) is Admission.PROBE
    q.abandoned(2.5)
    assert (q.interval, q.next_probe) == (2.0, 4.5)


def test_backoff_first_attempt_at_once_then_doubling_to_the_cap() -> None:
    b = Backoff(initial=0.5, maximum=3.0)
    assert b.ready(0.0)
    assert [b.failed(t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert not b.ready(6.9) and b.ready(7.0)
    b.succeeded()
    assert b.ready(0.0) and b.failed(10.0) == 0.5
    assert b.failures == 6
