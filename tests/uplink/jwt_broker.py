"""An amqtt broker whose auth plugin checks the uplink's ES256 token with the gateway's
public key — the central side of ``auth = { type = "jwt" }``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import jwt
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session


@dataclass
class Verdict:
    username: str | None
    token: str | None
    accepted: bool
    claims: dict[str, Any] | None
    reason: str


class GatewayJwtAuthPlugin(BaseAuthPlugin):
    """Accepts a client whose password is an ES256 JWT signed by the configured key,
    not expired, with ``sub`` = the username (and ``aud`` when configured)."""

    verdicts: ClassVar[list[Verdict]] = []

    @dataclass
    class Config:
        public_key: str  # PEM
        audience: str | None = None
        leeway: float = field(default=5.0)

    async def authenticate(self, *, session: Session) -> bool | None:
        token, user = session.password, session.username
        try:
            if not token:
                raise jwt.InvalidTokenError("no token")
            claims = jwt.decode(
                token, self.config.public_key, algorithms=["ES256"],
                audience=self.config.audience, leeway=self.config.leeway,
                options={"require": ["exp", "iat", "iss", "sub"],
                         "verify_aud": self.config.audience is not None})
        except jwt.InvalidTokenError as err:
            self.verdicts.append(Verdict(user, token, False, None, f"{type(err).__name__}"))
            return False
        ok = bool(claims["sub"] == user)
        self.verdicts.append(Verdict(user, token, ok, claims, "ok" if ok else "sub != username"))
        return ok


def broker_config(port: int, public_key_pem: str, *, audience: str | None) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {
            f"{__name__}.GatewayJwtAuthPlugin": {"public_key": public_key_pem,
                                                  "audience": audience},
        },
    }
