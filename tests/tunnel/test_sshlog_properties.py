"""Property test of the ssh log reader: any stderr text gives events or nothing, and
a failure reason from the named set, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.tunnel import errors as reasons
from gatewayd.tunnel.sshlog import SUMMARIES, SshLog
from tests.support.properties import examples

lines = st.one_of(
    st.text(max_size=400),
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from([
        "debug1: remote forward success for: listen ", "debug1: forwarding_success: ",
        "debug1: client_request_forwarded_tcpip: listen ", "Authenticated to ",
        "Host key verification failed", "Permission denied (publickey)", "ssh: connect to host ",
        "Warning: remote port forwarding failed for listen port ", "debug"]),
        st.text(alphabet="0123456789.: abcdefhlnoprst\r\n", max_size=80)),
)


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.lists(lines, max_size=20), st.one_of(st.none(), st.integers(-64, 255)))
def test_any_ssh_output_gives_events_and_a_named_failure(text: list[str],
                                                        returncode: int | None) -> None:
    log = SshLog()
    for line in text:
        log.feed(line)
    reason, message = log.failure(returncode)
    assert reason in SUMMARIES and message.startswith(SUMMARIES[reason])
    assert reason == reasons.EXITED or any(line for line in text)
