"""What ssh's messages mean (pure), on lines captured from OpenSSH 9.2 (bookworm)."""

from __future__ import annotations

import pytest

from gatewayd.tunnel.sshlog import (
    Authenticated,
    ConnectionForwarded,
    ForwardUp,
    Problem,
    SshLog,
    TunnelUp,
)

HOST_KEY_CHANGED = """\
debug1: Server host key: ssh-ed25519 SHA256:6zPUJnKwv+pcRd96//psZxygXq1rmTlCmJwHy1MjeBs
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:6zPUJnKwv+pcRd96//psZxygXq1rmTlCmJwHy1MjeBs.
Please contact your system administrator.
Add correct host key in /run/gatewayd/tunnel/known_hosts to get rid of this message.
Offending ED25519 key in /run/gatewayd/tunnel/known_hosts:1
  remove with:
  ssh-keygen -f "/run/gatewayd/tunnel/known_hosts" -R "gatewayd-bastion"
Host key for gatewayd-bastion has changed and you have requested strict checking.
Host key verification failed.
"""

CASES = [
    (HOST_KEY_CHANGED, "host_key_mismatch",
     "the bastion's host key does not match the pinned host_key (Host key for "
     "gatewayd-bastion has changed and you have requested strict checking.)"),
    ("No ED25519 host key is known for gatewayd-bastion and you have requested strict "
     "checking.\nHost key verification failed.\n", "host_key_mismatch",
     "the bastion's host key does not match the pinned host_key (No ED25519 host key is "
     "known for gatewayd-bastion and you have requested strict checking.)"),
    ("debug1: Offering public key: /k ED25519 SHA256:x explicit\n"
     "gw@127.0.0.1: Permission denied (publickey).\n", "auth_failed",
     "the bastion refused the gateway key (gw@127.0.0.1: Permission denied (publickey).)"),
    ("no such identity: /var/lib/gatewayd/identity/ssh_ed25519: No such file or directory\n"
     "gw@b: Permission denied (publickey).\n", "key_missing",
     "the gateway SSH key is missing or unreadable (no such identity: "
     "/var/lib/gatewayd/identity/ssh_ed25519: No such file or directory)"),
    ("Authenticated to 127.0.0.1 ([127.0.0.1]:42222) using \"publickey\".\n"
     "Error: remote port forwarding failed for listen port 42225\n", "forward_failed",
     "the bastion refused a forward (Error: remote port forwarding failed for listen port "
     "42225)"),
    ("ssh: connect to host 127.0.0.1 port 42299: Connection refused\n", "connect_refused",
     "the bastion refused the connection (ssh: connect to host 127.0.0.1 port 42299: "
     "Connection refused)"),
    ("ssh: connect to host 10.0.0.1 port 22: Connection timed out\n", "connect_timeout",
     "connecting to the bastion timed out (ssh: connect to host 10.0.0.1 port 22: "
     "Connection timed out)"),
    ("ssh: Could not resolve hostname bastion.invalid: Name or service not known\n",
     "name_not_resolved", "the bastion's name does not resolve (ssh: Could not resolve "
     "hostname bastion.invalid: Name or service not known)"),
    ("ssh: connect to host 10.0.0.1 port 22: No route to host\n", "network_unreachable",
     "the bastion is unreachable (ssh: connect to host 10.0.0.1 port 22: No route to host)"),
    ("Timeout, server 127.0.0.1 not responding.\n", "server_not_responding",
     "the bastion stopped answering keep-alives (Timeout, server 127.0.0.1 not responding.)"),
    ("debug1: forwarding_success: all expected forwarding replies received\n"
     "Connection to 127.0.0.1 closed by remote host.\n"
     "Transferred: sent 3468, received 3208 bytes, in 3.7 seconds\n", "connection_lost",
     "the connection to the bastion was lost (Connection to 127.0.0.1 closed by remote host.)"),
    ("gatewayd-wsproxy: cannot connect to wss://r/ssh: TLS certificate not accepted "
     "(unable to get local issuer certificate)\n"
     "kex_exchange_identification: Connection closed by remote host\n"
     "Connection closed by UNKNOWN port 65535\n", "proxy_failed",
     "the websocket relay failed (gatewayd-wsproxy: cannot connect to wss://r/ssh: TLS "
     "certificate not accepted (unable to get local issuer certificate))"),
    ("Permissions 0644 for '/k' are too open.\nIt is required that your private key files "
     "are NOT accessible by others.\n", "key_unprotected",
     "the gateway SSH key is readable by others (Permissions 0644 for '/k' are too open.)"),
    ("debug1: something\nsetpriv: failed to execute /usr/bin/ssh: No such file\n", "exited",
     "ssh exited (ssh exited (status 127): setpriv: failed to execute /usr/bin/ssh: "
     "No such file)"),
    ("", "exited", "ssh exited (ssh exited (was killed by a signal))"),
]


@pytest.mark.parametrize(("text", "reason", "message"), CASES)
def test_failure_reason(text: str, reason: str, message: str) -> None:
    log = SshLog()
    for line in text.splitlines(keepends=True):
        log.feed(line)
    rc = -9 if not text else 127 if "setpriv" in text else 255
    assert log.failure(rc) == (reason, message)


def test_events_of_a_run() -> None:
    log = SshLog()
    lines = [
        "debug1: Connecting to 127.0.0.1 [127.0.0.1] port 42222.",
        'Authenticated to 127.0.0.1 ([127.0.0.1]:42222) using "publickey".',
        "debug1: Remote connections from 127.0.0.1:42223 forwarded to local address "
        "127.0.0.1:42224",
        "debug1: remote forward success for: listen 127.0.0.1:42223, connect 127.0.0.1:42224",
        "debug1: forwarding_success: all expected forwarding replies received",
        "debug1: client_input_channel_open: ctype forwarded-tcpip rchan 1 win 2097152 max 32768",
        "debug1: client_request_forwarded_tcpip: listen 127.0.0.1 port 42223, originator "
        "127.0.0.1 port 49230",
        "debug1: channel 0: free: 127.0.0.1, nchannels 1",
    ]
    events = [log.feed(line + "\n") for line in lines]
    assert events == [None, Authenticated(), None, ForwardUp("127.0.0.1:42223"), TunnelUp(),
                      None, ConnectionForwarded("127.0.0.1:42223", "127.0.0.1:49230"), None]


def test_problem_event_and_long_lines() -> None:
    log = SshLog()
    assert log.feed("ssh: connect to host h port 22: Connection refused\r\n") == Problem(
        "connect_refused", "ssh: connect to host h port 22: Connection refused")
    event = log.feed("x" * 5000 + " Connection refused")
    assert event is None  # cut at 300 characters: the reason is past the cut
    reason, message = log.failure(255)
    assert reason == "connect_refused" and len(message) < 400
