"""A pymodbus slave on loopback TCP or on a serial port, for tests and benches.

Units not in the map are silent (no answer at all), as on a real bus. Every
request received is counted per (unit, function code), on the slave side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SPACE_OF_FUNCTION = {1: "co", 5: "co", 15: "co", 2: "di", 3: "hr", 6: "hr", 16: "hr", 4: "ir"}


@dataclass
class UnitMap:
    """The contents of one unit: address -> value per space. Each space holds
    ``size`` registers (or bits); other addresses answer exception 2."""

    hr: dict[int, int] = field(default_factory=dict)
    ir: dict[int, int] = field(default_factory=dict)
    co: dict[int, bool] = field(default_factory=dict)
    di: dict[int, bool] = field(default_factory=dict)
    size: int = 1024
    # (space, address) -> Modbus exception code answered for any read or
    # write that covers the address
    exceptions: dict[tuple[str, int], int] = field(default_factory=dict)


def _registers(values: Mapping[int, int], size: int) -> SimData:
    regs = [0] * size
    for address, value in values.items():
        regs[address] = value
    return SimData(0, values=regs, datatype=DataType.REGISTERS)


def _bits(values: Mapping[int, bool], size: int) -> SimData:
    bits = [False] * size
    for address, value in values.items():
        bits[address] = value
    return SimData(0, values=bits, datatype=DataType.BITS)


def _device(unit: int, spec: UnitMap) -> SimDevice:
    async def action(function_code: int, _start: int, address: int, count: int,
                     _registers: list[int], _values: Any) -> ExcCodes | None:
        space = SPACE_OF_FUNCTION.get(function_code)
        for (fail_space, fail_address), code in spec.exceptions.items():
            if fail_space == space and address <= fail_address < address + max(count, 1):
                return ExcCodes(code)
        return None

    return SimDevice(
        id=unit,
        simdata=([_bits(spec.co, spec.size)], [_bits(spec.di, spec.size)],
                 [_registers(spec.hr, spec.size)], [_registers(spec.ir, spec.size)]),
        action=action if spec.exceptions else None,
    )


class PymodbusSlave:
    """``async with PymodbusSlave(units) as slave: port = await slave.start_tcp()``."""

    def __init__(self, units: Mapping[int, UnitMap]) -> None:
        self.units = dict(units)
        self.requests: Counter[tuple[int, int]] = Counter()
        self.connections = 0
        self.silent: set[int] = set()  # units that stop answering, switchable at run time
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self.port = 0

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests[(pdu.dev_id, pdu.function_code)] += 1
        return pdu

    def _connected(self, up: bool) -> None:
        if up:
            self.connections += 1

    def _silence_unknown_units(self, server: ModbusTcpServer | ModbusSerialServer) -> None:
        context: Any = server.context
        get_values, set_values = context.async_getValues, context.async_setValues

        async def checked_get(unit: int, fc: int, address: int, count: int = 1) -> Any:
            if unit not in self.units or unit in self.silent:
                raise NoSuchIdException(f"unit {unit} is silent")
            return await get_values(unit, fc, address, count)

        async def checked_set(unit: int, fc: int, address: int, values: Any) -> Any:
            if unit not in self.units or unit in self.silent:
                raise NoSuchIdException(f"unit {unit} is silent")
            return await set_values(unit, fc, address, values)

        context.async_getValues = checked_get
        context.async_setValues = checked_set

    def _devices(self) -> list[SimDevice]:
        return [_device(unit, spec) for unit, spec in self.units.items()]

    async def start_tcp(self, port: int = 0, *, rtu_framing: bool = False) -> int:
        """Listen on 127.0.0.1:``port`` (0: any free port); returns the port. With
        ``rtu_framing`` it speaks RTU frames over TCP, as a serial device server."""
        framer = FramerType.RTU if rtu_framing else FramerType.SOCKET
        server = ModbusTcpServer(self._devices(), address=("127.0.0.1", port), framer=framer,
                                 trace_pdu=self._trace, trace_connect=self._connected,
                                 ignore_missing_devices=True)
        self._silence_unknown_units(server)
        await server.serve_forever(background=True)
        self._server = server
        sockets = server.transport.sockets  # type: ignore[attr-defined]
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def start_serial(self, device: str, *, baudrate: int = 19200,
                           parity: str = "E") -> None:
        """Answer on the serial port ``device`` (one end of a pty pair)."""
        server = ModbusSerialServer(self._devices(), port=device, baudrate=baudrate,
                                    parity=parity, trace_pdu=self._trace,
                                    ignore_missing_devices=True)
        self._silence_unknown_units(server)
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def values(self, unit: int, space: str, address: int, count: int) -> list[Any]:
        """What the slave holds now (read from its datastore, not over the wire)."""
        assert self._server is not None
        fc = {"co": 1, "di": 2, "hr": 3, "ir": 4}[space]
        context: Any = self._server.context
        return list(await context.async_getValues(unit, fc, address, count))

    def count(self, unit: int | None = None, function: int | None = None) -> int:
        return sum(n for (u, f), n in self.requests.items()
                   if (unit is None or u == unit) and (function is None or f == function))

    async def __aenter__(self) -> PymodbusSlave:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

