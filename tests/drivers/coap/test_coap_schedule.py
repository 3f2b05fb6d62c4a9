"""The pure timing rules: aligned polls, one probe at a time with doubling retries,
and when an observation has lapsed."""

from __future__ import annotations

from gatewayd.drivers.coap.schedule import (
    Admission,
    Reachability,
    lapse_deadline,
)


def test_one_probe_at_a_time_with_doubling_retries() -> None:
    r = Reachability(delay=1.0, delay_max=5.0)
    assert r.admit(0.0) is Admission.SEND and r.reachable
    assert r.failed(10.0) == 1.0
    assert not r.reachable and r.next_retry(10.0) == 1.0
    assert r.admit(10.5) is Admission.WAIT
    assert r.admit(11.0) is Admission.PROBE
    assert r.admit(11.0) is Admission.WAIT  # the probe is in flight
    assert r.next_retry(11.0) == 0.0 and r.probing
    assert r.failed(12.0) == 2.0
    assert r.admit(14.0) is Admission.PROBE
    assert r.failed(14.0) == 4.0
    assert r.admit(18.0) is Admission.PROBE
    assert r.failed(18.0) == 5.0  # capped
    assert r.admit(23.0) is Admission.PROBE
    r.abandoned()
    assert r.admit(23.0) is Admission.PROBE
    assert r.answered() is True
    assert r.reachable and r.failures == 0 and r.admit(23.0) is Admission.SEND
    assert r.answered() is False


def test_lapse_deadline() -> None:
    assert lapse_deadline(100.0, 1.0, 0.5) == 101.5
    assert lapse_deadline(100.0, None, 5.0) == 165.0  # Max-Age absent: 60 s
    assert lapse_deadline(100.0, 0.0, 2.0) == 102.0
