"""Errors of local ingress; each carries the client and a reason that names a counter."""

from __future__ import annotations

from collections.abc import Sequence

from gatewayd.errors import ConfigError, ConfigProblem, GatewayError


class ClientsFileError(ConfigError):
    """The clients file is missing, unreadable, unsafe (permissions) or invalid."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        super().__init__(problems)


class LocalIngressError(GatewayError):
    """A local client or one of its messages was refused.

    ``reason`` is a short name (``expired``, ``acl_publish``, ``forged`` …) that
    is also the label of the counter it increments; the message never holds a key
    or a token.
    """

    def __init__(self, message: str, *, client: str | None, reason: str) -> None:
        self.client = client
        self.reason = reason
        super().__init__(message)


class AuthRefused(LocalIngressError):
    """A connection or request did not authenticate (bad, expired or unknown token)."""


class MessageRefused(LocalIngressError):
    """A message was dropped: not allowed, not signed right, or malformed."""
