"""The coap driver's errors.

The pure payload decoder raises only :class:`PayloadError` subclasses (each a
:class:`~gatewayd.errors.ProtocolError`): garbage from a device gives one of
these, never another exception, and the device's status counts it by
``reason``. Talking to the device raises :class:`CoapUnreachable` (no answer,
or the network says no) or :class:`CoapErrorResponse` (an answer that is not
2.xx); both are :class:`~gatewayd.errors.DriverError`.
"""

from __future__ import annotations

from gatewayd.errors import DriverError, ProtocolError


class PayloadError(ProtocolError):
    """A response payload could not be turned into readings. ``format`` names the
    decoder, ``path`` the resource, ``reason`` the short name status counts."""

    reason = "invalid"

    def __init__(self, message: str, *, format: str, path: str) -> None:
        self.format = format
        self.path = path
        super().__init__(f"{path} ({format}): {message}")


class MalformedPayload(PayloadError):
    """Not UTF-8 text, JSON, CBOR or SenML at all, or larger than the driver accepts."""

    reason = "malformed"


class MissingField(PayloadError):
    """The configured ``field`` (JSON/CBOR key path or SenML record name) is absent."""

    reason = "missing_field"

    def __init__(self, message: str, *, format: str, path: str, field: str) -> None:
        self.field = field
        super().__init__(message, format=format, path=path)


class InvalidValue(PayloadError):
    """The value is there but is not what the point takes: not a number, a
    non-finite number, an object where a scalar belongs, a wrong type."""

    reason = "invalid_value"


class CoapUnreachable(DriverError):
    """The device did not answer within the request timeout, or the network
    reported it unreachable (ICMP port or host unreachable, name not resolved)."""

    def __init__(self, message: str, *, device: str, timed_out: bool) -> None:
        self.timed_out = timed_out
        super().__init__(message, device=device)


class CoapErrorResponse(DriverError):
    """The device answered with a 4.xx or 5.xx code; ``code`` is its dotted form
    (``"4.04"``)."""

    def __init__(self, message: str, *, device: str, code: str,
                 point: str | None = None) -> None:
        self.code = code
        super().__init__(message, device=device, point=point)
