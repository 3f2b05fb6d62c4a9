"""One Modbus bus: a connection that devices share, one transaction at a time.

Every device that names the same serial port, the same ``rtu+tcp`` device
server or the same ``tcp`` server shares one :class:`ModbusBus`, found in a
module-level registry and reference-counted by :func:`open_bus`. The bus

- runs one transaction at a time (an ``asyncio.Lock``, first come first
  served, so one device's long plan cannot starve another: the lock is taken
  per request, not per cycle);
- keeps the line silent between frames for at least the frame silence of the
  serial line (3.5 character times), or the largest ``request_gap`` of its
  devices;
- bounds every request by the requesting device's ``timeout``;
- connects lazily, and after a failure reconnects with a doubling backoff;
  a request made while the backoff runs fails at once (BusUnavailable);
- converts every pymodbus exception into a DriverError subclass here, where
  it enters.

pymodbus's own retries, timeouts and reconnection are switched off: this
module decides.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from gatewayd.errors import DriverError

from .config import Endpoint
from .schedule import Backoff

log = logging.getLogger(__name__)

# pymodbus's own deadline for connects and responses: far beyond ours, so that
# only this module's asyncio.timeout() ever fires.
_LIBRARY_TIMEOUT = 3600.0
# After this many consecutive timeouts on a TCP connection with no answer in
# between, the connection is presumed half-open and is dropped.
_TCP_DEAD_AFTER = 5

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
GATEWAY_NO_RESPONSE = 11


class BusError(DriverError):
    """A request on a bus failed; ``unit`` is the Modbus unit id it addressed."""

    def __init__(self, message: str, *, device: str, unit: int | None = None) -> None:
        self.unit = unit
        super().__init__(message, device=device)


class RequestTimeout(BusError):
    """The unit did not answer within the device's timeout."""


class ModbusExceptionResponse(BusError):
    """The unit answered with a Modbus exception; ``code`` is its exception code."""

    def __init__(self, message: str, *, device: str, unit: int, code: int) -> None:
        self.code = code
        super().__init__(message, device=device, unit=unit)


class InvalidResponse(BusError):
    """The answer could not be used (wrong length, wrong unit, undecodable)."""


class BusUnavailable(BusError):
    """The bus is not connected; a reconnect is pending."""


