"""The CoAP server (aiocoap, UDP): SenML POSTs on ``/telemetry``, answered after commit.

Authentication: the request carries the client's password token (the same
HS256 JWT an MQTT client sends as its password, see gatewayd.local.tokens) in
a ``token=`` query parameter; its ``sub`` claim names the client, whose key
must verify it. For ACL and signing the POST counts as a publish to
``devices/{client}``; a client with ``signed = true`` POSTs the signed JWS
instead of the bare pack.

Answers: 2.04 Changed once the readings are committed; 4.00 Bad Request for
a malformed payload; 4.01 Unauthorized for a missing, invalid or expired
token or a forged signature; 4.03 Forbidden for an ACL refusal or a stale,
replayed or wrong-topic signed message; 4.13 Request Entity Too Large; 4.15
Unsupported Content-Format; 5.03 Service Unavailable when the readings could
not be stored (retry). The diagnostic payload of an error names the reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiocoap
import aiocoap.resource
import jwt
from aiocoap.numbers.codes import Code

from gatewayd.config.units import parse_host_port
from gatewayd.local.config import CoapListenConfig
from gatewayd.local.errors import AuthRefused, LocalIngressError, MessageRefused
from gatewayd.local.ingest import LocalIngress
from gatewayd.local.payload import telemetry_topic

log = logging.getLogger(__name__)

PATH = ("telemetry",)
TOKEN_QUERY = "token="  # noqa: S105 - the name of the query parameter
# CoAP Content-Formats (RFC 7252 §12.3, RFC 8428 §12.3)
CONTENT_FORMATS = {None: "json", 50: "json", 110: "json", 112: "cbor", 0: "json"}

_FORBIDDEN = {"acl_publish", "not_own_device", "wrong_topic", "stale", "from_future",
              "replayed", "replay_cache_full", "unknown_client"}
_UNAUTHORIZED = {"forged", "unsigned"}


def response_code(reason: str) -> Code:
    """The CoAP response code of a refusal reason."""
    if reason in _FORBIDDEN:
        return Code.FORBIDDEN
    if reason in _UNAUTHORIZED:
        return Code.UNAUTHORIZED
    if reason == "too_large":
        return Code.REQUEST_ENTITY_TOO_LARGE
    if reason == "storage":
        return Code.SERVICE_UNAVAILABLE
    return Code.BAD_REQUEST


def _reply(code: Code, reason: str | None = None) -> aiocoap.Message:
    return aiocoap.Message(code=code, payload=reason.encode() if reason else b"")


def token_subject(token: str) -> str | None:
    """The ``sub`` claim of a token, unverified (it only selects the key that verifies)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


class TelemetryResource(aiocoap.resource.Resource):
    """``POST /telemetry``: one SenML pack (JSON or CBOR) per request."""

    def __init__(self, ingress: LocalIngress) -> None:
        super().__init__()
        self.ingress = ingress

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        ingress = self.ingress
        token = next((q[len(TOKEN_QUERY):] for q in request.opt.uri_query
                      if q.startswith(TOKEN_QUERY)), None)
        try:
            subject = token_subject(token) if token else None
            if token and subject is None:
                err = AuthRefused("token without a sub claim naming the client", client=None,
                                  reason="bad_token")
                ingress.refuse("coap", err)
                raise err
            rec = ingress.authenticate("coap", subject, token)
        except AuthRefused as err:
            return _reply(Code.UNAUTHORIZED, err.reason)
        fmt = CONTENT_FORMATS.get(_format_number(request.opt.content_format))
        if fmt is None:
            ingress.refuse("coap", MessageRefused(
                f"client {rec.name}: content format {request.opt.content_format} is not "
                "SenML JSON or CBOR", client=rec.name, reason="unsupported_format"))
            return _reply(Code.UNSUPPORTED_CONTENT_FORMAT, "unsupported_format")
        if rec.signed:
            fmt = "json"  # a signed message is a JWS; the pack inside it is JSON
        try:
            checked = ingress.check("coap", rec.name, telemetry_topic(rec.name),
                                    bytes(request.payload), fmt=fmt)
            if not checked.readings and not checked.duplicate:
                raise MessageRefused("no readings", client=rec.name, reason="malformed")
            await ingress.store("coap", checked)
        except MessageRefused as err:
            return _reply(response_code(err.reason), err.reason)
        return aiocoap.Message(code=Code.CHANGED)


def _format_number(cf: Any) -> int | None:
    return None if cf is None else int(cf)


class LocalCoapServer:
    """The ``local-coap`` component: one aiocoap UDP context per listen address."""

    name = "local-coap"

    def __init__(self, cfg: CoapListenConfig, ingress: LocalIngress) -> None:
        self.cfg = cfg
        self.ingress = ingress
        self.listening: list[str] = []

    async def run(self) -> None:
        """Serve until cancelled. Raises LocalIngressError when a socket cannot be bound."""
        logging.getLogger("coap-server").setLevel(logging.WARNING)
        logging.getLogger("coap").setLevel(logging.WARNING)
        await self.ingress.ensure_loaded()
        site = aiocoap.resource.Site()
        site.add_resource(PATH, TelemetryResource(self.ingress))
        contexts: list[aiocoap.Context] = []
        try:
            for address in self.cfg.listen:
                host, port = parse_host_port(address)
                try:
                    ctx = await aiocoap.Context.create_server_context(
                        site, bind=(host, port), transports=["udp6"])
                except OSError as err:
                    raise LocalIngressError(f"local coap: cannot listen on {address}: "
                                            f"{err.strerror or err}", client=None,
                                            reason="start") from err
                contexts.append(ctx)
                self.listening.append(address)
            log.info("local coap: listening on %s", ", ".join(
                f"coap://{a}" for a in self.listening))
            await asyncio.Event().wait()
        finally:
            self.listening = []
            for ctx in contexts:
                await asyncio.shield(ctx.shutdown())

    def health(self) -> dict[str, Any]:
        return {"listening": [f"coap://{a}" for a in self.listening],
                **self.ingress.health("coap")}
