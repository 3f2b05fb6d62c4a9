"""The result message of a command, signed with the gateway key.

Published to ``{topic_prefix}/commands/{name}/result`` as a JSON object::

    {"jti": "...", "status": "ok" | "refused" | "failed", "reason": null | "...",
     "detail": "...", "action": "write", "gateway": "gw-0001",
     "time": "2026-11-23T19:20:00.123Z", ..., "jws": "<compact JWS>"}

``jws`` is an ES256 JWS (header ``kid`` = the gateway id) signed with the
gateway's identity key, whose payload is every other field plus ``iss`` (the
gateway id) and ``iat``: the central side verifies it with the gateway
certificate's public key. It is absent when the key cannot be loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from .audit import iso_time


def result_fields(*, gateway_id: str, jti: str | None, status: str, reason: str | None,
                  detail: str, action: str | None, now: float,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"jti": jti, "status": status, "reason": reason,
                              "detail": detail, "action": action, "gateway": gateway_id,
                              "time": iso_time(now)}
    if extra:
        fields.update(extra)
    return fields


def sign_result(fields: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, *,
                gateway_id: str, now: float) -> str:
    claims = {**fields, "iss": gateway_id, "iat": int(now)}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": gateway_id})


def result_payload(fields: Mapping[str, Any], key: ec.EllipticCurvePrivateKey | None, *,
                   gateway_id: str, now: float) -> bytes:
    out = dict(fields)
    if key is not None:
        out["jws"] = sign_result(fields, key, gateway_id=gateway_id, now=now)
    return json.dumps(out, separators=(",", ":"), default=str).encode()
