"""The ble driver's errors.

Decoders raise only :class:`AdvertisementError` subclasses (each a
:class:`~gatewayd.errors.ProtocolError`): garbage in gives one of these, never
another exception. The adapter raises :class:`BleUnavailable` and
:class:`ConnectFailed` (each a :class:`~gatewayd.errors.DriverError`).
"""

from __future__ import annotations

from gatewayd.errors import DriverError, ProtocolError


class AdvertisementError(ProtocolError):
    """A payload could not be decoded. ``format`` names the decoder, ``reason``
    is the short name counted in the device's status."""

    reason = "invalid"

    def __init__(self, message: str, *, format: str) -> None:
        self.format = format
        super().__init__(f"{format}: {message}")


class TruncatedPayload(AdvertisementError):
    """The payload ends before a field it announces (or is shorter than its format)."""

    reason = "truncated"


class UnsupportedPayload(AdvertisementError):
    """The payload is of another version or data format than the decoder reads."""

    reason = "unsupported"


class InvalidField(AdvertisementError):
    """A field holds a value its specification does not allow."""

    reason = "invalid"


class AddressMismatch(AdvertisementError):
    """The address inside the payload is not the address that sent it."""

    reason = "address_mismatch"


class EncryptionRequired(AdvertisementError):
    """A bind key is configured but the payload is not encrypted: refused, since
    anyone can send plaintext with a copied address."""

    reason = "not_encrypted"


class MissingBindkey(AdvertisementError):
    """The payload is encrypted and no bind key is configured."""

    reason = "no_bindkey"


class DecryptionFailed(AdvertisementError):
    """The message integrity check failed: wrong bind key, or a forged or corrupt packet."""

    reason = "decryption_failed"


class ReplayedCounter(AdvertisementError):
    """An encrypted payload's counter is lower than one already accepted."""

    reason = "replayed"

    def __init__(self, message: str, *, format: str, counter: int, last: int) -> None:
        self.counter = counter
        self.last = last
        super().__init__(message, format=format)


class BleUnavailable(DriverError):
    """The Bluetooth adapter is missing, powered off or bluetoothd is not running."""


class ConnectFailed(DriverError):
    """A GATT connection could not be made or was lost."""
