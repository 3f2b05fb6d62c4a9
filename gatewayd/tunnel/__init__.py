"""Remote access: a supervised, outbound-only OpenSSH reverse tunnel.

The gateway dials out to a bastion with ``ssh -N -R ...``; OpenSSH does the
cryptography, gatewayd builds its argument list, pins the bastion's host key
and supervises the process.

- :mod:`.config`: the ``[tunnel]`` table, validated into frozen dataclasses.
- :mod:`.command`: pure: the ssh argument list and the pinned ``known_hosts`` text.
- :mod:`.sshlog`: pure: what ssh's log lines mean (up, connection, why it failed).
- :mod:`.runner`: the asyncio adapter: runs ``ssh``, restarts it with backoff,
  opens and closes the on-demand window, reports health.
- :mod:`.wsproxy`: the ``ProxyCommand`` that carries SSH over a ``wss://`` relay.

This package's ``__init__`` imports nothing, so that the configuration schema
can import :mod:`.config` without pulling in the adapter.
"""
