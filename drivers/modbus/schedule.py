"""Pure scheduling state: aligned poll cycles, unit quarantine, reconnect backoff.

Nothing here reads a clock: every method takes ``now`` (monotonic seconds),
so the rules are tested by feeding times.
"""

from __future__ import annotations

import enum

from gatewayd.polling import CycleClock

__all__ = ["Admission", "Backoff", "CycleClock", "UnitQuarantine"]


class Admission(enum.Enum):
    POLL = "poll"  # the unit is healthy: run its requests
    PROBE = "probe"  # quarantined and a probe is due: send one request
    SKIP = "skip"  # quarantined, no probe due


class UnitQuarantine:
    """Tracks one unit's consecutive timeouts.

    After ``after`` consecutive timeouts the unit is quarantined: its requests
    are skipped except one probe, first ``interval`` seconds later, then at
    intervals doubling up to ``interval_max``. Any answer (a response or a
    Modbus exception) ends the quarantine.
    """

    def __init__(self, *, after: int, interval: float, interval_max: float) -> None:
        self.after = after
        self.first_interval = interval
        self.interval_max = interval_max
        self.consecutive_timeouts = 0
        self.quarantined = False
        self.interval = interval
        self.next_probe = 0.0
        self.probing = False
        self.quarantines = 0

    def admit(self, now: float) -> Admission:
        """What the next cycle may do with this unit. A PROBE claims the probe:
        other callers are told SKIP until the probe's outcome is reported."""
        if not self.quarantined:
            return Admission.POLL
        if self.probing or now < self.next_probe:
            return Admission.SKIP
        self.probing = True
        return Admission.PROBE

    def answered(self) -> bool:
        """The unit answered; returns True when that ends a quarantine."""
        restored = self.quarantined
        self.consecutive_timeouts = 0
        self.quarantined = False
        self.probing = False
        self.interval = self.first_interval
        return restored

    def timed_out(self, now: float) -> bool:
        """The unit did not answer; returns True when that starts a quarantine."""
        self.consecutive_timeouts += 1
        if self.quarantined:
            self.interval = min(self.interval * 2.0, self.interval_max)
            self.next_probe = now + self.interval
            self.probing = False
            return False
        if self.consecutive_timeouts < self.after:
            return False
        self.quarantined = True
        self.quarantines += 1
        self.interval = self.first_interval
        self.next_probe = now + self.interval
        return True

    def abandoned(self, now: float) -> None:
        """A claimed probe could not be sent (the bus is down): probe again later,
        at the same interval."""
        if self.probing:
            self.probing = False
            self.next_probe = now + self.interval


class Backoff:
    """Reconnect delays: the first attempt at once, then ``initial`` seconds after
    a failure, doubling up to ``maximum``; a success resets it."""

    def __init__(self, *, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = 0.0
        self.next_attempt = 0.0
        self.failures = 0

    def ready(self, now: float) -> bool:
        return now >= self.next_attempt

    def failed(self, now: float) -> float:
        """Record a failed attempt; returns the delay until the next one."""
        self.failures += 1
        self.delay = self.initial if self.delay == 0.0 else min(self.delay * 2.0, self.maximum)
        self.next_attempt = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0
        self.next_attempt = 0.0