@dataclass(frozen=True)
class BusUser:
    """What one device brings to a shared bus."""

    request_gap: float | None
    reconnect_delay: float
    reconnect_delay_max: float


Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class ModbusBus:
    """A connection to one endpoint, shared by every device that names it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.users: dict[str, BusUser] = {}
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._backoff = Backoff(initial=0.5, maximum=30.0)
        self._idle_since = -math.inf
        self._consecutive_timeouts = 0
        self.connects = 0
        self.disconnects = 0
        self.last_error: str | None = None

    # ---- users ---------------------------------------------------------------

    def attach(self, device: str, user: BusUser) -> None:
        self.users[device] = user
        self._apply_settings()

    def detach(self, device: str) -> None:
        self.users.pop(device, None)
        self._apply_settings()

    def _apply_settings(self) -> None:
        if self.users:
            self._backoff.initial = min(u.reconnect_delay for u in self.users.values())
            self._backoff.maximum = min(u.reconnect_delay_max for u in self.users.values())

    @property
    def silence(self) -> float:
        """The minimum idle time between the end of one transaction and the next."""
        gaps = [u.request_gap for u in self.users.values() if u.request_gap is not None]
        return max([self.endpoint.frame_silence(), *gaps])

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    # ---- requests ------------------------------------------------------------

    async def read(self, *, device: str, unit: int, space: str, start: int, count: int,
                   response_timeout: float) -> list[int] | list[bool]:
        """Read ``count`` registers or bits from ``space`` (hr, ir, co, di).

        Raises RequestTimeout, ModbusExceptionResponse, InvalidResponse or
        BusUnavailable.
        """

        def call(client: Client) -> Awaitable[ModbusPDU]:
            if space == "hr":
                return client.read_holding_registers(start, count=count, device_id=unit)
            if space == "ir":
                return client.read_input_registers(start, count=count, device_id=unit)
            if space == "co":
                return client.read_coils(start, count=count, device_id=unit)
            return client.read_discrete_inputs(start, count=count, device_id=unit)

        pdu = await self._transact(device, unit, response_timeout, call)
        if space in ("co", "di"):
            bits = list(pdu.bits)
            if len(bits) < count:
                raise InvalidResponse(f"unit {unit}: asked for {count} bits, got {len(bits)}",
                                      device=device, unit=unit)
            return [bool(b) for b in bits[:count]]
        registers = list(pdu.registers)
        if len(registers) != count:
            raise InvalidResponse(
                f"unit {unit}: asked for {count} registers, got {len(registers)}",
                device=device, unit=unit)
        return registers

    async def write(self, *, device: str, unit: int, space: str, address: int,
                    values: Sequence[int] | Sequence[bool], multiple: bool,
                    response_timeout: float) -> None:
        """Write registers (FC 6, or FC 16 when several or ``multiple``) or a coil
        (FC 5, or FC 15 when ``multiple``). Raises as :meth:`read` does."""

        def call(client: Client) -> Awaitable[ModbusPDU]:
            if space == "co":
                bits = [bool(v) for v in values]
                if multiple or len(bits) > 1:
                    return client.write_coils(address, bits, device_id=unit)
                return client.write_coil(address, bits[0], device_id=unit)
            words = [int(v) for v in values]
            if multiple or len(words) > 1:
                return client.write_registers(address, words, device_id=unit)
            return client.write_register(address, words[0], device_id=unit)

        await self._transact(device, unit, response_timeout, call)

    async def _transact(self, device: str, unit: int, response_timeout: float,
                        call: Callable[[Client], Awaitable[ModbusPDU]]) -> ModbusPDU:
        loop = asyncio.get_running_loop()
        async with self._lock:
            client = await self._ensure_connected(device, response_timeout)
            wait = self._idle_since + self.silence - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                async with asyncio.timeout(response_timeout):
                    pdu = await call(client)
            except TimeoutError:
                if not client.connected:
                    raise self._lost(device, unit, "connection lost during a request") from None
                self._timed_out()
                raise RequestTimeout(f"unit {unit}: no answer within {response_timeout:g}s",
                                     device=device, unit=unit) from None
            except ConnectionException as err:
                raise self._lost(device, unit, f"connection lost: {err}") from err
            except (ModbusException, ValueError) as err:
                raise InvalidResponse(f"unit {unit}: invalid response: {err}",
                                      device=device, unit=unit) from err
            finally:
                self._idle_since = loop.time()
        self._consecutive_timeouts = 0
        if pdu.isError():
            code = pdu.exception_code
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise ModbusExceptionResponse(
                f"unit {unit}: Modbus exception {code} ({name})",
                device=device, unit=unit, code=code)
        return pdu

    def _timed_out(self) -> None:
        self._consecutive_timeouts += 1
        if not self.endpoint.is_serial and self._consecutive_timeouts >= _TCP_DEAD_AFTER:
            log.warning("modbus bus %s: %d requests in a row timed out; reconnecting",
                        self.endpoint.url, self._consecutive_timeouts)
            self._drop_client()
            self.disconnects += 1
            self._consecutive_timeouts = 0

    def _lost(self, device: str, unit: int | None, reason: str) -> BusUnavailable:
        log.warning("modbus bus %s: %s", self.endpoint.url, reason)
        self._drop_client()
        self.disconnects += 1
        self.last_error = reason
        return BusUnavailable(f"{self.endpoint.url}: {reason}", device=device, unit=unit)

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- connection ----------------------------------------------------------

    async def _ensure_connected(self, device: str, connect_timeout: float) -> Client:
        if self._client is not None:
            if self._client.connected:
                return self._client
            self._lost(device, None, "connection lost")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._backoff.ready(now):
            wait = self._backoff.next_attempt - now
            raise BusUnavailable(
                f"{self.endpoint.url}: not connected ({self.last_error}); "
                f"next attempt in {wait:.1f}s", device=device)
        error = await self._connect(max(connect_timeout, 1.0))
        if error is not None:
            self.last_error = error
            delay = self._backoff.failed(loop.time())
            log.warning("modbus bus %s: %s; next attempt in %.1fs",
                        self.endpoint.url, error, delay)
            raise BusUnavailable(f"{self.endpoint.url}: {error}", device=device)
        self._backoff.succeeded()
        self.connects += 1
        self._consecutive_timeouts = 0
        self._idle_since = -math.inf
        log.info("modbus bus %s: connected", self.endpoint.url)
        assert self._client is not None
        return self._client

    async def _connect(self, limit: float) -> str | None:
        """Open the connection; returns why it failed, or None."""
        ep = self.endpoint
        if ep.is_serial and not await asyncio.to_thread(os.path.exists, ep.device):
            return f"serial port {ep.device} not found"
        what = f"open serial port {ep.device}" if ep.is_serial else "connect"
        client = _make_client(ep)
        try:
            async with asyncio.timeout(limit):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        except (OSError, ValueError, termios.error, ModbusException) as err:
            # termios.error: the serial driver refused the line setting (baudrate, parity)
            client.close()
            return f"could not {what}: {err}"
        if not ok or not client.connected:
            client.close()
            return f"could not {what}"
        self._client = client
        return None

    def close(self) -> None:
        self._drop_client()

    def health(self) -> dict[str, Any]:
        """The connection's state, JSON-serialisable."""
        loop = asyncio.get_running_loop()
        retry_in = None
        if not self.connected and not self._backoff.ready(loop.time()):
            retry_in = round(self._backoff.next_attempt - loop.time(), 3)
        return {
            "endpoint": self.endpoint.url,
            "state": "connected" if self.connected else "disconnected",
            "connects": self.connects,
            "disconnects": self.disconnects,
            "connect_failures": self._backoff.failures,
            "reconnect_delay_s": self._backoff.delay,
            "retry_in_s": retry_in,
            "last_error": self.last_error,
            "shared_by": sorted(self.users),
        }


