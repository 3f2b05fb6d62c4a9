"""The asyncio side of a serial port: pyserial sets the line up, the event loop waits.

pyserial opens the port non-blocking and applies baud rate, parity, stop bits,
byte size, flow control and the exclusive lock (termios and flock). Reading and
writing then go straight to the file descriptor: :meth:`SerialPort.read` waits
with ``loop.add_reader`` until the kernel has bytes, so an idle port costs no
CPU and no thread. Errors are converted here, once: :class:`PortUnavailable`
when the port cannot be opened, :class:`PortLost` when it fails while open
(end of file or EIO: the adapter was unplugged).
"""

from __future__ import annotations

import asyncio
import errno
import os
import termios
from types import TracebackType

import serial  # type: ignore[import-untyped]  # pyserial ships no type hints

from gatewayd.errors import DriverError

from .config import PortSettings

READ_CHUNK = 4096  # bytes per read: several lines at any serial speed


class PortUnavailable(DriverError):
    """The port could not be opened (missing, busy, no permission, not a tty)."""

    def __init__(self, message: str, *, device: str, path: str) -> None:
        self.path = path
        super().__init__(message, device=device)


class PortLost(DriverError):
    """An open port failed: the adapter went away or the line hung up."""

    def __init__(self, message: str, *, device: str, path: str) -> None:
        self.path = path
        super().__init__(message, device=device)


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and isinstance(err.errno, int) and err.errno > 0:
        return os.strerror(err.errno)
    return str(err) or type(err).__name__


class SerialPort:
    """One open serial port. Use :meth:`open`, then ``with port:`` to close it."""

    def __init__(self, settings: PortSettings, serial_port: serial.Serial, *,
                 device: str) -> None:
        self.settings = settings
        self.device = device
        self.resolved = os.path.realpath(settings.path)
        self._serial = serial_port
        self._fd: int = serial_port.fileno()

    @classmethod
    def open(cls, settings: PortSettings, *, device: str) -> SerialPort:
        """Open and configure the port (non-blocking: returns at once).

        Raises PortUnavailable.
        """
        s = serial.Serial()
        s.port = settings.path
        try:
            s.baudrate = settings.baudrate
            s.bytesize = settings.bytesize
            s.parity = settings.parity
            s.stopbits = settings.stopbits
            s.xonxoff = settings.flow_control == "xonxoff"
            s.rtscts = settings.flow_control == "rtscts"
            s.exclusive = settings.exclusive
            s.timeout = 0
            s.write_timeout = 0
            # VMIN=1, VTIME=0: a non-blocking read with no data then fails with EAGAIN
            # instead of returning b"", so that b"" always means the line hung up.
            s.inter_byte_timeout = 0
            s.open()
        except (serial.SerialException, OSError, termios.error, ValueError) as err:
            reason = _describe(err)
            if isinstance(err, serial.SerialException) and err.errno == errno.EAGAIN:
                reason = "in use by another process (exclusive lock held)"
            raise PortUnavailable(f"cannot open {settings.path}: {reason}",
                                  device=device, path=settings.path) from err
        return cls(settings, s, device=device)

    def __enter__(self) -> SerialPort:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the port (idempotent; errors of a vanished device are ignored)."""
        try:
            self._serial.close()
        except (serial.SerialException, OSError, termios.error):
            pass  # the device is gone already: nothing is left to release

    def _lost(self, what: str) -> PortLost:
        return PortLost(f"{self.settings.path}: {what}", device=self.device,
                        path=self.settings.path)

    async def read(self) -> bytes:
        """The next bytes the device sent (at least one). Raises PortLost."""
        while True:
            try:
                data = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                await self._ready(writing=False)
                continue
            except OSError as err:
                raise self._lost(f"read failed: {_describe(err)}") from err
            if not data:
                raise self._lost("end of file (adapter unplugged?)")
            return data

    async def write(self, data: bytes) -> None:
        """Write every byte of ``data``; waits while the driver's buffer is full
        (flow control). Bound it with a timeout. Raises PortLost."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                await self._ready(writing=True)
                continue
            except OSError as err:
                raise self._lost(f"write failed: {_describe(err)}") from err
            view = view[n:]

    async def _ready(self, *, writing: bool) -> None:
        """Wait until the descriptor is readable (or writable)."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if writing:
            loop.add_writer(self._fd, wake)
        else:
            loop.add_reader(self._fd, wake)
        try:
            await ready
        finally:
            if writing:
                loop.remove_writer(self._fd)
            else:
                loop.remove_reader(self._fd)
