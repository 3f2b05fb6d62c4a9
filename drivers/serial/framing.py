"""Framers: sans-IO objects that cut a serial byte stream into lines or frames.

A framer is fed whatever bytes arrived (``feed(data)``) and returns the complete
lines or frames found so far; it keeps the unfinished tail for the next call.
Nothing here reads a port, sleeps or looks at a clock, and nothing raises on any
input: every bad byte is counted instead. Memory is bounded by the configured
maximum line or frame size.

Accounting, exact at every moment for :class:`FrameFramer`::

    bytes_in == sum(len(frame) for every frame returned) + discarded_bytes + pending
"""

from __future__ import annotations

from dataclasses import dataclass

from .checksums import KINDS


class LineFramer:
    """Cuts a byte stream into lines at ``terminator``.

    A line is returned without its terminator; with the terminator ``b"\\n"`` a
    ``\\r`` just before it is dropped too, so ``\\r\\n`` devices work unchanged.
    Empty lines are skipped. A line longer than ``max_line`` bytes (terminator
    excluded) is discarded as a whole and counted once in ``oversize``; the
    framer never holds more than about ``max_line`` bytes.
    """

    def __init__(self, *, terminator: bytes = b"\n", max_line: int = 1024) -> None:
        if not terminator:
            raise ValueError("the terminator must not be empty")
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.terminator = terminator
        self.max_line = max_line
        self._strip_cr = terminator == b"\n"
        # A line of max_line bytes may sit in the buffer with a partial terminator
        # (and the \r that is dropped) before it is complete.
        self._limit = max_line + len(terminator) - 1 + (1 if self._strip_cr else 0)
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no terminator start
        self._discarding = False  # inside an oversize line: drop up to the next terminator
        self.bytes_in = 0
        self.lines = 0
        self.oversize = 0
        self.discarded_bytes = 0  # bytes of oversize lines and of reset() tails

    @property
    def pending(self) -> int:
        """Bytes held for a line not finished yet."""
        return len(self._buf)

    def reset(self) -> int:
        """Forget any unfinished line; returns how many bytes were dropped."""
        dropped = len(self._buf)
        self.discarded_bytes += dropped
        self._buf.clear()
        self._scanned = 0
        self._discarding = False
        return dropped

    def feed(self, data: bytes) -> list[bytes]:
        """The lines completed by ``data`` (possibly none)."""
        self.bytes_in += len(data)
        self._buf += data
        out: list[bytes] = []
        term = self.terminator
        while True:
            i = self._buf.find(term, self._scanned)
            if i < 0:
                self._scanned = max(0, len(self._buf) - len(term) + 1)
                self._bound()
                return out
            line = bytes(self._buf[:i])
            del self._buf[: i + len(term)]
            self._scanned = 0
            if self._discarding:
                self._discarding = False
                self.discarded_bytes += i + len(term)
                continue
            if self._strip_cr and line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                self.oversize += 1
                self.discarded_bytes += i + len(term)
                continue
            if line:
                self.lines += 1
                out.append(line)

    def _bound(self) -> None:
        """Drop the head of a line that can no longer fit in ``max_line``."""
        if not self._discarding and len(self._buf) <= self._limit:
            return
        if not self._discarding:
            self._discarding = True
            self.oversize += 1
        keep = len(self.terminator) - 1  # could be the start of the terminator
        drop = len(self._buf) - keep
        self.discarded_bytes += drop
        del self._buf[:drop]
        self._scanned = 0


LENGTH_COUNTS = ("payload", "rest", "frame")


@dataclass(frozen=True)
class LengthField:
    """Where a frame says how long it is.

    ``at`` is the field's byte offset from the first start byte, ``size`` its
    width (1, 2 or 4 bytes), ``endian`` ``"big"`` or ``"little"``. ``counts``
    says what the value measures: ``"payload"`` the bytes between the length
    field and the checksum, ``"rest"`` every byte after the length field
    (checksum and end bytes included), ``"frame"`` the whole frame. ``adjust``
    is added to the value first (for devices that count themselves oddly).
    """

    at: int
    size: int = 1
    endian: str = "big"
    counts: str = "payload"
    adjust: int = 0


@dataclass(frozen=True)
class ChecksumSpec:
    """A frame's checksum: the bytes just before the end bytes (or last in the frame).

    It covers the frame from byte ``start`` (0 = the first start byte) up to the
    checksum itself. ``order`` is the byte order of a two-byte checksum on the wire
    (None: the kind's usual order, low byte first for ``crc16-modbus``).
    """

    kind: str
    start: int = 0
    order: str | None = None

    @property
    def size(self) -> int:
        return KINDS[self.kind].size


