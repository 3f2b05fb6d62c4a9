"""Pure timing rules of the coap driver: aligned polls, the device's retry backoff,
and when an observation has lapsed.

Nothing here reads a clock: every method takes ``now`` (monotonic seconds), so
the rules are tested by feeding times.
"""

from __future__ import annotations

import enum

DEFAULT_MAX_AGE = 60.0  # RFC 7252 §5.10.5: Max-Age when the option is absent


class Admission(enum.Enum):
    SEND = "send"  # the device answers: send as scheduled
    PROBE = "probe"  # the device is silent and its retry is due: send this one request
    WAIT = "wait"  # the device is silent and no retry is due (or one is in flight)


class Reachability:
    """Whether the device answers, shared by all of its resources.

    After a request gets no answer (timeout, network error) the device is
    *unreachable*: its polls and observation registrations wait, except one
    probe, first ``delay`` seconds later, then at intervals doubling up to
    ``delay_max``. Any answer (even 4.04) makes it reachable again. So a dead
    device costs one request per retry interval, not one per resource and poll.
    """

    def __init__(self, *, delay: float, delay_max: float) -> None:
        self.delay = delay
        self.delay_max = delay_max
        self.failures = 0  # consecutive requests without an answer
        self.retry_at = 0.0
        self.probing = False

    @property
    def reachable(self) -> bool:
        return self.failures == 0

    def admit(self, now: float) -> Admission:
        """What a request about to be sent may do. A PROBE claims the retry: other
        callers get WAIT until :meth:`answered`, :meth:`failed` or :meth:`abandoned`."""
        if self.failures == 0:
            return Admission.SEND
        if self.probing or now < self.retry_at:
            return Admission.WAIT
        self.probing = True
        return Admission.PROBE

    def answered(self) -> bool:
        """The device answered; returns True when that ends a run of failures."""
        was_down = self.failures > 0
        self.failures = 0
        self.probing = False
        return was_down

    def failed(self, now: float) -> float:
        """A request got no answer; returns the wait before the next retry."""
        self.failures += 1
        self.probing = False
        wait = min(self.delay * 2.0 ** min(self.failures - 1, 30), self.delay_max)
        self.retry_at = now + wait
        return wait

    def abandoned(self) -> None:
        """A probe was given up without an outcome (the driver stops)."""
        self.probing = False

    def next_retry(self, now: float) -> float:
        """Seconds until a retry may be sent (0 when it may be sent now)."""
        return 0.0 if self.failures == 0 else max(0.0, self.retry_at - now)


def lapse_deadline(now: float, max_age: float | None, grace: float) -> float:
    """When an observation whose latest notification arrived at ``now`` with
    ``max_age`` has lapsed: that representation is stale (RFC 7641 §3.3.1) and
    ``grace`` has passed without a fresh notification."""
    return now + (DEFAULT_MAX_AGE if max_age is None else max_age) + grace
