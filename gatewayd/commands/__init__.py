"""Signed commands from the central side: verified, authorised, rate limited, audited.

- :mod:`.config`: the ``[commands]`` section.
- :mod:`.keys`: the operators' trusted public keys (reloaded on SIGHUP).
- :mod:`.token`: the compact JWS check (pure: bytes and a clock in, claims out).
- :mod:`.policy`: claims to a :class:`~.policy.Command`, scopes, write limits (pure).
- :mod:`.replay`, :mod:`.ratelimit`: the replay cache and its journal, token buckets.
- :mod:`.audit`: the append-only audit log.
- :mod:`.results`: the signed result message.
- :mod:`.actions`: what a command may act on (drivers, last readings, the tunnel).
- :mod:`.service`: the thin asyncio adapter that puts these together.

This package is imported by the config schema: keep this file free of imports.
"""