def _make_client(ep: Endpoint) -> Client:
    common: dict[str, Any] = {
        "name": ep.url, "timeout": _LIBRARY_TIMEOUT, "retries": 0, "reconnect_delay": 0,
    }
    if ep.is_serial:
        return AsyncModbusSerialClient(
            ep.device, framer=FramerType.RTU, baudrate=ep.baudrate, bytesize=ep.bytesize,
            parity=ep.parity, stopbits=ep.stopbits, **common)
    framer = FramerType.RTU if ep.scheme == "rtu+tcp" else FramerType.SOCKET
    return AsyncModbusTcpClient(ep.host, port=ep.port, framer=framer, **common)


# ---- the registry --------------------------------------------------------------

_buses: dict[tuple[str, ...], ModbusBus] = {}


def bus_key(ep: Endpoint) -> tuple[str, ...]:
    """Devices whose endpoints have the same key share one bus."""
    if ep.is_serial:
        return ("rtu", os.path.realpath(ep.device))
    return (ep.scheme, ep.host.lower(), str(ep.port))


def _quiet_library_logging() -> None:
    # pymodbus logs every timeout and failed connect itself; this module logs
    # each such event once, naming the bus. An explicit level set by the
    # operator wins.
    library = logging.getLogger("pymodbus")
    if library.level == logging.NOTSET:
        library.setLevel(logging.CRITICAL)


@asynccontextmanager
async def open_bus(endpoint: Endpoint, *, device: str, user: BusUser) -> AsyncIterator[ModbusBus]:
    """The shared bus for ``endpoint``, created on first use and closed when its
    last device leaves.

    Raises DriverError when the bus is open with other serial line settings.
    """
    key = bus_key(endpoint)
    bus = _buses.get(key)
    if bus is not None and endpoint.is_serial and bus.endpoint.line != endpoint.line:
        others = ", ".join(sorted(bus.users))
        raise DriverError(
            f"serial port {endpoint.device} is already open at {bus.endpoint.line} "
            f"(by {others}); all devices on one bus need the same baudrate, parity, "
            f"stopbits and bytesize, got {endpoint.line}", device=device)
    if bus is None:
        _quiet_library_logging()
        bus = ModbusBus(endpoint)
        _buses[key] = bus
    bus.attach(device, user)
    try:
        yield bus
    finally:
        bus.detach(device)
        if not bus.users:
            bus.close()
            if _buses.get(key) is bus:
                del _buses[key]