@dataclass(frozen=True)
class FrameSpec:
    """How a device frames binary messages: start bytes, a fixed size or a length
    field, an optional checksum and optional end bytes."""

    start: bytes = b""
    size: int | None = None  # fixed frame size in bytes (everything included)
    length: LengthField | None = None
    checksum: ChecksumSpec | None = None
    end: bytes = b""
    max_frame: int = 256

    @property
    def min_size(self) -> int:
        """The smallest frame this spec can describe."""
        header = len(self.start)
        if self.length is not None:
            header = max(header, self.length.at + self.length.size)
        if self.checksum is not None:
            header = max(header, self.checksum.start)
        return header + (self.checksum.size if self.checksum else 0) + len(self.end)

    def problems(self) -> list[str]:
        """What makes this spec unusable (empty when it is fine)."""
        found: list[str] = []
        if (self.size is None) == (self.length is None):
            found.append("expected exactly one of size or length")
        if not self.start and self.checksum is None:
            found.append("a frame without start bytes needs a checksum to find its boundaries")
        if self.size is not None and self.size < self.min_size:
            found.append(f"size {self.size} is smaller than the {self.min_size} bytes that the "
                         "start bytes, checksum and end bytes take")
        if self.size is not None and self.size > self.max_frame:
            found.append(f"size {self.size} is larger than max_frame {self.max_frame}")
        return found


class FrameFramer:
    """Finds frames described by a :class:`FrameSpec` in a byte stream.

    Bytes before a start sequence are discarded. A candidate frame whose length
    is out of range, whose end bytes differ or whose checksum fails is counted
    (``length_errors``, ``end_errors``, ``checksum_errors``), and the search
    starts again one byte after its start, so a real frame hidden inside a
    corrupt one is still found. Never holds more than ``max_frame`` bytes.
    """

    def __init__(self, spec: FrameSpec) -> None:
        wrong = spec.problems()
        if wrong:
            raise ValueError("; ".join(wrong))
        self.spec = spec
        self._checksum = KINDS[spec.checksum.kind] if spec.checksum else None
        self._min = spec.min_size
        self._buf = bytearray()
        self.bytes_in = 0
        self.frames = 0
        self.discarded_bytes = 0
        self.length_errors = 0
        self.end_errors = 0
        self.checksum_errors = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def reset(self) -> int:
        """Forget any unfinished frame; returns how many bytes were dropped."""
        dropped = len(self._buf)
        self.discarded_bytes += dropped
        self._buf.clear()
        return dropped

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data`` (possibly none)."""
        self.bytes_in += len(data)
        self._buf += data
        out: list[bytes] = []
        while self._sync():
            total = self._frame_size()
            if total is None:
                break
            if total < self._min or total > self.spec.max_frame:
                self.length_errors += 1
                self._skip(1)
                continue
            if len(self._buf) < total:
                break
            frame = bytes(self._buf[:total])
            if self.spec.end and not frame.endswith(self.spec.end):
                self.end_errors += 1
                self._skip(1)
                continue
            if not self._checksum_ok(frame):
                self.checksum_errors += 1
                self._skip(1)
                continue
            del self._buf[:total]
            self.frames += 1
            out.append(frame)
        return out

    def _skip(self, n: int) -> None:
        self.discarded_bytes += n
        del self._buf[:n]

    def _sync(self) -> bool:
        """Drop bytes up to the next start sequence; True when one heads the buffer."""
        start = self.spec.start
        if not start:
            return bool(self._buf)
        i = self._buf.find(start)
        if i < 0:
            self._skip(max(0, len(self._buf) - (len(start) - 1)))
            return False
        if i:
            self._skip(i)
        return True

    def _frame_size(self) -> int | None:
        """The size of the frame heading the buffer; None until the header is in."""
        spec = self.spec
        lf = spec.length
        if lf is None:
            assert spec.size is not None
            return spec.size
        header = lf.at + lf.size
        if len(self._buf) < header:
            return None
        value = int.from_bytes(self._buf[lf.at:header], "little" if lf.endian == "little"
                               else "big") + lf.adjust
        if lf.counts == "frame":
            return value
        if lf.counts == "rest":
            return header + value
        trailer = (self._checksum.size if self._checksum else 0) + len(spec.end)
        return header + value + trailer

    def _checksum_ok(self, frame: bytes) -> bool:
        cs = self.spec.checksum
        if cs is None or self._checksum is None:
            return True
        end = len(frame) - len(self.spec.end)
        at = end - self._checksum.size
        if at < cs.start:
            return False
        little = (cs.order or self._checksum.default_order) == "little"
        sent = int.from_bytes(frame[at:end], "little" if little else "big")
        return sent == self._checksum.compute(frame[cs.start:at])
